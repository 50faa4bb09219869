"""Traders, their credentials, the intents the web records, the action log and the audit log."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from quantweb.db import ZERO, money_field
from traders.fields import EncryptedTextField


class Exchange(models.TextChoices):
    SIM = "sim", "Simulated exchange"
    UPBIT = "upbit", "Upbit (KRW spot)"
    CCXT = "ccxt", "ccxt exchange"
    REPLAY = "replay", "Replay of candle files"


class Credential(models.Model):
    """Exchange API keys, encrypted at rest. After saving, only the masked hint is ever shown."""

    exchange = models.CharField(max_length=16, choices=Exchange.choices)
    ccxt_id = models.CharField(
        max_length=32, blank=True, help_text="ccxt exchange id (binance, bybit...) when exchange is ccxt"
    )
    label = models.CharField(max_length=80)
    api_key = EncryptedTextField()
    api_secret = EncryptedTextField()
    key_hint = models.CharField(max_length=16, editable=False, help_text="last 4 characters of the key")
    sandbox = models.BooleanField(default=False, help_text="use the venue's testnet where ccxt offers one")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    # Who may use it (traders.permissions): non-staff see and pick their own credentials only.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="credentials")

    class Meta:
        ordering = ["exchange", "label"]
        constraints = [models.UniqueConstraint(fields=["exchange", "label"], name="credential_unique_label")]

    def __str__(self) -> str:
        return f"{self.label} ({self.get_exchange_display()}, {self.masked_key})"

    def __repr__(self) -> str:
        return f"<Credential {self.pk} {self.exchange} {self.label!r} key={self.masked_key}>"

    def save(self, *args, **kwargs) -> None:
        if self.api_key:
            self.key_hint = str(self.api_key)[-4:]
        super().save(*args, **kwargs)

    @property
    def masked_key(self) -> str:
        return f"****{self.key_hint}" if self.key_hint else "****"


class TraderMode(models.TextChoices):
    PAPER = "PAPER", "Paper"
    LIVE = "LIVE", "Live"


class TraderStatus(models.TextChoices):
    STOPPED = "stopped", "Stopped"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused by guard"
    ERROR = "error", "Error"


class TraderQuerySet(models.QuerySet):
    def active(self) -> TraderQuerySet:
        return self.filter(removed_at__isnull=True)

    def running(self) -> TraderQuerySet:
        return self.active().filter(status__in=[TraderStatus.RUNNING, TraderStatus.PAUSED])


class Trader(models.Model):
    """One automated trader with its own seed money and books [SPEC 2].

    The config a trader runs with is the ConfigVersion it was created with; a running trader's
    config never changes (a new config means a new trader).
    """

    name = models.CharField(max_length=80)
    profile = models.ForeignKey("strategies.StrategyProfile", on_delete=models.PROTECT, related_name="traders")
    config_version = models.ForeignKey("strategies.ConfigVersion", on_delete=models.PROTECT, related_name="traders")
    seed_money = money_field()
    exchange = models.CharField(max_length=16, choices=Exchange.choices, default=Exchange.SIM)
    credential = models.ForeignKey(Credential, null=True, blank=True, on_delete=models.PROTECT, related_name="traders")
    mode = models.CharField(max_length=8, choices=TraderMode.choices, default=TraderMode.PAPER)
    status = models.CharField(max_length=16, choices=TraderStatus.choices, default=TraderStatus.STOPPED)
    status_reason = models.CharField(max_length=200, blank=True)
    armed = models.BooleanField(default=False)
    armed_at = models.DateTimeField(null=True, blank=True)
    armed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    paper_protection_started_at = models.DateTimeField(null=True, blank=True, help_text="first PAPER start")
    # Paper protection [EXE-4] counts time spent running in PAPER, not wall time: finished PAPER
    # runs add to paper_seconds; paper_run_started_at is the start of the current one (set
    # exactly while the trader runs in PAPER; save() keeps the clock, see _tick_paper_clock).
    paper_seconds = models.PositiveBigIntegerField(default=0, help_text="seconds run in PAPER (finished runs)")
    paper_run_started_at = models.DateTimeField(null=True, blank=True, help_text="start of the current PAPER run")
    # Per-trader books (several traders may share one exchange account).
    cash = money_field(default=ZERO)
    realised_pnl = money_field(default=ZERO)
    fees_paid = money_field(default=ZERO)
    equity = money_field(default=ZERO, help_text="cash + marked positions at the last tick")
    last_tick_ts = models.BigIntegerField(null=True, blank=True, help_text="bar-open epoch seconds of the last tick")
    scan_state = models.JSONField(default=dict, blank=True, help_text="score EMA per market, carried across ticks [SC-3]")
    last_tick_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    removed_at = models.DateTimeField(null=True, blank=True)
    # Who may see and act on it (traders.permissions): non-staff their own only; staff every trader.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="traders")

    objects = TraderQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["name"], condition=models.Q(removed_at__isnull=True), name="trader_unique_active_name"),
            models.CheckConstraint(condition=models.Q(seed_money__gt=0), name="trader_seed_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        update_fields = self._tick_paper_clock(kwargs.get("update_fields"))
        if update_fields is not None:
            kwargs["update_fields"] = update_fields
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("trader-detail", args=[self.pk])

    @property
    def profit(self):
        return self.equity - self.seed_money

    @property
    def return_pct(self) -> float:
        if not self.seed_money:
            return 0.0
        return float((self.equity - self.seed_money) / self.seed_money * 100)

    def paper_protection_passed(self, now=None) -> bool:
        """[EXE-4]: LIVE needs 24 h of paper trading with this strategy first: time spent running
        (RUNNING or PAUSED by the guard) in PAPER mode, summed over runs; stopped time and LIVE
        time do not count."""
        hours = settings.QUANTWEB_PAPER_PROTECTION_HOURS
        return self.paper_running_seconds(now) >= timedelta(hours=hours).total_seconds()

    def paper_running_seconds(self, now=None) -> float:
        """Accumulated PAPER running time, the current run included."""
        total = float(self.paper_seconds or 0)
        if self.paper_run_started_at is not None and self._runs_in_paper():
            total += max(0.0, ((now or timezone.now()) - self.paper_run_started_at).total_seconds())
        return total

    def _runs_in_paper(self) -> bool:
        return (self.mode == TraderMode.PAPER and self.status in (TraderStatus.RUNNING, TraderStatus.PAUSED)
                and self.removed_at is None)

    def _tick_paper_clock(self, update_fields) -> list | None:
        """Keep paper_run_started_at set exactly while the trader runs in PAPER: a run that ends
        (stop, error, mode change, removal) adds its seconds to paper_seconds. Called by save()
        whenever it writes the status, the mode or removed_at, whichever code path changed them."""
        watched = {"status", "mode", "removed_at"}
        if update_fields is not None and not watched & set(update_fields):
            return update_fields
        now, changed = timezone.now(), False
        if self._runs_in_paper() and self.paper_run_started_at is None:
            self.paper_run_started_at, changed = now, True
        elif not self._runs_in_paper() and self.paper_run_started_at is not None:
            elapsed = max(0, int((now - self.paper_run_started_at).total_seconds()))
            self.paper_seconds, self.paper_run_started_at, changed = (self.paper_seconds or 0) + elapsed, None, True
        if changed and update_fields is not None:
            update_fields = [*update_fields, *(f for f in ("paper_seconds", "paper_run_started_at")
                                               if f not in update_fields)]
        return update_fields


class IntentKind(models.TextChoices):
    START = "START", "Start"
    STOP = "STOP", "Stop"
    REMOVE = "REMOVE", "Remove"
    SET_MODE = "SET_MODE", "Set run mode"
    ARM = "ARM", "Arm LIVE"
    DISARM = "DISARM", "Disarm"
    LIQUIDATE = "LIQUIDATE", "Liquidate positions"
    KILL_ALL = "KILL_ALL", "Master kill switch"
    RELEASE_KILL = "RELEASE_KILL", "Release master kill switch"
    EMERGENCY_STOP = "EMERGENCY_STOP", "Emergency stop and liquidate all"
    TEST_CREDENTIAL = "TEST_CREDENTIAL", "Test a credential's connection"


class IntentStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DONE = "done", "Done"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"           # kept failing; ``result`` says why (traders.services)


class Intent(models.Model):
    """What an operator asked for. The web records it; a worker carries it out [RT-1]."""

    trader = models.ForeignKey(Trader, null=True, blank=True, on_delete=models.CASCADE, related_name="intents")
    kind = models.CharField(max_length=20, choices=IntentKind.choices)
    payload = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=IntentStatus.choices, default=IntentStatus.PENDING)
    result = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Retries (traders.services.process_intents): claims so far, and when it may be claimed next
    # (a lease while applying, the back-off after a failure).
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["status", "id"])]

    def __str__(self) -> str:
        target = self.trader.name if self.trader_id else "all traders"
        return f"{self.kind} {target} ({self.status})"


class EventLevel(models.TextChoices):
    INFO = "INFO", "Info"
    WARN = "WARN", "Warning"
    CRITICAL = "CRITICAL", "Critical"


class Event(models.Model):
    """The action log: what a trader (or the platform) did and why, with a reason code.

    Rows are written in the same transaction as the change they describe and relayed to
    browsers afterwards (see traders.realtime).
    """

    trader = models.ForeignKey(Trader, null=True, blank=True, on_delete=models.CASCADE, related_name="events")
    ts = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    kind = models.CharField(max_length=40, db_index=True)
    message = models.CharField(max_length=500)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "-id"])]

    def __str__(self) -> str:
        return f"[{self.level}] {self.kind}: {self.message}"

    def as_payload(self) -> dict:
        """JSON-safe form for the channel layer and the API."""
        return {
            "id": self.pk,
            "trader_id": self.trader_id,
            "trader": self.trader.name if self.trader_id else None,
            "ts": self.ts.isoformat(),
            "level": self.level,
            "kind": self.kind,
            "message": self.message,
            "data": self.data,
        }


class AuditHead(models.Model):
    """A single row holding the chain's tip; locking it serialises appends on every database."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)

    def __str__(self) -> str:
        return f"audit head #{self.seq}"


class AuditLog(models.Model):
    """Append-only, hash-chained record of every signal, order, fill, position change, config
    change, login and operator action [DM-2]. ``traders.audit.record`` is the only writer."""

    seq = models.BigIntegerField(unique=True)
    ts = models.DateTimeField(db_index=True)
    actor = models.CharField(max_length=150, help_text="username, or 'system' for workers")
    kind = models.CharField(max_length=40, db_index=True)
    trader_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    object_type = models.CharField(max_length=40, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    payload = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} by {self.actor}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("audit rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit rows are append-only")


class EquitySnapshot(models.Model):
    """A trader's marked equity at one tick: the equity curve, the drawdown and the profit chart."""

    trader = models.ForeignKey(Trader, on_delete=models.CASCADE, related_name="equity_snapshots")
    ts = models.BigIntegerField(help_text="bar-open epoch seconds")
    equity = money_field()
    cash = money_field()
    positions_value = money_field(default=ZERO)
    seed_money = money_field()

    class Meta:
        ordering = ["trader", "ts"]
        constraints = [models.UniqueConstraint(fields=["trader", "ts"], name="equity_unique_tick")]

    def __str__(self) -> str:
        return f"{self.trader_id} @ {self.ts}: {self.equity}"

    @property
    def return_pct(self):
        return (self.equity - self.seed_money) / self.seed_money * 100


from traders.models_alerts import AlertOutbox, AlertSettings  # noqa: E402,F401
from traders.models_audit import AuditCheckpoint  # noqa: E402,F401
from traders.models_runbook import *  # noqa: E402,F401,F403
