from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    # OpenAPI 3 schema (YAML; ?format=json is not used: request JSON with Accept: application/json).
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("", include("strategies.api_urls_backtests")),
    path("", include("strategies.api_urls_learning")),
    path("", include("traders.api.urls")),
]
