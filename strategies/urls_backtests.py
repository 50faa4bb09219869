"""Pages under STRATEGY for backtests (included from quantweb/urls.py)."""

urlpatterns: list = []
