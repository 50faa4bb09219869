"""REST API [issue 7]. Reads are open to any logged-in user; changes go through the same
services as the pages (intents for trader actions [RT-1]); credentials are staff-only."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from execution.models import Fill, Order, Position
from regime.models import MarketRegime
from strategies.models import Signal, StrategyProfile
from traders import audit, services
from traders.api import serializers as s
from traders.forms import AuditExportForm
from traders.models import Credential, Event, IntentKind, Trader


def _call(fn, **kwargs):
    """Run a service; map its errors to 400/403 with messages."""
    try:
        return fn(**kwargs)
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from None
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}) from None


class TraderFilterMixin:
    def filter_trader(self, qs):
        trader = self.request.query_params.get("trader")
        if trader:
            if not trader.isdigit():
                raise ValidationError({"trader": "must be a trader id"})
            qs = qs.filter(trader_id=int(trader))
        return qs


class TraderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = s.TraderSerializer

    def get_queryset(self):
        qs = Trader.objects.active().select_related("profile", "config_version").order_by("id")
        mode = self.request.query_params.get("mode")
        if mode:
            qs = qs.filter(mode=mode.upper())
        return qs

    @extend_schema(request=s.TraderCreateSerializer, responses={201: s.TraderSerializer})
    def create(self, request):
        body = s.TraderCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        trader = _call(services.create_trader, user=request.user, **body.validated_data)
        return Response(s.TraderSerializer(trader).data, status=status.HTTP_201_CREATED)

    def _intent(self, request, pk, kind, payload=None):
        trader = self.get_object()
        intent = _call(services.request_intent, user=request.user, kind=kind, trader=trader, payload=payload or {})
        return Response({"intent": intent.pk, "kind": kind, "status": intent.status}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: dict})
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        return self._intent(request, pk, IntentKind.START)

    @extend_schema(request=None, responses={202: dict})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._intent(request, pk, IntentKind.STOP)

    @extend_schema(request=None, responses={202: dict})
    @action(detail=True, methods=["post"])
    def remove(self, request, pk=None):
        return self._intent(request, pk, IntentKind.REMOVE)

    @extend_schema(request=s.ModeSerializer, responses={202: dict})
    @action(detail=True, methods=["post"])
    def mode(self, request, pk=None):
        body = s.ModeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return self._intent(request, pk, IntentKind.SET_MODE, {"mode": body.validated_data["mode"]})


class EventViewSet(TraderFilterMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.EventSerializer

    def get_queryset(self):
        return self.filter_trader(Event.objects.order_by("-id"))


class OrderViewSet(TraderFilterMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.OrderSerializer

    def get_queryset(self):
        return self.filter_trader(Order.objects.order_by("-id"))


class FillViewSet(TraderFilterMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.FillSerializer

    def get_queryset(self):
        return self.filter_trader(Fill.objects.order_by("-id"))


class PositionViewSet(TraderFilterMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.PositionSerializer

    def get_queryset(self):
        qs = self.filter_trader(Position.objects.order_by("-id"))
        state = self.request.query_params.get("status")
        return qs.filter(status=state) if state else qs


class SignalViewSet(TraderFilterMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = s.SignalSerializer

    def get_queryset(self):
        return self.filter_trader(Signal.objects.order_by("-id"))


class RegimeViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.RegimeSerializer
    queryset = MarketRegime.objects.order_by("-bar_ts")


class ProfileViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = s.ProfileSerializer
    queryset = StrategyProfile.objects.select_related("current_version").order_by("id")


class IsStaff(permissions.BasePermission):
    message = "Only staff may manage credentials."

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_staff)


class CredentialViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                        mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = s.CredentialSerializer
    permission_classes = [permissions.IsAuthenticated, IsStaff]
    queryset = Credential.objects.order_by("id")

    def perform_create(self, serializer):
        credential = serializer.save(created_by=self.request.user)
        audit.record("CREDENTIAL_ADDED", actor=self.request.user, obj=credential,
                     payload={"exchange": credential.exchange, "label": credential.label, "key": credential.masked_key, "via": "api"})

    def perform_destroy(self, instance):
        if instance.traders.filter(removed_at__isnull=True).exists():
            raise ValidationError({"detail": "The credential is used by a trader; remove the trader first."})
        audit.record("CREDENTIAL_DELETED", actor=self.request.user, obj=instance,
                     payload={"exchange": instance.exchange, "label": instance.label, "key": instance.masked_key, "via": "api"})
        instance.delete()


class AuditExportView(APIView):
    """GET ?format=csv|jsonl&since=&until=&trader=&kind= streams the audit log."""

    @extend_schema(responses={200: str})
    def get(self, request):
        form = AuditExportForm(request.query_params)
        if not form.is_valid():
            raise ValidationError(form.errors)
        data = form.cleaned_data
        rows = audit.filtered(since=data["since"], until=data["until"], trader_id=data["trader"], kind=data["kind"] or None)
        audit.record("AUDIT_EXPORTED", actor=request.user, payload={**{k: v for k, v in data.items() if v}, "via": "api"})
        fmt = data["format"]
        response = StreamingHttpResponse(audit.export(rows.iterator(chunk_size=2000), fmt),
                                         content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
        response["Content-Disposition"] = f'attachment; filename="quantweb-audit.{fmt}"'
        return response
