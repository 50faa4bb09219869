from django.contrib import admin
from django.urls import include, path

from traders.token_views import TokenRevokeView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/token/", TokenRevokeView.as_view(), name="api-token-revoke"),
    path("api/", include("quantweb.api_urls")),
    path("strategy/backtests/", include("strategies.urls_backtests")),
    path("strategy/models/", include("strategies.urls_learning")),
    path("strategy/regime/", include("regime.urls")),
    path("", include("traders.urls")),
]
