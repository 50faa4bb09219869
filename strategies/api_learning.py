"""REST API of the learning layer [AI-2]..[AI-6], [UI-3]: read-only model versions (with their
lifecycle history and drift checks), candidates, tuning runs and bandit state; ``POST
/api/learning/tuning-runs/`` starts a tuning run (staff). Lifecycle actions are page actions
(``strategies.views_learning``), each behind a confirm dialog.

Reads need a login. Errors are 4xx with a message per field (bad query parameters too).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from strategies import learning
from strategies.models import (
    BanditState,
    DriftCheck,
    ModelCandidate,
    ModelStatus,
    ModelTransition,
    ModelVersion,
    TuningRun,
)
from traders.api.filters import MAX_ID, FilteredListMixin, QueryFilter, StrictLimitOffsetPagination
from traders.api.schema import AutoSchema
from traders.services import can_manage_live

DRIFT_ROWS = 48


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


# -- serializers --------------------------------------------------------------------------------------

class TransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelTransition
        fields = ["id", "from_status", "to_status", "actor", "reason", "created_at", "paper_model", "live_model"]
        read_only_fields = fields


class DriftCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = DriftCheck
        fields = ["id", "role", "window_end", "status", "reasons", "metrics", "warn_streak"]
        read_only_fields = fields


class ModelVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["id", "name", "status", "slot", "params", "gate_decision", "gate_rule", "gate_metrics", "baseline",
                  "tuning_run", "created_at", "status_changed_at", "deployed_at", "armed_at", "status_reason"]
        read_only_fields = fields


class ModelVersionDetailSerializer(ModelVersionSerializer):
    transitions = serializers.SerializerMethodField()
    drift_checks = serializers.SerializerMethodField()

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "transitions", "drift_checks"]
        read_only_fields = fields

    @extend_schema_field(TransitionSerializer(many=True))
    def get_transitions(self, model: ModelVersion) -> list[dict]:
        return TransitionSerializer(model.transitions.order_by("created_at", "id"), many=True).data

    @extend_schema_field(DriftCheckSerializer(many=True))
    def get_drift_checks(self, model: ModelVersion) -> list[dict]:
        """The newest checks first (at most 48: two days of hourly checks)."""
        return DriftCheckSerializer(model.drift_checks.order_by("-window_end")[:DRIFT_ROWS], many=True).data


class CandidateSerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelCandidate
        fields = ["id", "tuning_run", "trial_number", "params", "objective", "metrics", "gate_decision", "gate_rule",
                  "gate_detail", "model_version", "created_at"]
        read_only_fields = fields


class TuningRunSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(read_only=True)
    stalled = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = TuningRun
        fields = ["id", "status", "seed", "n_trials", "trials_done", "progress", "stalled", "n_pass", "n_hold",
                  "n_reject", "best", "config", "message", "created_by", "created_at", "started_at", "finished_at",
                  "heartbeat_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_stalled(self, run: TuningRun) -> bool:
        """RUNNING without a trial finishing for 15 minutes: the worker may be gone."""
        last = run.heartbeat_at or run.started_at
        return bool(run.status == TuningRun.Status.RUNNING and last is not None
                    and timezone.now() - last > timedelta(seconds=learning.HEARTBEAT_STALE_SECONDS))


class TuningRunDetailSerializer(TuningRunSerializer):
    class Meta(TuningRunSerializer.Meta):
        fields = [*TuningRunSerializer.Meta.fields, "summary"]
        read_only_fields = fields


class BanditStateSerializer(serializers.ModelSerializer):
    mean = serializers.SerializerMethodField()

    class Meta:
        model = BanditState
        fields = ["id", "regime", "module", "alpha", "beta", "n", "mean", "weight", "sampled_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.FLOAT)
    def get_mean(self, s: BanditState) -> float:
        return s.alpha / (s.alpha + s.beta)


class FiniteFloat(serializers.FloatField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class TuningRequestSerializer(serializers.Serializer):
    """A tuning run. Defaults: K = 60 trials over 20 simulated markets x 90 days of 1-hour bars."""

    source = serializers.ChoiceField(choices=["sim", "files"], default="sim")
    sim_seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1)
    sim_markets = serializers.IntegerField(required=False, min_value=2, max_value=100)
    days = FiniteFloat(required=False, min_value=10, max_value=366)
    timeframe = serializers.ChoiceField(choices=list(learning.SIM_TIMEFRAMES), required=False)
    data_files = serializers.ListField(child=serializers.CharField(max_length=400), required=False, max_length=100,
                                       help_text="files source: ids from GET /api/backtests/data-files/")
    bar = serializers.ChoiceField(choices=list(learning.FILE_BARS), required=False, allow_null=True,
                                  help_text="files source: resample to this bar (default: the finest bar whose "
                                            "markets x bars fit the runtime budget)")
    last_days = FiniteFloat(required=False, allow_null=True, min_value=10, max_value=366,
                            help_text="files source: only the last N days of the files (default: all)")
    n_trials = serializers.IntegerField(required=False, min_value=1, max_value=500, help_text="K (default 60)")
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, help_text="TPE seed")
    holdout_fraction = FiniteFloat(required=False, min_value=0.05, max_value=0.8)
    train_days = FiniteFloat(required=False, min_value=0, max_value=180)
    test_days = FiniteFloat(required=False, min_value=1, max_value=90)
    versions = serializers.IntegerField(required=False, min_value=0, max_value=10,
                                        help_text="best PASS candidates turned into VALIDATED model versions")

    SIM_ONLY = ("sim_seed", "sim_markets", "days", "timeframe")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Fields that do not apply to the chosen source are refused, not ignored."""
        source = attrs.get("source", "sim")
        errors: dict[str, list[str]] = {}
        if source == "sim":
            for key in learning.FILES_ONLY:
                if key in self.initial_data:
                    errors[key] = ["only with source=files"]
        if source == "files":
            for key in self.SIM_ONLY:
                if key in self.initial_data:
                    errors[key] = ["only with source=sim"]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


# -- filters ------------------------------------------------------------------------------------------

class ModelVersionFilter(QueryFilter):
    status = serializers.ChoiceField(choices=ModelStatus.choices, required=False)

    def apply(self, qs, data):
        return qs.filter(status=data["status"]) if "status" in data else qs


class CandidateFilter(QueryFilter):
    tuning_run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    decision = serializers.ChoiceField(choices=["PASS", "HOLD", "REJECT"], required=False)

    def apply(self, qs, data):
        if "tuning_run" in data:
            qs = qs.filter(tuning_run_id=data["tuning_run"])
        if "decision" in data:
            qs = qs.filter(gate_decision=data["decision"])
        return qs


class TuningRunFilter(QueryFilter):
    status = serializers.ChoiceField(choices=TuningRun.Status.choices, required=False)

    def apply(self, qs, data):
        return qs.filter(status=data["status"]) if "status" in data else qs


class BanditFilter(QueryFilter):
    regime = serializers.ChoiceField(choices=["TREND", "RANGE", "BREAKOUT_ROTATION", "CHOP", "PANIC"], required=False)

    def apply(self, qs, data):
        return qs.filter(regime=data["regime"]) if "regime" in data else qs


# -- views --------------------------------------------------------------------------------------------

class ReadOnly(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    schema = AutoSchema()
    pagination_class = StrictLimitOffsetPagination
    permission_classes = [permissions.IsAuthenticated]


class ModelVersionViewSet(ReadOnly):
    """Model versions, newest first, with their gate result; the detail adds the lifecycle
    history and the drift checks."""

    filter_class = ModelVersionFilter
    queryset = ModelVersion.objects.order_by("-id")

    def get_serializer_class(self):
        return ModelVersionDetailSerializer if self.action == "retrieve" else ModelVersionSerializer


class CandidateViewSet(ReadOnly):
    """Gate-passing tuning trials with every gate metric (out of sample) and the deciding rule."""

    filter_class = CandidateFilter
    serializer_class = CandidateSerializer
    queryset = ModelCandidate.objects.order_by("-id")


class CanStartTuning(permissions.BasePermission):
    message = "Only staff may start tuning runs."

    def has_permission(self, request, view) -> bool:
        return request.method in permissions.SAFE_METHODS or can_manage_live(request.user)


class TuningRunViewSet(mixins.CreateModelMixin, ReadOnly):
    """Tuning runs with live progress (``trials_done`` / ``n_trials``, ``best``); ``POST`` starts
    one on the slow worker queue (staff)."""

    filter_class = TuningRunFilter
    permission_classes = [permissions.IsAuthenticated, CanStartTuning]
    queryset = TuningRun.objects.select_related("created_by").order_by("-id")

    def get_serializer_class(self):
        return TuningRunDetailSerializer if self.action == "retrieve" else TuningRunSerializer

    @extend_schema(request=TuningRequestSerializer, responses={201: TuningRunDetailSerializer})
    def create(self, request, *args, **kwargs):
        body = TuningRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            run = learning.start_tuning(user=request.user, options=dict(body.validated_data))
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc)) from None
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}) from None
        return Response(TuningRunDetailSerializer(run).data, status=status.HTTP_201_CREATED)


class BanditViewSet(ReadOnly):
    """The bandit's arms: posterior (alpha, beta, n, mean) and current weight per regime and module."""

    filter_class = BanditFilter
    serializer_class = BanditStateSerializer
    queryset = BanditState.objects.order_by("regime", "module")
