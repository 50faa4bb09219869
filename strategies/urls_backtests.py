"""Pages under STRATEGY for backtests (included from quantweb/urls.py at /strategy/backtests/)."""

from django.urls import path

from strategies import views_backtests

urlpatterns = [
    path("", views_backtests.backtest_list, name="backtests"),
    path("<int:pk>/", views_backtests.backtest_detail, name="backtest-detail"),
]
