"""Stored regime evaluations [RG-2]."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from regime.engine.types import RegimeLabel


class MarketRegime(models.Model):
    exchange = models.CharField(max_length=16)
    bar_ts = models.BigIntegerField(help_text="bar-open epoch seconds evaluated")
    label = models.CharField(max_length=20, choices=[(x.value, x.value) for x in RegimeLabel])
    regime_score = models.FloatField()
    confidence = models.FloatField()
    inputs = models.JSONField(help_text="the six inputs [RG-1]")
    true_label = models.CharField(max_length=20, blank=True, help_text="sim exchange only: the simulator's regime")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-bar_ts"]
        constraints = [models.UniqueConstraint(fields=["exchange", "bar_ts"], name="regime_unique_bar")]

    def __str__(self) -> str:
        return f"{self.label} {self.regime_score:.0f} @ {self.bar_ts}"


class RegimeThresholdsVersion(models.Model):
    """One immutable version of the regime thresholds [RG-2] (``RegimeThresholds`` as JSON).

    The highest version is in force for every live scan and backtest; with no row the code
    defaults (``regime.engine.classifier.RegimeThresholds``) apply. Edits never change a row:
    they add the next version with the diff against the previous one (like a profile's
    ``strategies.models.ConfigVersion``) and an audit row ``REGIME_THRESHOLDS_CHANGED``."""

    version = models.PositiveIntegerField(unique=True)
    params = models.JSONField(help_text="every RegimeThresholds field; ramps as [zero_at, one_at]")
    diff = models.JSONField(default=dict, blank=True, help_text="{field: [old, new]} against the previous version")
    comment = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]
        verbose_name = "regime thresholds version"

    def __str__(self) -> str:
        return f"regime thresholds v{self.version}"
