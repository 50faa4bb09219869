"""Query-parameter filters and pagination of the REST API's list endpoints [issue 7 #6].

Each list endpoint declares a ``QueryFilter`` (a DRF serializer over the query string). The
parameters are validated like a request body: a bad value, an unknown parameter or a repeated
one is a 400 with a message per parameter, never a 500 and never silently ignored. The same
serializer documents the parameters in the OpenAPI schema (``traders.api.schema.AutoSchema``).

Times: ``since`` (inclusive) and ``until`` (exclusive) are ISO 8601 date-times (UTC when no
offset is given). They apply to the column that dates the row: ``ts`` for events,
``created_at`` for orders, the fill's ``ts``, the position's ``opened_ts``, the signal's and the
regime's ``bar_ts`` (epoch seconds of the bar open).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

from execution.models import Order, Position
from regime.engine.types import RegimeLabel
from strategies.models import ProfileKey, Signal
from traders.models import EventLevel, Exchange, TraderMode, TraderStatus

MAX_ID = 2**63 - 1                      # BigAutoField range: larger ids cannot exist
MAX_OFFSET = 2**31 - 1
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,31}$"
CODE_PATTERN = r"^[A-Za-z0-9_]{1,40}$"


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` (1..500, default PAGE_SIZE) and ``?offset=`` (>= 0); a bad value is a 400,
    where DRF's own paginator would silently fall back to the defaults."""

    max_limit = 500

    def _int(self, request, name: str, low: int, high: int, default: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValidationError({name: [f"must be an integer from {low} to {high}"]}) from None
        if not low <= value <= high:
            raise ValidationError({name: [f"must be from {low} to {high}"]})
        return value

    def get_limit(self, request) -> int:
        return self._int(request, self.limit_query_param, 1, self.max_limit, self.default_limit)

    def get_offset(self, request) -> int:
        return self._int(request, self.offset_query_param, 0, MAX_OFFSET, 0)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        params = super().get_schema_operation_parameters(view)
        bounds = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, MAX_OFFSET)}
        for param in params:
            low, high = bounds[param["name"]]
            param["schema"] = {**param["schema"], "minimum": low, "maximum": high}
        return params

    @property
    def query_params(self) -> set[str]:
        return {self.limit_query_param, self.offset_query_param}


class QueryFilter(serializers.Serializer):
    """Validated query parameters of one list endpoint; ``apply`` narrows the queryset."""

    def validate(self, attrs: dict) -> dict:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:
            raise serializers.ValidationError({"until": ["must be after 'since'"]})
        return attrs

    def apply(self, qs: QuerySet, data: dict) -> QuerySet:
        raise NotImplementedError


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def _trader_field() -> serializers.IntegerField:
    return serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="trader id")


def _since() -> serializers.DateTimeField:
    return serializers.DateTimeField(required=False, help_text="rows at or after this time (ISO 8601, UTC if naive)")


def _until() -> serializers.DateTimeField:
    return serializers.DateTimeField(required=False, help_text="rows before this time (ISO 8601, UTC if naive)")


def _symbol() -> serializers.RegexField:
    return serializers.RegexField(SYMBOL_PATTERN, required=False, max_length=32,
                                  help_text="market symbol, exact (e.g. KRW-BTC, BTC/USDT)")


def _exact(qs: QuerySet, data: dict, mapping: dict[str, str]) -> QuerySet:
    lookups = {column: data[name] for name, column in mapping.items() if name in data}
    return qs.filter(**lookups) if lookups else qs


def _window(qs: QuerySet, data: dict, column: str, *, epoch: bool) -> QuerySet:
    if "since" in data:
        qs = qs.filter(**{f"{column}__gte": _epoch(data["since"]) if epoch else data["since"]})
    if "until" in data:
        qs = qs.filter(**{f"{column}__lt": _epoch(data["until"]) if epoch else data["until"]})
    return qs


class TraderFilter(QueryFilter):
    mode = serializers.ChoiceField(choices=TraderMode.choices, required=False)
    status = serializers.ChoiceField(choices=TraderStatus.choices, required=False)
    profile = serializers.ChoiceField(choices=ProfileKey.choices, required=False, help_text="strategy profile key")
    exchange = serializers.ChoiceField(choices=Exchange.choices, required=False)
    armed = serializers.BooleanField(required=False)

    def apply(self, qs, data):
        return _exact(qs, data, {"mode": "mode", "status": "status", "profile": "profile__key",
                                 "exchange": "exchange", "armed": "armed"})


class EventFilter(QueryFilter):
    trader = _trader_field()
    level = serializers.ChoiceField(choices=EventLevel.choices, required=False)
    kind = serializers.RegexField(CODE_PATTERN, required=False, help_text="reason code, e.g. GUARD_TRIP")
    after = serializers.IntegerField(required=False, min_value=0, max_value=MAX_ID,
                                     help_text="only events with a larger id (polling)")
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"trader": "trader_id", "level": "level", "kind": "kind"})
        if "after" in data:
            qs = qs.filter(id__gt=data["after"])
        return _window(qs, data, "ts", epoch=False)


class OrderFilter(QueryFilter):
    trader = _trader_field()
    symbol = _symbol()
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)
    side = serializers.ChoiceField(choices=[("buy", "buy"), ("sell", "sell")], required=False)
    purpose = serializers.ChoiceField(
        choices=[(p, p) for p in ("entry", "exit", "stop", "take_profit", "liquidate")], required=False)
    mode = serializers.ChoiceField(choices=TraderMode.choices, required=False)
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"trader": "trader_id", "symbol": "symbol", "status": "status", "side": "side",
                               "purpose": "purpose", "mode": "mode"})
        return _window(qs, data, "created_at", epoch=False)


class FillFilter(QueryFilter):
    trader = _trader_field()
    order = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="order id")
    symbol = _symbol()
    side = serializers.ChoiceField(choices=[("buy", "buy"), ("sell", "sell")], required=False)
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"trader": "trader_id", "order": "order_id", "symbol": "symbol", "side": "side"})
        return _window(qs, data, "ts", epoch=True)


class PositionFilter(QueryFilter):
    trader = _trader_field()
    symbol = _symbol()
    status = serializers.ChoiceField(choices=Position.Status.choices, required=False)
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"trader": "trader_id", "symbol": "symbol", "status": "status"})
        return _window(qs, data, "opened_ts", epoch=True)


class SignalFilter(QueryFilter):
    trader = _trader_field()
    symbol = _symbol()
    action = serializers.ChoiceField(choices=Signal.Action.choices, required=False)
    regime = serializers.ChoiceField(choices=[(x.value, x.value) for x in RegimeLabel], required=False)
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"trader": "trader_id", "symbol": "symbol", "action": "action", "regime": "regime"})
        return _window(qs, data, "bar_ts", epoch=True)


class RegimeFilter(QueryFilter):
    exchange = serializers.ChoiceField(choices=Exchange.choices, required=False)
    label = serializers.ChoiceField(choices=[(x.value, x.value) for x in RegimeLabel], required=False)
    since = _since()
    until = _until()

    def apply(self, qs, data):
        qs = _exact(qs, data, {"exchange": "exchange", "label": "label"})
        return _window(qs, data, "bar_ts", epoch=True)


class ProfileFilter(QueryFilter):
    key = serializers.ChoiceField(choices=ProfileKey.choices, required=False)

    def apply(self, qs, data):
        return _exact(qs, data, {"key": "key"})


class CredentialFilter(QueryFilter):
    exchange = serializers.ChoiceField(choices=Exchange.choices, required=False)

    def apply(self, qs, data):
        return _exact(qs, data, {"exchange": "exchange"})


class AuditExportQuery(QueryFilter):
    format = serializers.ChoiceField(choices=[("csv", "CSV"), ("jsonl", "JSON Lines")])
    trader = _trader_field()
    kind = serializers.RegexField(CODE_PATTERN, required=False, help_text="audit kind, e.g. INTENT_START")
    since = _since()
    until = _until()


def validate_query(request, filter_class: type[QueryFilter], extra: set[str] = frozenset()) -> dict:
    """The query string checked against ``filter_class``: unknown or repeated parameters and
    bad values are a 400 naming each parameter. Returns the validated values."""
    query = request.query_params
    fields = set(filter_class().fields)
    allowed = fields | set(extra)
    errors: dict[str, list[str]] = {}
    for name in sorted(set(query)):
        if name not in allowed:
            errors[name] = [f"unknown query parameter; this endpoint takes {', '.join(sorted(allowed))}"]
        elif len(query.getlist(name)) > 1:
            errors[name] = ["give this parameter once"]
    if errors:
        raise ValidationError(errors)
    flt = filter_class(data={name: query[name] for name in fields if name in query})
    flt.is_valid(raise_exception=True)
    return flt.validated_data


class FilteredListMixin:
    """Validates and applies ``filter_class`` on the list action (see the module docstring)."""

    filter_class: type[QueryFilter] | None = None

    def filter_queryset(self, queryset):
        queryset = super().filter_queryset(queryset)
        if getattr(self, "action", None) != "list" or self.filter_class is None:
            return queryset
        paginator = getattr(self, "paginator", None)
        extra = paginator.query_params if isinstance(paginator, StrictLimitOffsetPagination) else set()
        data = validate_query(self.request, self.filter_class, extra)
        return self.filter_class().apply(queryset, data)
