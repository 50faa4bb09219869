"""REST API [issue 7 #6, issue 21 #4]. Reads need a login and are scoped to the user's own
traders (staff: every trader; ``traders.permissions``); changes go through the same services as
the pages (intents for trader actions [RT-1]) and the same rules: viewers read, operators create
traders and act on their own, staff alone move LIVE money (liquidate LIVE, start an armed LIVE
trader, arm, PAPER <-> LIVE), manage credentials, reset guard trips and use the kill switches.
Another user's trader or row is a 404. Every list endpoint takes validated filters
(``traders.api.filters``)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from execution.models import Fill, Order, Position
from regime.models import MarketRegime
from risk.models import KillSwitch
from strategies.models import Signal, StrategyProfile
from traders import audit, services
from traders import permissions as perms
from traders.api import filters as f
from traders.api import serializers as s
from traders.api.schema import AutoSchema
from traders.models import Credential, Event, IntentKind, Trader


def _call(fn, **kwargs):
    """Run a service; map its errors to 400/403 with messages."""
    try:
        return fn(**kwargs)
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from None
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}) from None


class CanOperate(permissions.BasePermission):
    """Writes need an operator (staff or ``traders.change_trader``); reads need a login."""

    message = "You may view traders but not change them (operators and staff only)."

    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or services.can_operate(request.user)


class IsStaffForWrites(permissions.BasePermission):
    message = "Only staff may do this."

    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or services.can_manage_live(request.user)


class IsStaff(permissions.BasePermission):
    message = "Only staff may manage credentials."

    def has_permission(self, request, view) -> bool:
        return services.can_manage_live(request.user)


class ApiViewSet(f.FilteredListMixin, viewsets.GenericViewSet):
    schema = AutoSchema()
    pagination_class = f.StrictLimitOffsetPagination
    # Any path segment reaches the view, so a malformed id is this API's JSON 404, not Django's
    # HTML page (ids are integers: a non-integer finds nothing).
    lookup_value_regex = r"[^/]+"


INTENT_ACCEPTED = {202: s.IntentAcceptedSerializer}


class TraderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Traders (removed ones excluded). Actions record intents; a worker applies them [RT-1]."""

    serializer_class = s.TraderSerializer
    filter_class = f.TraderFilter
    permission_classes = [permissions.IsAuthenticated, CanOperate]

    def get_queryset(self):
        # Non-staff see their own traders only; someone else's is a 404 [issue 21 #4].
        return perms.traders_for(self.request.user, Trader.objects.active()).select_related(
            "profile", "config_version", "safety").order_by("id")

    @extend_schema(request=s.TraderCreateSerializer, responses={201: s.TraderSerializer})
    def create(self, request):
        body = s.TraderCreateSerializer(data=request.data)
        body.fields["credential"].queryset = perms.credentials_for(request.user)   # own ones only
        body.is_valid(raise_exception=True)
        trader = _call(services.create_trader, user=request.user, **body.validated_data)
        trader = self.get_queryset().get(pk=trader.pk)
        return Response(s.TraderSerializer(trader).data, status=status.HTTP_201_CREATED)

    def _intent(self, request, kind, payload=None):
        trader = self.get_object()
        intent = _call(services.request_intent, user=request.user, kind=kind, trader=trader, payload=payload or {})
        return Response(s.IntentAcceptedSerializer(intent).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        return self._intent(request, IntentKind.START)

    @extend_schema(request=None, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._intent(request, IntentKind.STOP)

    @extend_schema(request=None, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def remove(self, request, pk=None):
        return self._intent(request, IntentKind.REMOVE)

    @extend_schema(request=None, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def liquidate(self, request, pk=None):
        return self._intent(request, IntentKind.LIQUIDATE)

    @extend_schema(request=s.ModeSerializer, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def mode(self, request, pk=None):
        body = s.ModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._intent(request, IntentKind.SET_MODE, {"mode": body.validated_data["mode"]})

    @extend_schema(request=None, responses=INTENT_ACCEPTED, description="Staff only; LIVE traders past paper protection.")
    @action(detail=True, methods=["post"], permission_classes=[permissions.IsAuthenticated, IsStaffForWrites])
    def arm(self, request, pk=None):
        return self._intent(request, IntentKind.ARM)

    @extend_schema(request=None, responses=INTENT_ACCEPTED)
    @action(detail=True, methods=["post"])
    def disarm(self, request, pk=None):
        return self._intent(request, IntentKind.DISARM)

    @extend_schema(request=s.GuardResetSerializer, responses={200: s.GuardSerializer},
                   description="Staff only: clear guard trips that need a manual reset (MAX_DRAWDOWN; "
                               "CONSECUTIVE_LOSSES acknowledges the run). A reason is required and audited.")
    @action(detail=True, methods=["post"], url_path="reset-guard",
            permission_classes=[permissions.IsAuthenticated, IsStaffForWrites])
    def reset_guard(self, request, pk=None):
        trader = self.get_object()
        body = s.GuardResetSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _call(services.reset_guard, user=request.user, trader=trader, reason=body.validated_data["reason"],
              codes=body.validated_data.get("codes"))
        return Response(s.GuardSerializer(services.guard_state(self.get_queryset().get(pk=trader.pk))).data)

    @extend_schema(responses={200: s.GuardSerializer})
    @action(detail=True, methods=["get"])
    def guard(self, request, pk=None):
        return Response(s.GuardSerializer(services.guard_state(self.get_object())).data)


class OwnedRowsMixin:
    """Rows of a trader: non-staff get their own traders' rows only [issue 21 #4]."""

    def get_queryset(self):
        return perms.scope_by_trader(super().get_queryset(), self.request.user)


class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """The action log: non-staff see their traders' rows and platform-wide rows (no trader)."""

    serializer_class = s.EventSerializer
    filter_class = f.EventFilter
    queryset = Event.objects.order_by("-id")

    def get_queryset(self):
        return perms.scope_events(super().get_queryset(), self.request.user)


class OrderViewSet(OwnedRowsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.OrderSerializer
    filter_class = f.OrderFilter
    queryset = Order.objects.order_by("-id")


class FillViewSet(OwnedRowsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.FillSerializer
    filter_class = f.FillFilter
    queryset = Fill.objects.order_by("-id")


class PositionViewSet(OwnedRowsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.PositionSerializer
    filter_class = f.PositionFilter
    queryset = Position.objects.order_by("-id")


class SignalViewSet(OwnedRowsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.SignalSerializer
    filter_class = f.SignalFilter
    queryset = Signal.objects.order_by("-id")


class RegimeViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.RegimeSerializer
    filter_class = f.RegimeFilter
    queryset = MarketRegime.objects.order_by("-bar_ts", "-id")


class ProfileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    serializer_class = s.ProfileSerializer
    filter_class = f.ProfileFilter
    queryset = StrategyProfile.objects.select_related("current_version").order_by("id")


class CredentialViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.DestroyModelMixin, ApiViewSet):
    serializer_class = s.CredentialSerializer
    filter_class = f.CredentialFilter
    permission_classes = [permissions.IsAuthenticated, IsStaff]
    queryset = Credential.objects.order_by("id")

    def get_queryset(self):
        return perms.credentials_for(self.request.user, super().get_queryset())

    def perform_create(self, serializer):
        credential = serializer.save(created_by=self.request.user, owner=self.request.user)
        audit.record("CREDENTIAL_ADDED", actor=self.request.user, obj=credential,
                     payload={"exchange": credential.exchange, "label": credential.label, "key": credential.masked_key, "via": "api"})

    def perform_destroy(self, instance):
        if instance.traders.filter(removed_at__isnull=True).exists():
            raise ValidationError({"detail": "The credential is used by a trader; remove the trader first."})
        audit.record("CREDENTIAL_DELETED", actor=self.request.user, obj=instance,
                     payload={"exchange": instance.exchange, "label": instance.label, "key": instance.masked_key, "via": "api"})
        instance.delete()


class KillSwitchView(APIView):
    """GET: the master kill switch's state. POST (staff): engage, release, or emergency stop
    (engage and liquidate every running trader), recorded as an intent for the worker."""

    schema = AutoSchema()
    permission_classes = [permissions.IsAuthenticated, IsStaffForWrites]
    KINDS = {"engage": IntentKind.KILL_ALL, "release": IntentKind.RELEASE_KILL, "emergency": IntentKind.EMERGENCY_STOP}

    @extend_schema(responses={200: s.KillSwitchSerializer})
    def get(self, request):
        switch = KillSwitch.objects.select_related("changed_by").filter(pk=1).first() or KillSwitch(pk=1)
        return Response(s.KillSwitchSerializer(switch).data)

    @extend_schema(request=s.KillSwitchActionSerializer, responses=INTENT_ACCEPTED)
    def post(self, request):
        body = s.KillSwitchActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        intent = _call(services.request_intent, user=request.user, kind=self.KINDS[body.validated_data["action"]],
                       trader=None, payload={"reason": body.validated_data["reason"]})
        return Response(s.IntentAcceptedSerializer(intent).data, status=status.HTTP_202_ACCEPTED)


class MetricsView(APIView):
    """The dashboard's key metrics (the DASHBOARD refreshes them from here without a reload)."""

    schema = AutoSchema()

    @extend_schema(responses={200: s.DashboardMetricsSerializer})
    def get(self, request):
        from traders.metrics import dashboard_metrics

        mine = perms.traders_for(request.user, Trader.objects.active())
        return Response(s.DashboardMetricsSerializer(dashboard_metrics(traders=mine)).data)


class NotFoundView(APIView):
    """Every other path under /api/: a JSON 404 (after the login check), not an HTML page."""

    schema = None

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise NotFound(f"No API endpoint at {request.path}; see /api/schema/.")


class AuditExportView(APIView):
    """GET ?format=csv|jsonl&since=&until=&trader=&kind= streams the audit log."""

    schema = AutoSchema()

    @extend_schema(
        parameters=[f.AuditExportQuery],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, one row per audit entry"),
                   (200, "application/x-ndjson"): OpenApiResponse(OpenApiTypes.STR, description="JSON Lines")},
    )
    def get(self, request):
        data = f.validate_query(request, f.AuditExportQuery)
        rows = audit.filtered(since=data.get("since"), until=data.get("until"), trader_id=data.get("trader"),
                              kind=data.get("kind"))
        if not perms.is_staff(request.user):
            # Non-staff export their own traders' rows only (no platform rows) [issue 21 #4].
            mine = perms.traders_for(request.user)
            if data.get("trader") and not mine.filter(pk=data["trader"]).exists():
                raise NotFound("No such trader.")
            rows = rows.filter(trader_id__in=mine.values("id"))
        audit.record("AUDIT_EXPORTED", actor=request.user, payload={**data, "via": "api"})
        fmt = data["format"]
        response = StreamingHttpResponse(audit.export(rows.iterator(chunk_size=2000), fmt),
                                         content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="quantweb-audit.{fmt}"'
        return response
