from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from strategies import services
from strategies.models import (
    BacktestRun,
    BanditReward,
    BanditState,
    ConfigVersion,
    DriftCheck,
    FeatureSnapshot,
    ModelCandidate,
    ModelTransition,
    ModelVersion,
    ScanRun,
    Signal,
    StrategyProfile,
    TuningRun,
)
from traders.admin import ReadOnlyAdmin


@admin.register(StrategyProfile)
class StrategyProfileAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "current_version", "updated_at"]
    readonly_fields = ["key", "current_version", "updated_at"]
    fields = ["key", "name", "description", "params", "current_version", "updated_at"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Param edits go through the same validated, versioned, audited path as the STRATEGY page."""
        new_params = obj.params
        stored = StrategyProfile.objects.get(pk=obj.pk)
        obj.params = stored.params
        super().save_model(request, obj, form, change)  # name/description only
        if new_params != stored.params:
            try:
                services.update_profile(profile=obj, params=new_params, user=request.user, comment="admin edit")
            except (ValidationError, PermissionDenied) as exc:
                messages.error(request, "Parameters not saved: " + "; ".join(getattr(exc, "messages", [str(exc)])))


@admin.register(ConfigVersion)
class ConfigVersionAdmin(ReadOnlyAdmin):
    list_display = ["profile", "version", "created_by", "created_at", "comment"]
    list_filter = ["profile"]


@admin.register(ScanRun)
class ScanRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "trader", "exchange", "bar_ts", "n_markets", "n_candidates", "duration_ms", "error"]
    list_filter = ["exchange", "trader"]


@admin.register(FeatureSnapshot)
class FeatureSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["id", "symbol", "bar_ts", "price", "label_ret_60m", "label_ret_240m", "labelled_at"]
    search_fields = ["symbol"]


@admin.register(Signal)
class SignalAdmin(ReadOnlyAdmin):
    list_display = ["id", "trader", "symbol", "bar_ts", "action", "final_score", "total_score", "regime"]
    list_filter = ["action", "regime", "trader"]
    search_fields = ["symbol"]


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    """Read-only: lifecycle moves go through the STRATEGY page (ModelVersion.transition)."""

    list_display = ["id", "name", "status", "slot", "gate_decision", "gate_rule", "baseline", "created_at",
                    "status_changed_at"]
    list_filter = ["status", "gate_decision"]


@admin.register(ModelTransition)
class ModelTransitionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "model_version", "from_status", "to_status", "actor", "reason"]
    list_filter = ["to_status"]


@admin.register(TuningRun)
class TuningRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "status", "seed", "n_trials", "trials_done", "n_pass", "n_hold", "n_reject", "created_by",
                    "created_at", "finished_at"]
    list_filter = ["status"]


@admin.register(ModelCandidate)
class ModelCandidateAdmin(ReadOnlyAdmin):
    list_display = ["tuning_run", "trial_number", "objective", "gate_decision", "gate_rule", "model_version",
                    "created_at"]
    list_filter = ["gate_decision"]


@admin.register(BanditState)
class BanditStateAdmin(ReadOnlyAdmin):
    list_display = ["regime", "module", "alpha", "beta", "n", "weight", "sampled_at", "updated_at"]
    list_filter = ["regime", "module"]


@admin.register(BanditReward)
class BanditRewardAdmin(ReadOnlyAdmin):
    list_display = ["id", "position", "regime", "module", "r_net", "reward", "created_at"]
    list_filter = ["regime", "module"]


@admin.register(DriftCheck)
class DriftCheckAdmin(ReadOnlyAdmin):
    list_display = ["window_end", "model_version", "role", "status", "warn_streak", "reasons"]
    list_filter = ["status", "role"]


@admin.register(BacktestRun)
class BacktestRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "strategy", "status", "progress", "submitted_by", "created_at", "finished_at"]
    list_filter = ["status", "strategy"]
    exclude = ["result"]  # curves and trade lists: read them on the result page or through the API
