"""Stored regime evaluations [RG-2]."""

from __future__ import annotations

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
