from django import forms
from django.contrib import admin
from django.http import StreamingHttpResponse
from django.utils import timezone

from traders import audit
from traders.models import AuditLog, Credential, EquitySnapshot, Event, Intent, Trader


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows nobody may edit or delete (fills, events, audit)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CredentialAdminForm(forms.ModelForm):
    api_key = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                              help_text="leave empty to keep the stored key")
    api_secret = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                                 help_text="leave empty to keep the stored secret")

    class Meta:
        model = Credential
        fields = ["exchange", "ccxt_id", "label", "api_key", "api_secret", "sandbox"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Never send the stored secret back to the browser, not even in a password field.
        self.initial.pop("api_key", None)
        self.initial.pop("api_secret", None)
        if self.instance.pk is None:
            self.fields["api_key"].required = True
            self.fields["api_secret"].required = True

    def clean(self):
        data = super().clean()
        for name in ("api_key", "api_secret"):
            if not data.get(name) and self.instance.pk:
                data[name] = getattr(self.instance, name)
        return data


@admin.register(Credential)
class CredentialAdmin(admin.ModelAdmin):
    form = CredentialAdminForm
    list_display = ["label", "exchange", "ccxt_id", "masked_key", "sandbox", "created_at"]
    list_filter = ["exchange", "sandbox"]
    search_fields = ["label", "ccxt_id"]

    def has_module_permission(self, request):
        return request.user.is_staff

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        audit.record("CREDENTIAL_CHANGED" if change else "CREDENTIAL_ADDED", actor=request.user, obj=obj,
                     payload={"exchange": obj.exchange, "label": obj.label, "key": obj.masked_key, "via": "admin"})


@admin.register(Trader)
class TraderAdmin(admin.ModelAdmin):
    list_display = ["name", "profile", "config_version", "mode", "status", "armed", "seed_money", "equity", "removed_at"]
    list_filter = ["mode", "status", "armed", "exchange", "profile"]
    search_fields = ["name"]
    # State changes go through intents (workers act); admin shows the books read-only.
    readonly_fields = ["profile", "config_version", "seed_money", "mode", "status", "status_reason", "armed",
                       "armed_at", "armed_by", "paper_protection_started_at", "cash", "realised_pnl", "fees_paid",
                       "equity", "last_tick_ts", "last_tick_at", "created_by", "created_at", "removed_at",
                       "exchange", "credential"]

    def has_add_permission(self, request):
        return False  # created on the TRADERS page (validation, audit, safety state)

    def has_delete_permission(self, request, obj=None):
        return False  # REMOVE keeps history


@admin.register(Intent)
class IntentAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "trader", "status", "result", "created_by", "created_at", "processed_at"]
    list_filter = ["kind", "status"]
    search_fields = ["trader__name", "result"]


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "ts", "trader", "level", "kind", "message"]
    list_filter = ["level", "kind"]
    search_fields = ["message", "trader__name", "kind"]
    date_hierarchy = "ts"


@admin.register(EquitySnapshot)
class EquitySnapshotAdmin(ReadOnlyAdmin):
    list_display = ["trader", "ts", "equity", "cash", "positions_value"]
    list_filter = ["trader"]


@admin.action(description="Export selected rows as CSV")
def export_csv(modeladmin, request, queryset):
    return _export(request, queryset, "csv")


@admin.action(description="Export selected rows as JSON Lines")
def export_jsonl(modeladmin, request, queryset):
    return _export(request, queryset, "jsonl")


def _export(request, queryset, fmt):
    audit.record("AUDIT_EXPORTED", actor=request.user, payload={"via": "admin", "rows": queryset.count(), "format": fmt})
    response = StreamingHttpResponse(audit.export(queryset.order_by("seq").iterator(), fmt),
                                     content_type="text/csv" if fmt == "csv" else "application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="quantweb-audit-{timezone.now():%Y%m%dT%H%M%SZ}.{fmt}"'
    return response


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["seq", "ts", "actor", "kind", "trader_id", "object_type", "object_id", "short_hash"]
    list_filter = ["kind", "actor"]
    search_fields = ["kind", "actor", "object_id"]
    date_hierarchy = "ts"
    actions = [export_csv, export_jsonl]

    @admin.display(description="hash")
    def short_hash(self, obj):
        return obj.hash[:12]

    def get_actions(self, request):
        # ReadOnlyAdmin removes delete; keep the export actions.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


from traders import admin_alerts  # noqa: E402,F401  (registers AlertSettings and AlertOutbox)
