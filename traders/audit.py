"""The append-only, hash-chained audit log [DM-2].

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's canonical JSON, so
changing or deleting any row breaks every hash after it. Appends are serialised by locking the
single ``AuditHead`` row, which also remembers the tip: deleting the newest rows is detected too.
``record`` is the only writer; call it inside the transaction that makes the change it records.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from traders.models import AuditHead, AuditLog

GENESIS = "0" * 64
EXPORT_FIELDS = ["seq", "ts", "actor", "kind", "trader_id", "object_type", "object_id", "payload", "prev_hash", "hash"]


def _json_default(value):
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def normalise_payload(payload: dict | None) -> dict:
    """JSON-safe copy: what is stored is exactly what is hashed."""
    return json.loads(json.dumps(payload or {}, default=_json_default, sort_keys=True))


def row_hash(prev_hash: str, *, seq: int, ts: datetime, actor: str, kind: str, trader_id: int | None,
             object_type: str, object_id: str, payload: dict) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "kind": kind,
            "trader_id": trader_id,
            "object_type": object_type,
            "object_id": object_id,
            "payload": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def actor_name(user) -> str:
    if user is None:
        return "system"
    return getattr(user, "username", None) or str(user)


def record(kind: str, *, actor=None, trader=None, obj=None, payload: dict | None = None) -> AuditLog:
    """Append one audit row. ``actor`` is a user or a name ('system' when None)."""
    payload = normalise_payload(payload)
    trader_id = getattr(trader, "pk", trader)
    object_type = obj._meta.model_name if obj is not None else ""
    object_id = str(obj.pk) if obj is not None else ""
    actor = actor if isinstance(actor, str) else actor_name(actor)
    with transaction.atomic():
        head = AuditHead.objects.select_for_update().get(pk=1)
        seq = head.seq + 1
        ts = timezone.now()
        digest = row_hash(head.hash, seq=seq, ts=ts, actor=actor, kind=kind, trader_id=trader_id,
                          object_type=object_type, object_id=object_id, payload=payload)
        row = AuditLog.objects.create(seq=seq, ts=ts, actor=actor, kind=kind, trader_id=trader_id,
                                      object_type=object_type, object_id=object_id, payload=payload,
                                      prev_hash=head.hash, hash=digest)
        AuditHead.objects.filter(pk=1).update(seq=seq, hash=digest)
    return row


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    reason: str


def verify_chain(rows: Iterable[AuditLog] | None = None) -> ChainProblem | None:
    """Walk the whole chain; return the first problem, or None when it is intact."""
    rows = AuditLog.objects.order_by("seq").iterator(chunk_size=2000) if rows is None else rows
    prev_hash, expected_seq = GENESIS, 1
    for row in rows:
        if row.seq != expected_seq:
            return ChainProblem(expected_seq, f"row #{expected_seq} is missing (next row is #{row.seq})")
        if row.prev_hash != prev_hash:
            return ChainProblem(row.seq, f"row #{row.seq} does not link to row #{row.seq - 1}")
        digest = row_hash(prev_hash, seq=row.seq, ts=row.ts, actor=row.actor, kind=row.kind,
                          trader_id=row.trader_id, object_type=row.object_type, object_id=row.object_id,
                          payload=row.payload)
        if digest != row.hash:
            return ChainProblem(row.seq, f"row #{row.seq} was altered (hash mismatch)")
        prev_hash, expected_seq = row.hash, expected_seq + 1
    head = AuditHead.objects.filter(pk=1).first()
    if head is not None and (head.seq != expected_seq - 1 or head.hash != prev_hash):
        return ChainProblem(expected_seq, f"rows after #{expected_seq - 1} were deleted (head is #{head.seq})")
    return None


def filtered(*, since: datetime | None = None, until: datetime | None = None, trader_id: int | None = None,
             kind: str | None = None) -> QuerySet[AuditLog]:
    qs = AuditLog.objects.order_by("seq")
    if since:
        qs = qs.filter(ts__gte=since)
    if until:
        qs = qs.filter(ts__lt=until)
    if trader_id:
        qs = qs.filter(trader_id=trader_id)
    if kind:
        qs = qs.filter(kind=kind)
    return qs


def _row_dict(row: AuditLog) -> dict:
    return {
        "seq": row.seq,
        "ts": row.ts.isoformat(),
        "actor": row.actor,
        "kind": row.kind,
        "trader_id": row.trader_id,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "payload": row.payload,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


def export(rows: Iterable[AuditLog], fmt: str) -> Iterator[str]:
    """Stream rows as CSV or JSON Lines (chunks of text)."""
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(_row_dict(row), sort_keys=True, ensure_ascii=False) + "\n"
        return
    if fmt != "csv":
        raise ValueError(f"unknown export format {fmt!r} (csv or jsonl)")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        data = _row_dict(row)
        data["payload"] = json.dumps(data["payload"], sort_keys=True, ensure_ascii=False)
        writer.writerow(data)
        if buffer.tell() > 64_000:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def known_kinds(limit: int = 200) -> list[str]:
    """Kinds present in the log, for the export filter's choices."""
    return list(AuditLog.objects.order_by("kind").values_list("kind", flat=True).distinct()[:limit])
