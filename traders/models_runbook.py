"""Runbook records [AL-3] (imported by traders.models): the daily self-test's results and the
per-exchange tick cadence after a venue rate-limited us. See docs/runbook.md."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

__all__ = ["ExchangeBackoff", "SelfTestRun", "SelfTestStatus"]


class SelfTestStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class SelfTestRun(models.Model):
    """One run of the self-test (daily at 00:00 UTC, or ``manage.py selftest``).

    ``checks`` is a list of ``{"name", "ok", "status", "detail", "data"}`` in the order they ran:
    ``data_freshness`` (per exchange with running traders), ``sim_order`` (a test order through
    the sim adapter and the fill model, never a live venue) and ``alert_channel``. ``status`` of
    a check is ``ok``, ``failed`` or ``skipped`` (e.g. ``not configured``); a skipped check does
    not fail the run.
    """

    trigger = models.CharField(max_length=16, default="schedule", help_text="schedule | manual")
    status = models.CharField(max_length=8, choices=SelfTestStatus.choices, default=SelfTestStatus.RUNNING)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    checks = models.JSONField(default=list, blank=True)
    summary = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "self-test run"

    def __str__(self) -> str:
        return f"self-test {self.started_at:%Y-%m-%d %H:%M} UTC: {self.status}"

    @property
    def ok(self) -> bool:
        return self.status == SelfTestStatus.PASSED

    def result_of(self, name: str) -> dict | None:
        return next((c for c in self.checks if c.get("name") == name), None)


class ExchangeBackoff(models.Model):
    """How often the dispatcher ticks the traders of one exchange after the venue (or our own
    rate limiter) said "too many requests".

    ``factor`` multiplies the base cadence (1 = every bar). A report doubles it (at most once per
    widened interval, capped); every quiet period without a report halves it again. A ban
    (HTTP 418) also stops ticks until ``banned_until``. One row per exchange that was ever
    rate-limited; exchanges without a row tick every bar.
    """

    exchange = models.CharField(max_length=16, unique=True)
    factor = models.PositiveSmallIntegerField(default=1)
    reports = models.PositiveIntegerField(default=0, help_text="rate-limit and ban reports, all time")
    last_report_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True, help_text="when the factor last changed")
    banned_until = models.DateTimeField(null=True, blank=True)
    last_dispatch_at = models.DateTimeField(null=True, blank=True, help_text="ticks last enqueued")

    class Meta:
        ordering = ["exchange"]
        verbose_name = "exchange back-off"

    def __str__(self) -> str:
        return f"{self.exchange}: every {self.factor} bar(s)"
