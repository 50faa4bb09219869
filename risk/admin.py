from django.contrib import admin

from risk.models import KillSwitch, TraderSafetyState
from traders.admin import ReadOnlyAdmin


@admin.register(TraderSafetyState)
class TraderSafetyStateAdmin(ReadOnlyAdmin):
    list_display = ["trader", "trading_state", "reason", "consecutive_losses", "peak_equity", "updated_at"]
    list_filter = ["trading_state"]


@admin.register(KillSwitch)
class KillSwitchAdmin(ReadOnlyAdmin):
    """Engaged and released from the DASHBOARD (an intent the worker applies), shown here."""

    list_display = ["engaged", "reason", "changed_by", "changed_at"]
