"""Runtime-guard state per trader and the master kill switch [RK-4]. Both survive restarts."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class TradingState(models.TextChoices):
    ACTIVE = "ACTIVE", "Active"
    HALTED = "HALTED", "Halted (no new entries)"
    REDUCING = "REDUCING", "Reducing positions"


class TraderSafetyState(models.Model):
    trader = models.OneToOneField("traders.Trader", on_delete=models.CASCADE, related_name="safety")
    trading_state = models.CharField(max_length=10, choices=TradingState.choices, default=TradingState.ACTIVE)
    reason = models.CharField(max_length=300, blank=True)
    trips = models.JSONField(default=list, blank=True, help_text="active trips: [{code, detail, severity, since}]")
    state = models.JSONField(default=dict, blank=True, help_text="the guard engine's serialised state")
    peak_equity = models.DecimalField(max_digits=28, decimal_places=10, default=0)
    consecutive_losses = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.trader} {self.trading_state}"


class KillSwitch(models.Model):
    """Singleton (pk=1): when engaged, no trader opens a new position."""

    engaged = models.BooleanField(default=False)
    reason = models.CharField(max_length=300, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    changed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "kill switch ENGAGED" if self.engaged else "kill switch released"

    @classmethod
    def get(cls) -> KillSwitch:
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj
