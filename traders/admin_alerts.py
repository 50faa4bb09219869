"""Admin for the alert settings (token write-only) and the alert outbox (read-only)."""

from __future__ import annotations

from django.contrib import admin

from traders import audit
from traders.admin import MaskedSecretsAdminMixin, ReadOnlyAdmin
from traders.models_alerts import AlertOutbox, AlertSettings
from traders.views_alerts import AUDITED_FIELDS, AlertSettingsForm


@admin.register(AlertSettings)
class AlertSettingsAdmin(MaskedSecretsAdminMixin, admin.ModelAdmin):
    form = AlertSettingsForm
    secret_fields = ("token", "clear_token")   # write-only; viewers see masked_token
    list_display = ["__str__", "enabled", "min_level", "chat_id", "masked_token", "rate_per_minute", "dedup_seconds",
                    "updated_at"]
    readonly_fields = ["masked_token", "rate_limited_until", "updated_by", "updated_at"]
    fields = ["enabled", "min_level", "chat_id", "token", "clear_token", "masked_token", "rate_per_minute",
              "dedup_seconds", "muted_kinds", "rate_limited_until", "updated_by", "updated_at"]

    def has_module_permission(self, request):
        return request.user.is_staff

    def has_add_permission(self, request):
        return not AlertSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        before = AlertSettings.load()
        obj.updated_by = request.user
        super().save_model(request, obj, form, change)
        changes = {name: [getattr(before, name), getattr(obj, name)] for name in AUDITED_FIELDS
                   if getattr(before, name) != getattr(obj, name)}
        if form.token_change():
            changes["token"] = form.token_change()
        audit.record("ALERT_SETTINGS_CHANGED", actor=request.user, obj=obj,
                     payload={"changes": changes, "token": obj.masked_token or obj.token_source or "none",
                              "via": "admin"})


@admin.register(AlertOutbox)
class AlertOutboxAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "level", "kind", "subject", "occurrences", "is_repeat", "status", "attempts",
                    "next_attempt_at", "sent_at", "last_error"]
    list_filter = ["status", "level", "kind"]
    search_fields = ["kind", "message", "subject"]
    date_hierarchy = "created_at"
