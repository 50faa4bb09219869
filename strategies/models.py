"""Strategy profiles and their versions, scans, features, signals and the learning layer's rows."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ProfileKey(models.TextChoices):
    SAFETY_FIRST = "SAFETY_FIRST", "SAFETY FIRST"
    STANDARD = "STANDARD", "STANDARD"
    PROFIT_FIRST = "PROFIT_FIRST", "PROFIT FIRST"
    CRAZY = "CRAZY", "CRAZY"
    AI_MODE = "AI_MODE", "AI MODE"


class StrategyProfile(models.Model):
    """One of the five risk profiles [SPEC 7]. ``params`` is validated by risk.engine.profiles;
    every change goes through strategies.services.update_profile and leaves a ConfigVersion."""

    key = models.CharField(max_length=20, choices=ProfileKey.choices, unique=True)
    name = models.CharField(max_length=40)
    description = models.TextField(blank=True)
    params = models.JSONField(default=dict)
    current_version = models.ForeignKey(
        "ConfigVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class ConfigVersion(models.Model):
    """An immutable snapshot of a profile's parameters. Traders point at the one they were
    created with."""

    profile = models.ForeignKey(StrategyProfile, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    params = models.JSONField()
    diff = models.JSONField(default=dict, blank=True, help_text="{param: [old, new]} against the previous version")
    comment = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["profile", "-version"]
        constraints = [models.UniqueConstraint(fields=["profile", "version"], name="config_version_unique")]

    def __str__(self) -> str:
        return f"{self.profile.name} v{self.version}"


class ScanRun(models.Model):
    """One tick's scan of the market for one trader [PL-2], with what is needed to reproduce it."""

    trader = models.ForeignKey("traders.Trader", null=True, blank=True, on_delete=models.CASCADE, related_name="scan_runs")
    exchange = models.CharField(max_length=16)
    bar_ts = models.BigIntegerField(help_text="bar-open epoch seconds the scan decided on")
    created_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(default=0)
    n_markets = models.PositiveIntegerField(default=0)
    n_candidates = models.PositiveIntegerField(default=0)
    regime = models.ForeignKey("regime.MarketRegime", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    inputs = models.JSONField(default=dict, help_text="input window (symbols, bar range, params) to recompute the scan")
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "-bar_ts"])]

    def __str__(self) -> str:
        return f"scan {self.pk} @ {self.bar_ts}"


class FeatureSnapshot(models.Model):
    """Features of one market at one scan [AI-1]; labels are filled once the future bars exist."""

    scan_run = models.ForeignKey(ScanRun, on_delete=models.CASCADE, related_name="features")
    symbol = models.CharField(max_length=32)
    bar_ts = models.BigIntegerField()
    price = models.FloatField()
    features = models.JSONField(default=dict)
    label_ret_60m = models.FloatField(null=True, blank=True)
    label_ret_240m = models.FloatField(null=True, blank=True)
    label_mfe_240m = models.FloatField(null=True, blank=True)
    label_mae_240m = models.FloatField(null=True, blank=True)
    label_dd_240m = models.FloatField(null=True, blank=True)
    labelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["labelled_at", "bar_ts"])]

    def __str__(self) -> str:
        return f"{self.symbol} @ {self.bar_ts}"


class Signal(models.Model):
    """The aggregated verdict on one market at one tick, with every reason [SPEC 2, PL-2]."""

    class Action(models.TextChoices):
        ENTER = "ENTER"
        EXIT = "EXIT"
        HOLD = "HOLD"
        SKIP = "SKIP"

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="signals")
    scan_run = models.ForeignKey(ScanRun, null=True, blank=True, on_delete=models.CASCADE, related_name="signals")
    symbol = models.CharField(max_length=32)
    bar_ts = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    base_score = models.FloatField()
    total_score = models.FloatField()
    final_score = models.FloatField()
    module_scores = models.JSONField(default=dict)
    reason_codes = models.JSONField(default=list)
    raw_metrics = models.JSONField(default=dict, blank=True)
    regime = models.CharField(max_length=20, blank=True)
    direction = models.SmallIntegerField(default=0)
    action = models.CharField(max_length=8, choices=Action.choices)
    checks = models.JSONField(default=list, blank=True, help_text="pre-trade checks: [{code, passed, detail}]")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "-id"]), models.Index(fields=["trader", "symbol", "-bar_ts"])]

    def __str__(self) -> str:
        return f"{self.symbol} {self.action} {self.final_score:.1f}"


from strategies.models_learning import *  # noqa: E402,F401,F403,I001
from strategies.models_backtest import *  # noqa: E402,F401,F403
