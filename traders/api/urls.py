from django.urls import path, re_path
from rest_framework.routers import DefaultRouter

from execution.api import DataQualityViewSet
from traders.api import views

router = DefaultRouter()
router.include_format_suffixes = False  # JSON only; ?format= belongs to the audit export
router.register("traders", views.TraderViewSet, basename="api-trader")
router.register("events", views.EventViewSet, basename="api-event")
router.register("orders", views.OrderViewSet, basename="api-order")
router.register("fills", views.FillViewSet, basename="api-fill")
router.register("positions", views.PositionViewSet, basename="api-position")
router.register("signals", views.SignalViewSet, basename="api-signal")
router.register("regimes", views.RegimeViewSet, basename="api-regime")
router.register("profiles", views.ProfileViewSet, basename="api-profile")
router.register("credentials", views.CredentialViewSet, basename="api-credential")
router.register("data-quality", DataQualityViewSet, basename="api-data-quality")

urlpatterns = [
    path("audit/export/", views.AuditExportView.as_view(), name="api-audit-export"),
    path("kill-switch/", views.KillSwitchView.as_view(), name="api-kill-switch"),
    path("metrics/", views.MetricsView.as_view(), name="api-metrics"),
    *router.urls,
    # Last of every /api/ route (quantweb/api_urls.py includes this module last): anything else
    # under /api/ is a JSON 404.
    re_path(r"^[\s\S]*$", views.NotFoundView.as_view(), name="api-not-found"),
]
