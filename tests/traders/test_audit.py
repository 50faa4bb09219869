"""[DM-2] the audit log is append-only and tamper-evident; exports filter and stream."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from tests.factories import make_trader
from traders import audit
from traders.auth import hash_username
from traders.models import AuditHead, AuditLog


def _rows(n=5, trader=None):
    return [audit.record("TEST_KIND" if i % 2 else "OTHER_KIND", actor="system", trader=trader,
                         payload={"i": i, "amount": "1.5"}) for i in range(n)]


@pytest.mark.django_db
def test_chain_links_and_verifies():
    rows = _rows(4)
    assert [r.seq for r in rows] == [1, 2, 3, 4]
    assert rows[0].prev_hash == "0" * 64
    assert all(rows[i].prev_hash == rows[i - 1].hash for i in range(1, 4))
    assert AuditHead.objects.get(pk=1).hash == rows[-1].hash
    assert audit.verify_chain() is None
    out = io.StringIO()
    call_command("verify_audit", stdout=out)
    assert "intact: 4 rows" in out.getvalue()


@pytest.mark.django_db
def test_rows_cannot_be_saved_again_or_deleted():
    row = _rows(1)[0]
    row.kind = "CHANGED"
    with pytest.raises(PermissionError):
        row.save()
    with pytest.raises(PermissionError):
        row.delete()


@pytest.mark.django_db
def test_altered_row_is_named():
    _rows(5)
    AuditLog.objects.filter(seq=3).update(payload={"i": 999})
    with pytest.raises(CommandError, match=r"row #3 .*altered"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_deleted_middle_row_is_named():
    _rows(5)
    AuditLog.objects.filter(seq=2).delete()  # queryset delete bypasses the model guard: tampering
    with pytest.raises(CommandError, match=r"row #2 is missing"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_deleted_tail_is_detected():
    _rows(5)
    AuditLog.objects.filter(seq=5).delete()
    with pytest.raises(CommandError, match=r"deleted"):
        call_command("verify_audit")


@pytest.mark.django_db
def test_rehashed_forgery_still_breaks_the_link():
    rows = _rows(3)
    forged = audit.row_hash(rows[0].hash, seq=2, ts=rows[1].ts, actor="mallory", kind=rows[1].kind,
                            trader_id=None, object_type="", object_id="", payload=rows[1].payload)
    AuditLog.objects.filter(seq=2).update(actor="mallory", hash=forged)
    problem = audit.verify_chain()
    assert problem is not None and problem.seq == 3


@pytest.mark.django_db
def test_export_command_filters(admin_user):
    trader = make_trader(admin_user)
    _rows(4, trader=trader)
    out = io.StringIO()
    call_command("export_audit", "--format", "jsonl", "--trader", str(trader.pk), "--kind", "TEST_KIND", stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["payload"]["i"] for line in lines] == [1, 3]
    assert all(line["trader_id"] == trader.pk for line in lines)
    out = io.StringIO()
    call_command("export_audit", "--format", "csv", "--since", (timezone.now() + timedelta(days=1)).date().isoformat(), stdout=out)
    assert out.getvalue().splitlines() == [",".join(audit.EXPORT_FIELDS)]
    with pytest.raises(CommandError, match="not a date"):
        call_command("export_audit", "--since", "yesterday-ish")


@pytest.mark.django_db
def test_config_page_export_and_admin_action(admin_client):
    _rows(3)
    response = admin_client.get(reverse("audit-export"), {"format": "csv", "kind": "TEST_KIND"})
    assert response.status_code == 200
    assert response["Content-Disposition"].endswith('.csv"')
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0] == ",".join(audit.EXPORT_FIELDS)
    assert len(body.strip().splitlines()) == 2  # header + the one TEST_KIND row
    bad = admin_client.get(reverse("audit-export"), {"format": "xml"})
    assert bad.status_code == 400
    ids = list(AuditLog.objects.values_list("pk", flat=True))
    response = admin_client.post(reverse("admin:traders_auditlog_changelist"),
                                 {"action": "export_jsonl", "_selected_action": ids})
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) >= 3 and json.loads(lines[0])["seq"] == 1


@pytest.mark.django_db
def test_logins_are_audited(client, admin_user):
    from tests.factories import PASSWORD

    client.post(reverse("login"), {"username": "boss", "password": "wrong"})
    client.post(reverse("login"), {"username": "boss", "password": PASSWORD})
    kinds = list(AuditLog.objects.values_list("kind", flat=True))
    assert kinds[:2] == ["LOGIN_FAILED", "LOGIN"]
    failed = AuditLog.objects.get(kind="LOGIN_FAILED")
    assert "wrong" not in json.dumps(failed.payload)
    # The typed username is kept only as a keyed hash (people type passwords there).
    assert "boss" not in json.dumps(failed.payload)
    assert failed.payload["username_hash"] == hash_username("boss")


@pytest.mark.django_db
def test_login_is_throttled(client, admin_user, settings):
    from tests.factories import PASSWORD

    settings.LOGIN_MAX_FAILURES = 3
    for _ in range(2):
        assert client.post(reverse("login"), {"username": "boss", "password": "nope"}).status_code == 200
    # The failure that reaches the limit is answered with the lockout already.
    assert client.post(reverse("login"), {"username": "boss", "password": "nope"}).status_code == 429
    response = client.post(reverse("login"), {"username": "boss", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.content
    assert "_auth_user_id" not in client.session
