from django import forms
from django.contrib import admin
from django.http import StreamingHttpResponse
from django.utils import timezone

from traders import audit, permissions
from traders.models import AuditCheckpoint, AuditLog, Credential, EquitySnapshot, Event, Intent, Trader


class ReadOnlyAdmin(admin.ModelAdmin):
    """For rows nobody may edit or delete (fills, events, audit)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OwnerScopedAdmin(admin.ModelAdmin):
    """The same scoping as the pages and the API (traders.permissions): admin is staff-only,
    so this shows everything, unless a non-staff account is ever let in."""

    owner_path = "trader"   # the lookup to the owned trader; "" for the owned object itself

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if permissions.is_staff(request.user):
            return qs
        if self.owner_path:
            return permissions.scope_by_trader(qs, request.user, self.owner_path)
        return qs.filter(owner=request.user) if request.user.is_authenticated else qs.none()


class MaskedSecretsAdminMixin:
    """Secrets are write-only here, whatever the viewer's permissions. A change form renders
    them as empty password inputs; a viewer without change permission would get Django's
    read-only rendering, which prints the value, so for them the secret fields are left out
    and only the masked hints (``masked_fields``) are shown."""

    secret_fields: tuple[str, ...] = ()
    masked_fields: tuple[str, ...] = ()

    def _may_write_secrets(self, request, obj) -> bool:
        return self.has_change_permission(request, obj) if obj is not None else self.has_add_permission(request)

    def get_fields(self, request, obj=None):
        fields = [name for name in super().get_fields(request, obj)
                  if name not in self.secret_fields or self._may_write_secrets(request, obj)]
        return fields + [name for name in self.masked_fields if name not in fields]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        return readonly + [name for name in self.masked_fields if name not in readonly]


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
class CredentialAdmin(MaskedSecretsAdminMixin, OwnerScopedAdmin):
    owner_path = ""
    form = CredentialAdminForm
    secret_fields = ("api_key", "api_secret")
    masked_fields = ("masked_key",)
    list_display = ["label", "exchange", "ccxt_id", "masked_key", "sandbox", "created_at"]
    list_filter = ["exchange", "sandbox"]
    search_fields = ["label", "ccxt_id"]

    def has_module_permission(self, request):
        return request.user.is_staff

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
            obj.owner = obj.owner or request.user
        super().save_model(request, obj, form, change)
        audit.record("CREDENTIAL_CHANGED" if change else "CREDENTIAL_ADDED", actor=request.user, obj=obj,
                     payload={"exchange": obj.exchange, "label": obj.label, "key": obj.masked_key, "via": "admin"})


@admin.register(Trader)
class TraderAdmin(OwnerScopedAdmin):
    owner_path = ""
    list_display = ["name", "profile", "config_version", "mode", "status", "armed", "seed_money", "equity", "removed_at"]
    list_filter = ["mode", "status", "armed", "exchange", "profile"]
    search_fields = ["name"]
    # State changes go through intents (workers act); admin shows the books read-only.
    readonly_fields = ["profile", "config_version", "seed_money", "mode", "status", "status_reason", "armed",
                       "armed_at", "armed_by", "paper_protection_started_at", "paper_seconds", "paper_run_started_at", "cash", "realised_pnl", "fees_paid",
                       "equity", "last_tick_ts", "last_tick_at", "created_by", "created_at", "removed_at",
                       "exchange", "credential"]

    def has_add_permission(self, request):
        return False  # created on the TRADERS page (validation, audit, safety state)

    def has_delete_permission(self, request, obj=None):
        return False  # REMOVE keeps history


@admin.register(Intent)
class IntentAdmin(OwnerScopedAdmin, ReadOnlyAdmin):
    list_display = ["id", "kind", "trader", "status", "result", "created_by", "created_at", "processed_at"]
    list_filter = ["kind", "status"]
    search_fields = ["trader__name", "result"]


@admin.register(Event)
class EventAdmin(OwnerScopedAdmin, ReadOnlyAdmin):
    list_display = ["id", "ts", "trader", "level", "kind", "message"]
    list_filter = ["level", "kind"]
    search_fields = ["message", "trader__name", "kind"]
    date_hierarchy = "ts"


@admin.register(EquitySnapshot)
class EquitySnapshotAdmin(OwnerScopedAdmin, ReadOnlyAdmin):
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


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    """Signed (seq, hash) of the audit chain's tip (traders.audit.checkpoint)."""

    list_display = ["created_at", "seq", "short_hash", "reason", "key_id"]
    list_filter = ["reason"]
    date_hierarchy = "created_at"

    @admin.display(description="hash")
    def short_hash(self, obj):
        return obj.hash[:12]


from traders import admin_alerts  # noqa: E402,F401  (registers AlertSettings and AlertOutbox)
