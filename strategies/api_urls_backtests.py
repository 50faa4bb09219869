"""REST routes for backtests (included from quantweb/api_urls.py)."""

urlpatterns: list = []
