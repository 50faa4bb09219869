"""Regime pages under STRATEGY (included from quantweb/urls.py at /strategy/regime/)."""

from django.urls import path

from regime import views

urlpatterns = [
    path("thresholds/", views.thresholds_update, name="regime-thresholds"),
]
