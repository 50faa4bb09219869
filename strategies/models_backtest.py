"""Stored backtest runs [BT-4] (imported by strategies.models).

The web records a run (QUEUED) and enqueues ``strategies.tasks_backtest.run_backtest``; a worker
claims it (RUNNING), reports progress and stores the result (DONE) or the reason it failed
(FAILED). ``options`` is the validated request (``strategies.services_backtest``), ``result``
the runner's JSON result with the equity and drawdown curves thinned for charts.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

__all__ = ["BacktestRun", "BacktestStatus"]

STALE_AFTER_SECONDS = 900
"""A RUNNING run with no progress for this long is shown as stalled (the worker may be gone).
``settings.QUANTWEB_BACKTEST_STALE_SECONDS`` overrides it."""


class BacktestStatus(models.TextChoices):
    QUEUED = "QUEUED", "queued"
    RUNNING = "RUNNING", "running"
    DONE = "DONE", "done"
    FAILED = "FAILED", "failed"


class BacktestRun(models.Model):
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="backtest_runs")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    strategy = models.CharField(max_length=40)
    options = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=BacktestStatus.choices, default=BacktestStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"]), models.Index(fields=["strategy", "created_at"])]

    def __str__(self) -> str:
        return f"backtest #{self.pk} {self.strategy} {self.status}"

    def get_absolute_url(self) -> str:
        return reverse("backtest-detail", args=[self.pk])

    @property
    def finished(self) -> bool:
        return self.status in (BacktestStatus.DONE, BacktestStatus.FAILED)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()

    def is_stalled(self, now=None) -> bool:
        """RUNNING without a progress report for ``STALE_AFTER_SECONDS``: the worker may have died."""
        if self.status != BacktestStatus.RUNNING:
            return False
        last = self.heartbeat_at or self.started_at
        limit = getattr(settings, "QUANTWEB_BACKTEST_STALE_SECONDS", STALE_AFTER_SECONDS)
        return last is not None and (now or timezone.now()) - last > timedelta(seconds=limit)

    @property
    def report(self) -> dict:
        return (self.result or {}).get("report") or {}
