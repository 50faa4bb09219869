"""The append-only, hash-chained audit log [DM-2].

Each row's ``hash`` is SHA-256 over the previous row's hash and the row's canonical JSON, so
changing or deleting any row breaks every hash after it. Appends are serialised by locking the
single ``AuditHead`` row, which also remembers the tip: deleting the newest rows is detected too.
``record`` is the only writer; call it inside the transaction that makes the change it records.

Someone with write access to the database could still recompute the chain (and the head) after
a change, delete the newest rows together with the head, or wipe the table. Signed checkpoints
(``AuditCheckpoint``: the tip's (seq, hash) under an HMAC with ``AUDIT_HMAC_KEY``, which is not
in the database and is not SECRET_KEY) close that: ``checkpoint`` writes one on a schedule and on
every export, also appending it to ``QUANTWEB_AUDIT_CHECKPOINT_FILE`` outside the database, and
``verify_chain`` requires every checkpointed row to exist with the signed hash.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from traders.models import AuditCheckpoint, AuditHead, AuditLog

logger = logging.getLogger(__name__)

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


def _walk(rows: Iterable[AuditLog], prev_hash: str, expected_seq: int,
          pinned: dict[int, str]) -> tuple[ChainProblem | None, str, int]:
    """Check links and hashes from ``expected_seq`` on; returns (problem, tip hash, next seq)."""
    for row in rows:
        if row.seq != expected_seq:
            return ChainProblem(expected_seq, f"row #{expected_seq} is missing (next row is #{row.seq})"), \
                prev_hash, expected_seq
        if row.prev_hash != prev_hash:
            return ChainProblem(row.seq, f"row #{row.seq} does not link to row #{row.seq - 1}"), prev_hash, expected_seq
        digest = row_hash(prev_hash, seq=row.seq, ts=row.ts, actor=row.actor, kind=row.kind,
                          trader_id=row.trader_id, object_type=row.object_type, object_id=row.object_id,
                          payload=row.payload)
        if digest != row.hash:
            return ChainProblem(row.seq, f"row #{row.seq} was altered (hash mismatch)"), prev_hash, expected_seq
        if row.seq in pinned and pinned[row.seq] != row.hash:
            return ChainProblem(row.seq, f"row #{row.seq} differs from its signed checkpoint: a row up to "
                                         f"#{row.seq} was rewritten and the chain recomputed"), prev_hash, expected_seq
        prev_hash, expected_seq = row.hash, expected_seq + 1
    return None, prev_hash, expected_seq


def verify_chain(rows: Iterable[AuditLog] | None = None) -> ChainProblem | None:
    """Walk the whole chain and hold it against the signed checkpoints (in the database and in
    ``QUANTWEB_AUDIT_CHECKPOINT_FILE``); return the first problem, or None when it is intact."""
    rows = AuditLog.objects.order_by("seq").iterator(chunk_size=2000) if rows is None else rows
    pinned, problem = signed_tips()
    if problem is not None:
        return problem
    problem, prev_hash, expected_seq = _walk(rows, GENESIS, 1, pinned)
    if problem is not None:
        return problem
    last_seq = expected_seq - 1
    newest_pinned = max(pinned, default=0)
    if newest_pinned > last_seq:
        if last_seq == 0:
            return ChainProblem(1, f"the audit log is empty but a signed checkpoint vouches for {newest_pinned} "
                                   "rows: it was wiped")
        return ChainProblem(last_seq + 1, f"rows after #{last_seq} were deleted (a signed checkpoint vouches "
                                          f"for row #{newest_pinned})")
    head = AuditHead.objects.filter(pk=1).first()
    if head is not None and (head.seq != last_seq or head.hash != prev_hash):
        return ChainProblem(expected_seq, f"rows after #{last_seq} were deleted (head is #{head.seq})")
    return None


# -- signed checkpoints ------------------------------------------------------------------------

def _key() -> bytes:
    return settings.AUDIT_HMAC_KEY.encode()


def key_id() -> str:
    """A fingerprint naming the signing key (so a rotated key is told apart), not the key."""
    return hashlib.sha256(b"quantweb-audit-key-id|" + _key()).hexdigest()[:16]


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def sign(seq: int, tip_hash: str, created_at: datetime, reason: str) -> str:
    message = f"quantweb-audit-checkpoint-v1|{seq}|{tip_hash}|{_ts(created_at)}|{reason}"
    return hmac.new(_key(), message.encode(), hashlib.sha256).hexdigest()


def _valid(seq: int, tip_hash: str, created_at: datetime, reason: str, signature: str) -> bool:
    return hmac.compare_digest(sign(seq, tip_hash, created_at, reason), signature)


def _file_checkpoints() -> list[dict]:
    path = settings.QUANTWEB_AUDIT_CHECKPOINT_FILE
    if not path:
        return []
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def signed_tips() -> tuple[dict[int, str], ChainProblem | None]:
    """{seq: hash} vouched for by every checkpoint, or the first checkpoint that is not genuine.
    A checkpoint signed with another key (``key_id``) is a problem too: verify with the key that
    signed it, or keep the old key until the log is archived."""
    pinned: dict[int, str] = {}
    entries = [(cp.seq, cp.hash, cp.created_at, cp.reason, cp.signature, f"checkpoint #{cp.pk}")
               for cp in AuditCheckpoint.objects.order_by("id")]
    for item in _file_checkpoints():
        created = parse_datetime(str(item.get("created_at", "")))
        entries.append((int(item.get("seq", -1)), str(item.get("hash", "")), created, str(item.get("reason", "")),
                        str(item.get("signature", "")), "checkpoint file entry"))
    for seq, tip_hash, created, reason, signature, name in entries:
        if created is None or not _valid(seq, tip_hash, created, reason, signature):
            return pinned, ChainProblem(max(seq, 0), f"{name} (row #{seq}) has an invalid signature: forged, "
                                                     "altered or signed with another AUDIT_HMAC_KEY")
        if seq > 0 and pinned.setdefault(seq, tip_hash) != tip_hash:
            return pinned, ChainProblem(seq, f"two signed checkpoints disagree about row #{seq}")
    return pinned, None


class AuditChainBroken(RuntimeError):
    def __init__(self, problem: ChainProblem) -> None:
        super().__init__(f"audit chain broken at row #{problem.seq}: {problem.reason}")
        self.problem = problem


def checkpoint(reason: str = AuditCheckpoint.Reason.MANUAL, *, skip_unchanged: bool = False) -> AuditCheckpoint | None:
    """Sign the chain's current tip and return the checkpoint (None: ``skip_unchanged`` and the
    newest checkpoint already pins this tip). The rows since the newest checkpoint are verified
    first: a broken chain is never signed; a CRITICAL event is written and AuditChainBroken raised."""
    from traders.models import EventLevel
    from traders.services import log_event

    with transaction.atomic():
        head = AuditHead.objects.select_for_update().get(pk=1)     # appends wait: the tip holds still
        latest = AuditCheckpoint.objects.order_by("-seq", "-id").first()
        if skip_unchanged and latest is not None and (latest.seq, latest.hash) == (head.seq, head.hash):
            return None
        problem = _verify_since(latest)
        if problem is None:
            created = timezone.now()
            row = AuditCheckpoint.objects.create(created_at=created, seq=head.seq, hash=head.hash, reason=reason,
                                                 key_id=key_id(),
                                                 signature=sign(head.seq, head.hash, created, reason))
            transaction.on_commit(lambda: _append_to_file(row))
            return row
    logger.error("audit chain broken at row #%s: %s; no checkpoint signed", problem.seq, problem.reason)
    log_event(None, "AUDIT_CHAIN_BROKEN", f"Audit chain broken at row #{problem.seq}: {problem.reason}",
              level=EventLevel.CRITICAL, data={"seq": problem.seq})
    raise AuditChainBroken(problem)


def _verify_since(latest: AuditCheckpoint | None) -> ChainProblem | None:
    """Verify the rows after the newest genuine checkpoint (the whole chain otherwise)."""
    if latest is None or latest.seq == 0 or not _valid(latest.seq, latest.hash, latest.created_at, latest.reason,
                                                        latest.signature):
        return verify_chain()
    pinned, problem = signed_tips()
    if problem is not None:
        return problem
    anchor = AuditLog.objects.filter(seq=latest.seq).first()
    if anchor is None or anchor.hash != latest.hash:
        return verify_chain()
    rows = AuditLog.objects.filter(seq__gt=latest.seq).order_by("seq").iterator(chunk_size=2000)
    problem, prev_hash, expected_seq = _walk(rows, latest.hash, latest.seq + 1, pinned)
    if problem is not None:
        return problem
    head = AuditHead.objects.get(pk=1)
    if head.seq != expected_seq - 1 or head.hash != prev_hash:
        return ChainProblem(expected_seq, f"rows after #{expected_seq - 1} were deleted (head is #{head.seq})")
    return None


def _append_to_file(row: AuditCheckpoint) -> None:
    path = settings.QUANTWEB_AUDIT_CHECKPOINT_FILE
    if not path:
        return
    line = json.dumps({"created_at": _ts(row.created_at), "seq": row.seq, "hash": row.hash, "reason": row.reason,
                       "key_id": row.key_id, "signature": row.signature}, sort_keys=True)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        logger.exception("could not append the audit checkpoint to %s", path)


def scheduled_checkpoint() -> str:
    """django-q2 schedule ``quantweb-audit-checkpoint`` (manage.py bootstrap). A broken chain
    raises, so the task shows as failed next to the CRITICAL event."""
    row = checkpoint(AuditCheckpoint.Reason.SCHEDULE, skip_unchanged=True)
    return "unchanged" if row is None else f"checkpoint of row #{row.seq}"


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
    """Stream rows as CSV or JSON Lines (chunks of text). Every export first signs a checkpoint
    of the chain's tip, so an exported copy can be held against a signed (seq, hash) later."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown export format {fmt!r} (csv or jsonl)")
    try:
        checkpoint(AuditCheckpoint.Reason.EXPORT)
    except AuditChainBroken:
        pass        # still exported: the evidence is the export; the event says the chain is broken
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
