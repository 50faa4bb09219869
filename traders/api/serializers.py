from __future__ import annotations

import re
from decimal import Decimal

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from execution.models import Fill, Order, Position
from regime.models import MarketRegime
from strategies.models import Signal, StrategyProfile
from traders.models import Credential, Event, IntentKind, IntentStatus, Trader, TraderMode
from traders.services import MAX_SEED_MONEY

# Printable text: no control characters, not only blanks (the services strip and refuse those).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
MONEY_PATTERN = r"^\d{1,26}(\.\d{1,2})?$"


# DRF's text and boolean fields coerce what they are given (42 -> "42", "yes" -> True); the
# schema promises JSON strings and booleans, so request bodies get them exactly.

class StrictRegexField(serializers.RegexField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"not_a_boolean": "Must be true or false (a JSON boolean)."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("not_a_boolean")
        return data


@extend_schema_field({"type": "string", "pattern": r"^[a-z0-9_]{0,32}$"})
class CcxtIdField(serializers.Field):
    """A ccxt exchange id, or blank for other venues (one pattern covers both)."""

    default_error_messages = {"invalid": "Lower-case letters, digits and _ only, at most 32."}

    def to_internal_value(self, data):
        if not isinstance(data, str) or not re.fullmatch(r"[a-z0-9_]{0,32}", data):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value or ""


@extend_schema_field({"oneOf": [
    {"type": "number", "minimum": 5000, "maximum": float(MAX_SEED_MONEY)},
    {"type": "string", "pattern": MONEY_PATTERN},
], "description": "quote currency (KRW), 5,000 to 100,000,000,000; a string keeps every digit"})
class MoneyInputField(serializers.DecimalField):
    """Seed money as a JSON number or a decimal string; never a boolean."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TraderSerializer(serializers.ModelSerializer):
    profile = serializers.SlugRelatedField(slug_field="key", read_only=True)
    config_version = serializers.IntegerField(source="config_version.version", read_only=True)
    return_pct = serializers.FloatField(read_only=True)
    trading_state = serializers.SerializerMethodField(help_text="runtime guard: ACTIVE, HALTED or REDUCING")
    guard_trips = serializers.SerializerMethodField(help_text="active guard trip codes")

    class Meta:
        model = Trader
        fields = ["id", "name", "profile", "config_version", "seed_money", "exchange", "credential", "mode", "status",
                  "status_reason", "armed", "cash", "realised_pnl", "fees_paid", "equity", "return_pct",
                  "trading_state", "guard_trips", "last_tick_ts", "created_at", "removed_at"]
        read_only_fields = fields

    @staticmethod
    def _safety(trader):
        try:
            return trader.safety
        except ObjectDoesNotExist:
            return None

    def get_trading_state(self, trader) -> str:
        safety = self._safety(trader)
        return safety.trading_state if safety else "ACTIVE"

    def get_guard_trips(self, trader) -> list[str]:
        safety = self._safety(trader)
        return [str(t.get("code", "")) for t in (safety.trips if safety else []) if isinstance(t, dict)]


class TraderCreateSerializer(serializers.Serializer):
    name = StrictRegexField(TEXT_PATTERN, max_length=80)
    profile = serializers.SlugRelatedField(slug_field="key", queryset=StrategyProfile.objects.all())
    seed_money = MoneyInputField(max_digits=28, decimal_places=2, min_value=Decimal("5000"), max_value=MAX_SEED_MONEY)
    credential = serializers.PrimaryKeyRelatedField(queryset=Credential.objects.all(), required=False, allow_null=True)


class ModeSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=TraderMode.choices)


class IntentAcceptedSerializer(serializers.Serializer):
    """An intent recorded for the worker (202): poll the events, or the trader, for its effect."""

    intent = serializers.IntegerField(source="pk")
    kind = serializers.ChoiceField(choices=IntentKind.choices)
    status = serializers.ChoiceField(choices=IntentStatus.choices)
    trader = serializers.IntegerField(source="trader_id", allow_null=True)


class GuardTripSerializer(serializers.Serializer):
    code = serializers.CharField()
    severity = serializers.CharField(help_text="HALT, REDUCE or LIQUIDATE")
    detail = serializers.CharField(allow_blank=True)
    since = serializers.DateTimeField(allow_null=True)
    clear_mode = serializers.CharField(help_text="TIME, CONDITION or MANUAL")
    clears_at = serializers.DateTimeField(allow_null=True)
    clears = serializers.CharField(help_text="how the trip clears, in words")
    needs_manual_reset = serializers.BooleanField()
    resettable = serializers.BooleanField(help_text="staff may reset it (reset-guard)")


class GuardSerializer(serializers.Serializer):
    trader = serializers.IntegerField()
    trading_state = serializers.CharField()
    reason = serializers.CharField(allow_blank=True)
    trips = GuardTripSerializer(many=True)
    drawdown_peak = serializers.FloatField(allow_null=True, help_text="equity the drawdown limit is measured from")
    updated_at = serializers.DateTimeField(allow_null=True)


class GuardResetSerializer(serializers.Serializer):
    reason = StrictRegexField(TEXT_PATTERN, max_length=200, help_text="why the trip may be cleared (audited)")
    codes = serializers.ListField(child=StrictRegexField(r"^[A-Z_]{1,40}$"), required=False, min_length=1,
                                  max_length=20, help_text="trips to reset; default: every resettable one")


class KillSwitchSerializer(serializers.Serializer):
    engaged = serializers.BooleanField()
    reason = serializers.CharField(allow_blank=True)
    changed_by = serializers.CharField(source="changed_by.username", allow_null=True, default=None)
    changed_at = serializers.DateTimeField(allow_null=True)


class KillSwitchActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=[("engage", "engage the master kill switch (no new entries)"),
                                              ("release", "release it"),
                                              ("emergency", "emergency stop: engage and liquidate everything")])
    reason = StrictRegexField(TEXT_PATTERN, max_length=200, help_text="kept with the switch and audited")


class OverallMetricsSerializer(serializers.Serializer):
    traders = serializers.IntegerField()
    max_positions = serializers.IntegerField()
    open_positions_count = serializers.IntegerField()
    remaining_slots = serializers.IntegerField()
    portfolio_risk_pct = serializers.FloatField(allow_null=True)
    daily_pnl_pct = serializers.FloatField(allow_null=True)
    orders_24h = serializers.IntegerField()
    failed_orders_24h = serializers.IntegerField()
    failed_order_rate = serializers.FloatField(allow_null=True, help_text="failed / all orders over 24 h (0..1)")
    trades = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True)
    profit_factor = serializers.FloatField(allow_null=True)
    largest_unrealised_pct = serializers.FloatField(allow_null=True)
    slippage_bps = serializers.FloatField(allow_null=True)
    alarms = serializers.DictField(child=serializers.IntegerField())


class AlarmSerializer(serializers.Serializer):
    trader_id = serializers.IntegerField()
    trader = serializers.CharField()
    code = serializers.CharField()
    detail = serializers.CharField()


class DashboardMetricsSerializer(serializers.Serializer):
    generated_at = serializers.CharField()
    overall = OverallMetricsSerializer()
    traders = serializers.ListField(child=serializers.DictField())
    strategies = serializers.DictField(child=serializers.DictField())
    alarms = AlarmSerializer(many=True)
    alerts = serializers.DictField(child=serializers.IntegerField())


class EventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "trader", "ts", "level", "kind", "message", "data"]


class OrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = ["id", "trader", "client_order_id", "exchange_order_id", "mode", "symbol", "side", "type", "tif",
                  "purpose", "price", "qty", "quote_amount", "status", "filled_qty", "avg_price", "fee", "error",
                  "created_at", "updated_at"]


class FillSerializer(serializers.ModelSerializer):
    class Meta:
        model = Fill
        fields = ["id", "order", "trader", "trade_id", "symbol", "side", "price", "qty", "fee", "liquidity", "ts"]


class PositionSerializer(serializers.ModelSerializer):
    unrealised_pnl = serializers.DecimalField(max_digits=28, decimal_places=10, read_only=True)

    class Meta:
        model = Position
        fields = ["id", "trader", "symbol", "direction", "status", "qty", "avg_entry", "stop_price", "last_price",
                  "realised_pnl", "unrealised_pnl", "fees", "strategy", "regime", "model_version", "opened_ts",
                  "closed_ts"]


class SignalSerializer(serializers.ModelSerializer):
    class Meta:
        model = Signal
        fields = ["id", "trader", "scan_run", "symbol", "bar_ts", "action", "base_score", "total_score", "final_score",
                  "module_scores", "reason_codes", "regime", "direction", "checks"]


class RegimeSerializer(serializers.ModelSerializer):
    class Meta:
        model = MarketRegime
        fields = ["id", "exchange", "bar_ts", "label", "regime_score", "confidence", "inputs"]


class ProfileSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="current_version.version", read_only=True)

    class Meta:
        model = StrategyProfile
        fields = ["id", "key", "name", "description", "params", "version"]


class CredentialSerializer(serializers.ModelSerializer):
    """Keys are write-only: after saving, only the masked hint ever leaves the server."""

    api_key = StrictRegexField(r"^\S{4,512}$", write_only=True, help_text="no blanks")
    api_secret = StrictRegexField(r"^\S{4,512}$", write_only=True, help_text="no blanks")
    label = StrictRegexField(TEXT_PATTERN, max_length=80)
    ccxt_id = CcxtIdField(required=False, help_text="ccxt exchange id when exchange is ccxt")
    sandbox = StrictBooleanField(required=False, help_text="use the venue's testnet where ccxt offers one")
    masked_key = serializers.CharField(read_only=True)

    class Meta:
        model = Credential
        fields = ["id", "exchange", "ccxt_id", "label", "api_key", "api_secret", "masked_key", "sandbox", "created_at"]
        read_only_fields = ["created_at"]

    def validate(self, attrs):
        if attrs.get("exchange") == "sim":
            raise serializers.ValidationError({"exchange": "The sim exchange needs no credential."})
        if attrs.get("exchange") == "ccxt" and not attrs.get("ccxt_id"):
            raise serializers.ValidationError({"ccxt_id": "Name the ccxt exchange id (e.g. binance, bybit)."})
        return attrs
