from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError

from strategies import services
from strategies.models import (
    BanditState,
    ConfigVersion,
    FeatureSnapshot,
    ModelCandidate,
    ModelVersion,
    ScanRun,
    Signal,
    StrategyProfile,
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
    list_display = ["name", "status", "gate_decision", "created_at", "status_changed_at"]
    list_filter = ["status", "gate_decision"]


@admin.register(ModelCandidate)
class ModelCandidateAdmin(ReadOnlyAdmin):
    list_display = ["tuning_run", "trial_number", "gate_decision", "gate_rule", "created_at"]
    list_filter = ["gate_decision"]


@admin.register(BanditState)
class BanditStateAdmin(ReadOnlyAdmin):
    list_display = ["regime", "module", "alpha", "beta", "n", "updated_at"]
    list_filter = ["regime", "module"]
