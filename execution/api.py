"""REST API: market-data quality per source and market [EX-5], read-only.

``GET /api/data-quality/`` lists one row per (source, market) with the counts the collectors
recorded (``execution.quality``), filtered by ``exchange`` (source: sim, upbit, replay,
ccxt:<id>), ``symbol`` and ``problems=true`` (only markets with a rejected or repaired row);
``GET /api/data-quality/<id>/`` is one row. Any logged-in user may read; nothing is writable.
"""

from __future__ import annotations

import time

from rest_framework import mixins, permissions, serializers

from execution.engine.validation import QUALITY_ACTIONS, QUALITY_KINDS
from execution.models import DataQuality
from traders.api.filters import SYMBOL_PATTERN, QueryFilter
from traders.api.views import ApiViewSet

SOURCE_PATTERN = r"^(sim|upbit|replay|ccxt:[a-z0-9_]{1,11})$"


class DataQualitySerializer(serializers.ModelSerializer):
    counts = serializers.SerializerMethodField(help_text='{kind: {"rejected": n, "repaired": n, "flagged": n}}')
    age_seconds = serializers.SerializerMethodField(
        help_text="seconds since the close of the newest good 1m bar (null before the first)")

    class Meta:
        model = DataQuality
        fields = ["id", "exchange", "symbol", "rows_checked", "rows_rejected", "rows_repaired", "rows_flagged",
                  "counts", "last_good_ts", "age_seconds", "last_snapshot_ts", "last_problem", "last_problem_at",
                  "updated_at"]
        read_only_fields = fields

    def get_counts(self, obj: DataQuality) -> dict[str, dict[str, int]]:
        return {kind: {action: obj.count(kind, action) for action in QUALITY_ACTIONS} for kind in QUALITY_KINDS}

    def get_age_seconds(self, obj: DataQuality) -> float | None:
        if obj.last_good_ts is None:
            return None
        return round(max(0.0, time.time() - (obj.last_good_ts + 60)), 3)


class DataQualityFilter(QueryFilter):
    exchange = serializers.RegexField(SOURCE_PATTERN, required=False, max_length=16,
                                      help_text="market-data source: sim, upbit, replay or ccxt:<id>")
    symbol = serializers.RegexField(SYMBOL_PATTERN, required=False, max_length=32,
                                    help_text="market symbol, exact (e.g. KRW-BTC, BTC/USDT)")
    problems = serializers.BooleanField(required=False,
                                        help_text="true: only markets with at least one rejected or repaired row")

    def apply(self, qs, data):
        if "exchange" in data:
            qs = qs.filter(exchange=data["exchange"])
        if "symbol" in data:
            qs = qs.filter(symbol=data["symbol"])
        if data.get("problems") is True:
            from django.db.models import Q

            qs = qs.filter(Q(rows_rejected__gt=0) | Q(rows_repaired__gt=0))
        elif data.get("problems") is False:
            qs = qs.filter(rows_rejected=0, rows_repaired=0)
        return qs


class DataQualityViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, ApiViewSet):
    """Market-data quality per source and market (read-only)."""

    serializer_class = DataQualitySerializer
    filter_class = DataQualityFilter
    permission_classes = [permissions.IsAuthenticated]
    queryset = DataQuality.objects.order_by("exchange", "symbol", "id")
