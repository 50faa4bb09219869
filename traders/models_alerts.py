"""Alert channel settings and the alert outbox [AL-1].

``AlertSettings`` is a singleton row (pk 1) edited on the CONFIG page and in admin. An
``AlertOutbox`` row is written in the same transaction as the ``Event`` it announces and
delivered later by a worker (``traders.alerts.drain``), so a slow or dead Telegram never delays
a tick and an alert exists exactly when its event does. See docs/alerts-and-metrics.md.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from traders.fields import EncryptedTextField
from traders.models import Event, EventLevel, Trader

LEVEL_RANK = {EventLevel.INFO: 10, EventLevel.WARN: 20, EventLevel.CRITICAL: 30}


class AlertSettings(models.Model):
    """The Telegram channel. Empty ``token`` / ``chat_id`` fall back to the environment
    (``TELEGRAM_BOT_TOKEN`` / ``TELEGRAM_CHAT_ID``)."""

    enabled = models.BooleanField(default=True, help_text="send alerts for events (test alerts are always sent)")
    min_level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.WARN,
                                 help_text="events below this level are not sent")
    chat_id = models.CharField(max_length=64, blank=True, help_text="empty: TELEGRAM_CHAT_ID from the environment")
    token = EncryptedTextField(blank=True, help_text="bot token, encrypted; empty: TELEGRAM_BOT_TOKEN")
    token_hint = models.CharField(max_length=8, blank=True, editable=False, help_text="last 4 characters")
    rate_per_minute = models.PositiveSmallIntegerField(
        default=20, validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="messages per chat in any 60 s (CRITICAL is never held back)")
    dedup_seconds = models.PositiveIntegerField(
        default=300, validators=[MaxValueValidator(86_400)],
        help_text="identical alerts (kind, trader, message) within this window become one message with a count")
    muted_kinds = models.CharField(max_length=300, blank=True, default="TICK",
                                   help_text="comma-separated event kinds that never alert")
    rate_limited_until = models.DateTimeField(null=True, blank=True, editable=False,
                                              help_text="Telegram asked us to wait (429) until then")
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "alert settings"
        verbose_name_plural = "alert settings"

    def __str__(self) -> str:
        return f"alerts {'on' if self.enabled else 'off'} from {self.min_level}"

    def __repr__(self) -> str:
        return f"<AlertSettings enabled={self.enabled} min_level={self.min_level} token={self.masked_token}>"

    def save(self, *args, **kwargs) -> None:
        # Singleton by primary key (a CHECK on the auto-increment id is refused by MariaDB).
        self.pk = 1
        self.token_hint = str(self.token)[-4:] if self.token else ""
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> AlertSettings:
        """The stored row, or an unsaved row with the defaults (nothing is written)."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    @property
    def masked_token(self) -> str:
        return f"****{self.token_hint}" if self.token_hint else ""

    @property
    def effective_token(self) -> str:
        return str(self.token or settings.TELEGRAM_BOT_TOKEN or "")

    @property
    def effective_chat_id(self) -> str:
        return str(self.chat_id or settings.TELEGRAM_CHAT_ID or "")

    @property
    def configured(self) -> bool:
        return bool(self.effective_token and self.effective_chat_id)

    @property
    def token_source(self) -> str:
        if self.token:
            return "saved"
        return "environment" if settings.TELEGRAM_BOT_TOKEN else ""

    def muted(self) -> frozenset[str]:
        return frozenset(k.strip().upper() for k in self.muted_kinds.split(",") if k.strip())

    def wants(self, level: str, kind: str) -> bool:
        """Whether an event of this level and kind becomes an alert."""
        return (self.enabled and self.configured and LEVEL_RANK.get(level, 0) >= LEVEL_RANK[self.min_level]
                and kind.upper() not in self.muted())


class AlertStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"
    EXPIRED = "expired", "Expired (too old to matter)"


class AlertOutbox(models.Model):
    """One message to send. Identical alerts inside the dedup window fold into one row
    (``occurrences``); a repeat after the row was sent becomes a follow-up row due when the
    window closes (``is_repeat``)."""

    event = models.ForeignKey(Event, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    trader = models.ForeignKey(Trader, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    subject = models.CharField(max_length=80, blank=True, help_text="trader name, or empty for the platform")
    level = models.CharField(max_length=8, choices=EventLevel.choices)
    kind = models.CharField(max_length=40)
    message = models.CharField(max_length=500)
    dedup_key = models.CharField(max_length=40, blank=True, help_text="empty: never folded (test alerts)")
    occurrences = models.PositiveIntegerField(default=1)
    is_repeat = models.BooleanField(default=False)
    window_until = models.DateTimeField(help_text="identical alerts until then fold into this row")
    status = models.CharField(max_length=8, choices=AlertStatus.choices, default=AlertStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True, help_text="a worker is sending it until then")
    last_error = models.CharField(max_length=300, blank=True)
    chat_id = models.CharField(max_length=64, blank=True, help_text="the chat it was delivered to")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "alert"
        verbose_name_plural = "alert outbox"
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="alert_due"),
            models.Index(fields=["dedup_key", "window_until"], name="alert_dedup"),
            models.Index(fields=["chat_id", "sent_at"], name="alert_rate"),
        ]

    def __str__(self) -> str:
        return f"[{self.level}] {self.kind} ({self.status})"
