"""REST API for backtest runs [BT-4]: submit, list, detail with progress and result, trades CSV.

Reads are open to any logged-in user; submitting needs the operator permission (the same as
creating a paper trader, ``traders.services.can_operate``). The web only records the run and
enqueues it (``strategies.services_backtest``); a worker runs it. Session and token auth as the
rest of the API (``REST_FRAMEWORK`` settings).
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from strategies import services_backtest as svc
from strategies.engine.backtest.walkforward import MAX_WINDOWS, WalkForwardError, split_windows
from strategies.models import BacktestRun, BacktestStatus, ProfileKey, StrategyProfile
from traders.api.filters import FilteredListMixin, QueryFilter, StrictLimitOffsetPagination
from traders.api.schema import AutoSchema
from traders.services import can_operate

DAY = 86_400
MAX_DAYS = 3660.0
SUMMARY_KEYS = ("total_return", "annualized_return", "sharpe", "max_drawdown", "trades", "win_rate")


# -- request ----------------------------------------------------------------------------------------

class FiniteFloatField(serializers.FloatField):
    """A float that must be a real number (DRF's FloatField lets NaN through its bounds)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


class BacktestRequestSerializer(serializers.Serializer):
    """What to run. Fields that do not apply to the chosen strategy or source are refused."""

    strategy = serializers.ChoiceField(choices=sorted(svc.STRATEGIES))
    source = serializers.ChoiceField(choices=["files", "sim"], default="files",
                                     help_text="files: candle files from the server's data directory; "
                                               "sim: the simulator")
    data_files = serializers.ListField(child=serializers.CharField(max_length=400), required=False,
                                       max_length=200, help_text="ids from GET /api/backtests/data-files/")
    sim_seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1,
                                        help_text="simulator seed (sim source; default 7)")
    sim_markets = serializers.IntegerField(required=False, min_value=1, max_value=300,
                                           help_text="simulated markets (sim source; default 30)")
    sim_days = FiniteFloatField(required=False, min_value=0.01, max_value=366.0,
                                help_text="simulated days to run (sim source; default 3)")
    profile = serializers.ChoiceField(choices=ProfileKey.choices, required=False,
                                      help_text="risk profile (pipeline; default STANDARD): its current stored "
                                                "parameters when the run starts")
    latency_ms = serializers.IntegerField(required=False, min_value=0, max_value=60_000,
                                          help_text="order latency of the fill model (pipeline; default 0)")
    participation = FiniteFloatField(required=False, min_value=0.001, max_value=1.0,
                                     help_text="share of a bar's volume a resting order can fill (pipeline; "
                                               "default 0.10)")
    spread_bps = FiniteFloatField(required=False, min_value=0.01, max_value=1000.0,
                                  help_text="spread of the synthetic books in basis points (pipeline; default 5)")
    start = serializers.DateTimeField(required=False, allow_null=True, default_timezone=UTC,
                                      help_text="first bar open to include (UTC when no zone is given)")
    end = serializers.DateTimeField(required=False, allow_null=True, default_timezone=UTC,
                                    help_text="bars opening before this time only")
    fee = FiniteFloatField(default=0.0005, min_value=0.0, max_value=0.1,
                           help_text="proportional fee per side (the pipeline needs it above 0)")
    cash = FiniteFloatField(default=10_000_000.0, min_value=1.0, max_value=1e13)
    fast = serializers.IntegerField(required=False, min_value=1, max_value=100_000)
    slow = serializers.IntegerField(required=False, min_value=2, max_value=100_000)
    wf_train_days = FiniteFloatField(required=False, allow_null=True, min_value=0.0, max_value=MAX_DAYS,
                                     help_text="walk-forward: train window length in days")
    wf_test_days = FiniteFloatField(required=False, allow_null=True, min_value=0.0, max_value=MAX_DAYS,
                                    help_text="walk-forward: test window length in days")
    wf_step_days = FiniteFloatField(required=False, allow_null=True, min_value=0.0, max_value=MAX_DAYS,
                                    help_text="walk-forward: step between windows (default: the test length)")
    wf_anchored = serializers.BooleanField(default=False,
                                           help_text="walk-forward: train from the period start (growing window)")

    @staticmethod
    def _in_range(value: datetime | None) -> datetime | None:
        if value is not None and not EARLIEST <= value < LATEST:
            raise serializers.ValidationError("must be between 1970-01-02 and 2200-01-01")
        return value

    def validate_start(self, value):
        return self._in_range(value)

    def validate_end(self, value):
        return self._in_range(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, list[str]] = {}

        def refuse(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        strategy = attrs["strategy"]
        spec = svc.STRATEGIES[strategy]
        source = attrs.get("source", "files")
        out: dict[str, Any] = {"strategy": strategy, "source": source, "fee": attrs["fee"], "cash": attrs["cash"]}
        if source not in spec["sources"]:
            refuse("source", f"{strategy} runs on: {', '.join(spec['sources'])}")

        files = attrs.get("data_files") or []
        if source == "files":
            catalogue = {f.id: f for f in svc.data_catalogue()}
            if not files:
                refuse("data_files", "choose at least one data file")
            for f in files:
                if f not in catalogue:
                    refuse("data_files", f"{f!r} is not one of the data files offered")
                elif spec.get("timeframes") and catalogue[f].timeframe not in spec["timeframes"]:
                    refuse("data_files", f"{f!r} has {catalogue[f].timeframe} candles; {strategy} runs on "
                                         f"{', '.join(spec['timeframes'])} candles")
            if len(set(files)) != len(files):
                refuse("data_files", "a data file is listed twice")
            limit = spec.get("max_files", 200)
            if len(files) > limit:
                refuse("data_files", f"{strategy} needs exactly 1 data file" if limit == 1
                       else f"at most {limit} data files")
            out["data_files"] = list(files)
            for key in ("sim_seed", "sim_markets", "sim_days"):
                if key in attrs:
                    refuse(key, "only for the sim source")
        else:
            if files:
                refuse("data_files", "data files are for the files source")
            out["sim"] = {"seed": attrs.get("sim_seed", 7), "markets": attrs.get("sim_markets", 30),
                          "days": attrs.get("sim_days", 3.0)}

        options = spec.get("options", ())
        if "profile" in options:
            key = attrs.get("profile", ProfileKey.STANDARD)
            profile = StrategyProfile.objects.select_related("current_version").filter(key=key).first()
            out["profile"] = key
            out["profile_version"] = getattr(getattr(profile, "current_version", None), "version", None)
        elif "profile" in attrs:
            refuse("profile", f"{strategy} takes no profile")
        for key in ("latency_ms", "participation", "spread_bps"):
            if key in attrs:
                if "costs" in options:
                    out[key] = attrs[key]
                else:
                    refuse(key, f"{strategy} takes no {key}")
        if strategy == "pipeline" and attrs["fee"] <= 0:
            refuse("fee", "the pipeline's fill model charges every fill: the fee must be above 0")

        if strategy == "sma_cross":
            fast, slow = attrs.get("fast"), attrs.get("slow")
            if fast is None:
                refuse("fast", "sma_cross needs fast")
            if slow is None:
                refuse("slow", "sma_cross needs slow")
            if fast is not None and slow is not None and not fast < slow:
                refuse("slow", "slow must be greater than fast")
            out.update(fast=fast, slow=slow)
        else:
            for key in ("fast", "slow"):
                if attrs.get(key) is not None:
                    refuse(key, "only for sma_cross")

        start, end = attrs.get("start"), attrs.get("end")
        if start and end and start >= end:
            refuse("end", "end must be after start")
        out["start"] = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if start else None
        out["end"] = end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if end else None

        out["walk_forward"] = self._walk_forward(attrs, refuse, start, end)
        if out["walk_forward"] and source == "sim":
            refuse("source", "walk-forward needs replayed files: the simulator would generate a new history "
                             "from each window's start, so train and test windows would not share one market")
        if errors:
            raise ValidationError(errors)
        return out

    @staticmethod
    def _walk_forward(attrs, refuse, start, end) -> dict[str, Any] | None:
        train, test, step = (attrs.get(k) for k in ("wf_train_days", "wf_test_days", "wf_step_days"))
        if train is None and test is None and step is None:
            return None
        if not train:
            refuse("wf_train_days", "walk-forward needs a train length (days > 0)")
        if not test:
            refuse("wf_test_days", "walk-forward needs a test length (days > 0)")
        if step is not None and step <= 0:
            refuse("wf_step_days", "the step must be positive")
        if not train or not test or (step is not None and step <= 0):
            return None
        spec = {"train_seconds": round(train * DAY), "test_seconds": round(test * DAY),
                "step_seconds": round((step or test) * DAY), "anchored": bool(attrs.get("wf_anchored"))}
        if spec["step_seconds"] < spec["test_seconds"]:
            refuse("wf_step_days", "the step must be at least the test length (test windows must not overlap)")
            return None
        if start and end:
            try:
                windows = split_windows(int(start.timestamp()), int(end.timestamp()), train=spec["train_seconds"],
                                        test=spec["test_seconds"], step=spec["step_seconds"],
                                        anchored=spec["anchored"], max_windows=MAX_WINDOWS)
            except WalkForwardError as exc:
                refuse("wf_train_days", str(exc))
                return None
            spec["windows"] = len(windows)
        return spec


# -- responses ------------------------------------------------------------------------------------

def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


class RunSummarySerializer(serializers.Serializer):
    """Headline figures of a finished run (fractions; null when undefined)."""

    total_return = serializers.FloatField(allow_null=True)
    annualized_return = serializers.FloatField(allow_null=True)
    sharpe = serializers.FloatField(allow_null=True)
    max_drawdown = serializers.FloatField(allow_null=True)
    trades = serializers.IntegerField(allow_null=True)
    win_rate = serializers.FloatField(allow_null=True)


class BacktestRunSerializer(serializers.ModelSerializer):
    submitted_by = serializers.CharField(source="submitted_by.username", read_only=True, default=None,
                                         allow_null=True)
    stalled = serializers.SerializerMethodField(help_text="RUNNING but no progress for a long time")
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    summary = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    page = serializers.SerializerMethodField()

    class Meta:
        model = BacktestRun
        fields = ["id", "url", "page", "strategy", "status", "progress", "stalled", "error", "options",
                  "submitted_by", "created_at", "started_at", "finished_at", "duration_seconds", "summary"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_stalled(self, run: BacktestRun) -> bool:
        return run.is_stalled()

    @extend_schema_field(RunSummarySerializer(allow_null=True))
    def get_summary(self, run: BacktestRun) -> dict[str, Any] | None:
        """A few report figures (lists attach them without loading the full result)."""
        report = getattr(run, "summary_report", None)
        if report is None and "result" not in run.get_deferred_fields():
            report = run.report
        if not report:
            return None
        return {k: _finite(report.get(k)) for k in SUMMARY_KEYS}

    @extend_schema_field(OpenApiTypes.STR)
    def get_url(self, run: BacktestRun) -> str:
        return reverse("api-backtest-detail", args=[run.pk])

    @extend_schema_field(OpenApiTypes.STR)
    def get_page(self, run: BacktestRun) -> str:
        return run.get_absolute_url()


class BacktestRunDetailSerializer(BacktestRunSerializer):
    result = serializers.JSONField(read_only=True, allow_null=True,
                                   help_text="the runner's result (report, equity and drawdown for charts, "
                                             "trade_list, breakdowns, walk_forward); null until DONE")
    trades_csv = serializers.SerializerMethodField()

    class Meta(BacktestRunSerializer.Meta):
        fields = [*BacktestRunSerializer.Meta.fields, "trades_csv", "result"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_trades_csv(self, run: BacktestRun) -> str | None:
        if run.status != BacktestStatus.DONE:
            return None
        return reverse("api-backtest-trades-csv", args=[run.pk])


class DataFileSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the value to put in data_files")
    exchange = serializers.CharField()
    symbol = serializers.CharField()
    timeframe = serializers.CharField()
    size = serializers.IntegerField(help_text="bytes")


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class BacktestFilter(QueryFilter):
    status = serializers.ChoiceField(choices=BacktestStatus.choices, required=False)
    strategy = serializers.ChoiceField(choices=sorted(svc.STRATEGIES), required=False)
    since = serializers.DateTimeField(required=False, help_text="submitted at or after (ISO 8601, UTC if naive)")
    until = serializers.DateTimeField(required=False, help_text="submitted before (ISO 8601, UTC if naive)")

    def apply(self, qs, data):
        lookups = {k: data[k] for k in ("status", "strategy") if k in data}
        if "since" in data:
            lookups["created_at__gte"] = data["since"]
        if "until" in data:
            lookups["created_at__lt"] = data["until"]
        return qs.filter(**lookups)


# -- views ------------------------------------------------------------------------------------------

class CanSubmit(permissions.BasePermission):
    """Reads need a login; submitting needs an operator (as creating a paper trader)."""

    message = "Only operators may run backtests."

    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or can_operate(request.user)


def submit(user, data) -> BacktestRun:
    """Permission first (a viewer gets 403, not a list of field errors), then validation."""
    if not can_operate(user):
        raise PermissionDenied(CanSubmit.message)
    body = BacktestRequestSerializer(data=data)
    body.is_valid(raise_exception=True)
    try:
        return svc.submit_backtest(user=user, request=body.validated_data)
    except DjangoPermissionDenied as exc:
        raise PermissionDenied(str(exc)) from None
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}) from None


class BacktestRunViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,
                         viewsets.GenericViewSet):
    """Backtest runs, newest first. ``POST`` records a run for a worker [BT-4]; poll the detail
    for ``progress`` and ``status``; the result is there once ``status`` is DONE."""

    schema = AutoSchema()
    pagination_class = StrictLimitOffsetPagination
    filter_class = BacktestFilter
    permission_classes = [permissions.IsAuthenticated, CanSubmit]
    queryset = BacktestRun.objects.select_related("submitted_by").order_by("-created_at", "-id")

    def get_serializer_class(self):
        return BacktestRunDetailSerializer if self.action == "retrieve" else BacktestRunSerializer

    def get_queryset(self):
        qs = super().get_queryset()
        return qs.defer("result") if self.action == "list" else qs

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        runs = list(page) if page is not None else list(queryset)
        attach_summaries(runs)
        data = BacktestRunSerializer(runs, many=True).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    @extend_schema(request=BacktestRequestSerializer, responses={201: BacktestRunDetailSerializer})
    def create(self, request):
        run = submit(request.user, request.data)
        return Response(BacktestRunDetailSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: DataFileSerializer(many=True)})
    @action(detail=False, methods=["get"], url_path="data-files", pagination_class=None)
    def data_files(self, request):
        """The candle files a run may use (``data_files`` takes their ids)."""
        return Response(DataFileSerializer(svc.data_catalogue(), many=True).data)


def attach_summaries(runs: list[BacktestRun]) -> None:
    """Load only the report of finished runs (not the curves and trade lists) for list rows."""
    done = [r.pk for r in runs if r.status == BacktestStatus.DONE]
    reports: dict[int, dict] = {}
    if done:
        for pk, report in BacktestRun.objects.filter(pk__in=done).values_list("pk", "result__report"):
            reports[pk] = report if isinstance(report, dict) else (json.loads(report) if report else {})
    for run in runs:
        run.summary_report = reports.get(run.pk, {})


TRADE_COLUMNS = ("window", "symbol", "strategy", "regime", "entry_time", "exit_time", "entry_bar", "exit_bar",
                 "entry_price", "exit_price", "qty", "entry_value", "exit_value", "fees", "pnl", "return", "is_open",
                 "exit_reason", "entry_score")


def trades_csv(run: BacktestRun) -> str:
    """The run's trade list as CSV: known columns first, then any others in first-seen order;
    text cells that a spreadsheet would run as a formula are prefixed with a quote."""
    trades = (run.result or {}).get("trade_list") or []
    extra: list[str] = []
    present = set()
    for t in trades:
        for key in t:
            present.add(key)
            if key not in TRADE_COLUMNS and key not in extra:
                extra.append(key)
    columns = [c for c in TRADE_COLUMNS if c in present] + extra
    if not trades:
        columns = ["entry_time", "exit_time", "entry_price", "exit_price", "qty", "fees", "pnl", "return", "is_open"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for t in trades:
        writer.writerow([_cell(t.get(c)) for c in columns])
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class BacktestTradesCsvView(APIView):
    """GET the trade list of a finished run as CSV (409 while it is not DONE)."""

    schema = AutoSchema()

    @extend_schema(operation_id="backtests_trades_csv",
                   responses={(200, "text/csv"): OpenApiTypes.STR,
                              409: OpenApiResponse(DetailSerializer, description="the run has not finished")})
    def get(self, request, pk: int):
        run = get_object_or_404(BacktestRun, pk=pk)
        if run.status != BacktestStatus.DONE:
            return Response({"detail": f"backtest #{run.pk} is {run.status}; its trades are there once it is DONE"},
                            status=status.HTTP_409_CONFLICT)
        response = HttpResponse(trades_csv(run), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="backtest-{run.pk}-trades.csv"'
        return response
