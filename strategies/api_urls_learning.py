"""REST routes for learning (included from quantweb/api_urls.py)."""

urlpatterns: list = []
