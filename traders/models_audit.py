"""Signed checkpoints of the audit chain [DM-2, issue 21 #7].

The hash chain (``AuditLog``) shows that rows were changed, unless someone with database access
recomputes every hash after the change, deletes the newest rows and the head with them, or
wipes the table. A checkpoint pins the chain's tip, (seq, hash), with an HMAC-SHA256 signature
under ``AUDIT_HMAC_KEY``, a key the database never holds (and not SECRET_KEY). ``verify_audit``
then requires every checkpointed row to exist with the signed hash. Written by
``traders.audit.scheduled_checkpoint`` (a django-q2 schedule) and on every export.
"""

from __future__ import annotations

from django.db import models


class AuditCheckpoint(models.Model):
    """One signed (seq, hash) of the chain's tip. Append-only, like the rows it vouches for."""

    class Reason(models.TextChoices):
        SCHEDULE = "schedule", "Scheduled"
        EXPORT = "export", "Audit export"
        MANUAL = "manual", "Manual (verify_audit --checkpoint)"

    created_at = models.DateTimeField(db_index=True)
    seq = models.BigIntegerField(help_text="the audit row the checkpoint pins (0: empty log)")
    hash = models.CharField(max_length=64, help_text="that row's hash")
    reason = models.CharField(max_length=10, choices=Reason.choices)
    key_id = models.CharField(max_length=16, help_text="fingerprint of the signing key (not the key)")
    signature = models.CharField(max_length=64, help_text="HMAC-SHA256 over seq, hash, time and reason")

    class Meta:
        ordering = ["seq", "id"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq} ({self.reason})"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("audit checkpoints are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit checkpoints are append-only")
