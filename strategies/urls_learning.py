"""Pages under STRATEGY for learning (included from quantweb/urls.py)."""

urlpatterns: list = []
