"""REST routes for backtests (included from quantweb/api_urls.py)."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from strategies import api_backtests

router = DefaultRouter()
router.include_format_suffixes = False
router.include_root_view = False
router.register("backtests", api_backtests.BacktestRunViewSet, basename="api-backtest")

urlpatterns = [
    path("backtests/<int:pk>/trades.csv", api_backtests.BacktestTradesCsvView.as_view(), name="api-backtest-trades-csv"),
    *router.urls,
]
