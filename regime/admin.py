import json

from django import forms
from django.contrib import admin

from regime.engine.classifier import RegimeThresholds
from regime.models import MarketRegime, RegimeThresholdsVersion
from traders.admin import ReadOnlyAdmin


@admin.register(MarketRegime)
class MarketRegimeAdmin(ReadOnlyAdmin):
    list_display = ["bar_ts", "exchange", "label", "regime_score", "confidence", "true_label"]
    list_filter = ["exchange", "label"]


class RegimeThresholdsForm(forms.ModelForm):
    """A new version: the full thresholds as JSON (prefilled with the ones in force)."""

    class Meta:
        model = RegimeThresholdsVersion
        fields = ["params", "comment"]

    def clean_params(self):
        from regime import thresholds

        params = self.cleaned_data["params"]
        try:
            new = RegimeThresholds.from_dict(params, base=thresholds.current_thresholds())
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        if thresholds.current_version() is not None and not thresholds.diff(thresholds.current_thresholds(), new):
            raise forms.ValidationError("nothing changed against the version in force")
        return new.to_json()


@admin.register(RegimeThresholdsVersion)
class RegimeThresholdsVersionAdmin(admin.ModelAdmin):
    """Versions are immutable: "add" stores the next version (audited); rows are view-only."""

    form = RegimeThresholdsForm
    list_display = ["version", "created_at", "created_by", "changed", "comment"]
    readonly_fields = ["version", "diff", "created_by", "created_at"]

    @admin.display(description="changed")
    def changed(self, obj):
        return ", ".join(obj.diff or {}) or "-"

    def get_changeform_initial_data(self, request):
        from regime import thresholds

        return {"params": json.dumps(thresholds.current_thresholds().to_json())}

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        from regime import thresholds

        row = thresholds.save_thresholds(form.cleaned_data["params"], user=request.user,
                                         comment=form.cleaned_data.get("comment", ""))
        if row is None:        # defaults stored unchanged as the first version
            row = thresholds.RegimeThresholdsVersion.objects.order_by("-version").first()
        obj.pk, obj.version, obj.params, obj.diff = row.pk, row.version, row.params, row.diff
