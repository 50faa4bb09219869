from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("quantweb.api_urls")),
    path("strategy/backtests/", include("strategies.urls_backtests")),
    path("strategy/models/", include("strategies.urls_learning")),
    path("", include("traders.urls")),
]
