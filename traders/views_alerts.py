"""CONFIG page: alert settings and the test alert [UI-4, AL-1].

Staff only. The bot token is write-only: the form never renders it, an empty field keeps the
stored token, and after saving only its last four characters are shown. Every change is
audited without the token's value. Views only write rows; a worker talks to Telegram [RT-1].
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from traders import alerts, audit, services
from traders.models_alerts import AlertSettings

AUDITED_FIELDS = ["enabled", "min_level", "chat_id", "rate_per_minute", "dedup_seconds", "muted_kinds"]


class AlertSettingsForm(forms.ModelForm):
    token = forms.CharField(
        required=False, strip=True, label="Bot token",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="write-only; leave empty to keep the current token",
    )
    clear_token = forms.BooleanField(required=False, label="Remove the saved token (use TELEGRAM_BOT_TOKEN)")

    class Meta:
        model = AlertSettings
        fields = ["enabled", "min_level", "chat_id", "token", "rate_per_minute", "dedup_seconds", "muted_kinds"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.pop("token", None)   # never send the stored token back, not even masked
        self._stored_token = self.instance.token or ""

    def clean_token(self) -> str:
        token = self.cleaned_data.get("token") or ""
        if token and (len(token) < 20 or ":" not in token or any(c.isspace() for c in token)):
            raise forms.ValidationError("That does not look like a bot token (digits:secret from @BotFather).")
        return token

    def clean_muted_kinds(self) -> str:
        kinds = [k.strip().upper() for k in self.cleaned_data.get("muted_kinds", "").split(",") if k.strip()]
        return ",".join(dict.fromkeys(kinds))

    def clean(self):
        data = super().clean()
        if data.get("clear_token"):
            data["token"] = ""
        elif not data.get("token"):
            data["token"] = self._stored_token
        return data

    def token_change(self) -> str:
        if self.cleaned_data.get("clear_token"):
            return "removed" if self._stored_token else ""
        return "replaced" if self.cleaned_data["token"] != self._stored_token else ""


def _back() -> str:
    return reverse("config") + "#alert-settings"


def _label(form: forms.Form, name: str) -> str:
    field = form.fields.get(name)
    return str(field.label or name) if field is not None else "form"


def _require_staff(request) -> None:
    if not services.can_manage_live(request.user):
        raise PermissionDenied("Only staff may change the alert settings.")


@require_POST
def alert_settings(request):
    _require_staff(request)
    current = AlertSettings.load()
    before = {name: getattr(current, name) for name in AUDITED_FIELDS}
    form = AlertSettingsForm(request.POST, instance=current)
    if not form.is_valid():
        problems = "; ".join(f"{_label(form, name)}: {' '.join(errs)}" for name, errs in form.errors.items())
        messages.error(request, f"Alert settings not saved. {problems}")
        return redirect(_back())
    with transaction.atomic():
        row = form.save(commit=False)
        row.updated_by = request.user
        row.save()
        after = {name: getattr(row, name) for name in AUDITED_FIELDS}
        changes = {name: [before[name], after[name]] for name in AUDITED_FIELDS if before[name] != after[name]}
        if form.token_change():
            changes["token"] = form.token_change()
        audit.record("ALERT_SETTINGS_CHANGED", actor=request.user, obj=row,
                     payload={"changes": changes, "token": row.masked_token or row.token_source or "none"})
    messages.success(request, "Alert settings saved." + (" The token is no longer shown." if form.token_change() == "replaced" else ""))
    return redirect(_back())


@require_POST
def alert_test(request):
    _require_staff(request)
    cfg = AlertSettings.load()
    if not cfg.configured:
        messages.error(request, "Set a bot token and a chat id first (or TELEGRAM_BOT_TOKEN / TELEGRAM_CHAT_ID).")
        return redirect(_back())
    with transaction.atomic():
        row = alerts.enqueue_test(request.user)
        audit.record("ALERT_TEST_REQUESTED", actor=request.user, obj=row, payload={"chat_id": cfg.effective_chat_id})
    messages.success(request, "Test alert queued; a worker sends it within a minute.")
    return redirect(_back())


def panel_context(user) -> dict:
    """What the CONFIG page's alert section shows (used by the ``alert_settings_panel`` tag)."""
    cfg = AlertSettings.load()
    return {
        "alert_cfg": cfg,
        "alert_form": AlertSettingsForm(instance=cfg),
        "alert_status": alerts.channel_status(),
        "can_manage_alerts": services.can_manage_live(user),
    }
