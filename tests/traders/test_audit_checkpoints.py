"""Signed audit checkpoints [DM-2, issue 21 #7]: someone with write access to the database who
deletes the newest rows, rewrites a row and recomputes the chain, or wipes the log, is caught by
``verify_audit``; checkpoints are signed with AUDIT_HMAC_KEY (not SECRET_KEY), written on a
schedule and on every export, and a broken chain is never signed."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from traders import audit
from traders.models import AuditCheckpoint, AuditHead, AuditLog, Event

pytestmark = pytest.mark.django_db


def _rows(n: int = 5) -> list[AuditLog]:
    return [audit.record("TEST", actor="system", payload={"i": i}) for i in range(n)]


def _verify() -> str:
    """verify_audit's verdict: 'ok' or the error message."""
    try:
        call_command("verify_audit", stdout=io.StringIO())
    except CommandError as exc:
        return str(exc)
    return "ok"


def _recompute_from(seq: int) -> None:
    """What an attacker with database access does after editing a row: rehash the rest of the
    chain and move the head, so the chain alone looks intact."""
    prev = AuditLog.objects.get(seq=seq - 1).hash if seq > 1 else audit.GENESIS
    for row in AuditLog.objects.filter(seq__gte=seq).order_by("seq"):
        digest = audit.row_hash(prev, seq=row.seq, ts=row.ts, actor=row.actor, kind=row.kind, trader_id=row.trader_id,
                                object_type=row.object_type, object_id=row.object_id, payload=row.payload)
        AuditLog.objects.filter(pk=row.pk).update(prev_hash=prev, hash=digest)
        prev = digest
    last = AuditLog.objects.order_by("-seq").first()
    AuditHead.objects.filter(pk=1).update(seq=last.seq if last else 0, hash=prev if last else audit.GENESIS)


def _truncate(after_seq: int) -> None:
    AuditLog.objects.filter(seq__gt=after_seq).delete()
    tip = AuditLog.objects.get(seq=after_seq)
    AuditHead.objects.filter(pk=1).update(seq=tip.seq, hash=tip.hash)


def test_a_checkpoint_signs_the_tip_with_the_audit_key_not_secret_key(settings):
    rows = _rows(3)
    cp = audit.checkpoint()
    assert (cp.seq, cp.hash, cp.reason) == (3, rows[-1].hash, "manual")
    assert cp.signature == audit.sign(3, rows[-1].hash, cp.created_at, "manual")
    settings.SECRET_KEY = "another-secret-key-entirely-0123456789-abcdefghijklmnop"
    assert audit.verify_chain() is None            # SECRET_KEY plays no part
    settings.AUDIT_HMAC_KEY = "a-different-audit-key"
    problem = audit.verify_chain()
    assert problem is not None and "invalid signature" in problem.reason


def test_truncation_of_the_newest_rows_is_detected():
    _rows(5)
    audit.checkpoint()
    _truncate(3)                                  # rows 4-5 deleted, head moved back
    assert _verify() == "audit chain broken at row #4: rows after #3 were deleted (a signed checkpoint vouches for row #5)"


def test_truncation_passes_the_chain_alone_and_only_the_checkpoint_catches_it():
    _rows(5)
    _truncate(3)
    assert _verify() == "ok"                      # why checkpoints exist


def test_a_rewritten_and_recomputed_chain_is_detected():
    _rows(5)
    audit.checkpoint()
    AuditLog.objects.filter(seq=2).update(payload={"i": "rewritten"})
    _recompute_from(2)
    assert audit.verify_chain(list(AuditLog.objects.order_by("seq"))) is not None
    assert _verify() == ("audit chain broken at row #5: row #5 differs from its signed checkpoint: a row up to #5 "
                         "was rewritten and the chain recomputed")


def test_a_wipe_is_detected():
    _rows(4)
    audit.checkpoint()
    AuditLog.objects.all().delete()
    AuditHead.objects.filter(pk=1).update(seq=0, hash=audit.GENESIS)
    assert _verify() == "audit chain broken at row #1: the audit log is empty but a signed checkpoint vouches for 4 rows: it was wiped"


def test_a_wipe_of_log_and_checkpoints_is_caught_by_the_checkpoint_file(settings, tmp_path):
    settings.QUANTWEB_AUDIT_CHECKPOINT_FILE = str(tmp_path / "audit-checkpoints.jsonl")
    _rows(4)
    with pytest.MonkeyPatch.context() as mp:       # on_commit runs at once inside the test transaction
        mp.setattr("django.db.transaction.on_commit", lambda fn, *a, **k: fn())
        audit.checkpoint()
    entry = json.loads((tmp_path / "audit-checkpoints.jsonl").read_text().splitlines()[0])
    assert entry["seq"] == 4 and entry["signature"]
    AuditLog.objects.all().delete()
    AuditCheckpoint.objects.all().delete()
    AuditHead.objects.filter(pk=1).update(seq=0, hash=audit.GENESIS)
    assert "it was wiped" in _verify()


def test_a_forged_checkpoint_is_refused():
    rows = _rows(2)
    AuditCheckpoint.objects.create(created_at=rows[-1].ts, seq=2, hash=rows[-1].hash, reason="manual",
                                   key_id="x", signature="0" * 64)
    assert "invalid signature" in _verify()


def test_schedule_signs_changed_tips_only():
    _rows(2)
    assert audit.scheduled_checkpoint() == "checkpoint of row #2"
    assert audit.scheduled_checkpoint() == "unchanged"
    _rows(1)
    assert audit.scheduled_checkpoint() == "checkpoint of row #3"
    assert list(AuditCheckpoint.objects.values_list("seq", "reason")) == [(2, "schedule"), (3, "schedule")]


def test_a_broken_chain_is_never_signed():
    _rows(3)
    audit.checkpoint()
    _rows(2)
    AuditLog.objects.filter(seq=5).update(payload={"i": "tampered"})
    with pytest.raises(audit.AuditChainBroken):
        audit.scheduled_checkpoint()
    assert AuditCheckpoint.objects.count() == 1
    event = Event.objects.get(kind="AUDIT_CHAIN_BROKEN")
    assert event.level == "CRITICAL" and "row #5" in event.message


def test_every_export_writes_a_checkpoint(admin_client):
    _rows(2)
    call_command("export_audit", "--format", "jsonl", stdout=io.StringIO())
    tip = AuditHead.objects.get(pk=1)
    assert list(AuditCheckpoint.objects.values_list("seq", "hash", "reason")) == [(tip.seq, tip.hash, "export")]
    response = admin_client.get("/api/audit/export/?format=jsonl")
    assert response.status_code == 200
    b"".join(response.streaming_content)
    assert AuditCheckpoint.objects.filter(reason="export").count() == 2
    assert _verify() == "ok"


def test_verify_audit_can_sign_a_checkpoint():
    _rows(2)
    out = io.StringIO()
    call_command("verify_audit", "--checkpoint", stdout=out)
    assert "audit chain intact: 2 rows, 0 signed checkpoint(s)" in out.getvalue()
    assert "signed checkpoint of row #2" in out.getvalue()


def test_checkpoints_are_append_only():
    _rows(1)
    cp = audit.checkpoint()
    with pytest.raises(PermissionError):
        cp.save()
    with pytest.raises(PermissionError):
        cp.delete()
