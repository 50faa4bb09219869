from __future__ import annotations

from decimal import Decimal

from rest_framework import serializers

from execution.models import Fill, Order, Position
from regime.models import MarketRegime
from strategies.models import Signal, StrategyProfile
from traders.models import Credential, Event, Trader, TraderMode


class TraderSerializer(serializers.ModelSerializer):
    profile = serializers.SlugRelatedField(slug_field="key", read_only=True)
    config_version = serializers.IntegerField(source="config_version.version", read_only=True)
    return_pct = serializers.FloatField(read_only=True)

    class Meta:
        model = Trader
        fields = ["id", "name", "profile", "config_version", "seed_money", "exchange", "credential", "mode", "status",
                  "status_reason", "armed", "cash", "realised_pnl", "fees_paid", "equity", "return_pct",
                  "last_tick_ts", "created_at", "removed_at"]
        read_only_fields = fields


class TraderCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=80)
    profile = serializers.SlugRelatedField(slug_field="key", queryset=StrategyProfile.objects.all())
    seed_money = serializers.DecimalField(max_digits=28, decimal_places=2, min_value=Decimal("5000"))
    credential = serializers.PrimaryKeyRelatedField(queryset=Credential.objects.all(), required=False, allow_null=True)


class ModeSerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=TraderMode.choices)


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
                  "realised_pnl", "unrealised_pnl", "fees", "strategy", "regime", "opened_ts", "closed_ts"]


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

    api_key = serializers.CharField(write_only=True, trim_whitespace=True, min_length=4)
    api_secret = serializers.CharField(write_only=True, trim_whitespace=True, min_length=4)
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
