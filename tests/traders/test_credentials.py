"""Credentials are encrypted at rest and the secret never appears in any admin page, API
response, log line, export or exception [SPEC 2, 13; ground rule 6]."""

from __future__ import annotations

import io
import logging

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse

from traders.fields import decrypt
from traders.models import Credential

KEY = "AKIA-upbit-access-7f3c9d2e1b"
SECRET = "s3cr3t-Upbit-Secret-Value-0a9b8c7d6e5f"


@pytest.fixture
def credential(admin_client):
    response = admin_client.post(reverse("config"), {
        "exchange": "upbit", "ccxt_id": "", "label": "main account", "api_key": KEY, "api_secret": SECRET,
    })
    assert response.status_code == 302, response.content[:500]
    return Credential.objects.get(label="main account")


def test_stored_encrypted_not_plaintext(credential):
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key, api_secret FROM traders_credential WHERE id = %s", [credential.pk])
        raw_key, raw_secret = cursor.fetchone()
    assert KEY not in raw_key and SECRET not in raw_secret
    assert raw_secret.startswith("fernet:")
    assert decrypt(raw_secret) == SECRET
    fresh = Credential.objects.get(pk=credential.pk)
    assert fresh.api_secret == SECRET
    assert SECRET not in repr(fresh.api_secret) and SECRET not in repr(fresh)
    assert fresh.masked_key == "****" + KEY[-4:]


def test_secret_absent_from_pages_api_exports_and_logs(admin_client, credential, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = []
    for url in [
        reverse("config"), reverse("dashboard"), reverse("traders"), reverse("strategy"),
        reverse("admin:traders_credential_changelist"),
        reverse("admin:traders_credential_change", args=[credential.pk]),
        reverse("admin:traders_auditlog_changelist"),
        "/api/credentials/", f"/api/credentials/{credential.pk}/", "/api/schema/",
        reverse("audit-export") + "?format=csv", reverse("audit-export") + "?format=jsonl",
        "/api/audit/export/?format=jsonl",
    ]:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        bodies.append((url, body.decode()))
    out = io.StringIO()
    call_command("export_audit", "--format", "jsonl", stdout=out)
    bodies.append(("export_audit", out.getvalue()))
    for url, body in bodies:
        assert SECRET not in body, url
        assert KEY not in body, url
    assert "****" + KEY[-4:] in dict(bodies)[reverse("config")]
    for record in caplog.records:
        text = record.getMessage()
        assert SECRET not in text and KEY not in text


def test_api_create_returns_only_masked_key(admin_client):
    response = admin_client.post("/api/credentials/", {
        "exchange": "ccxt", "ccxt_id": "binance", "label": "bn", "api_key": KEY, "api_secret": SECRET,
    }, content_type="application/json")
    assert response.status_code == 201
    body = response.json()
    assert body["masked_key"] == "****" + KEY[-4:]
    assert "api_key" not in body and "api_secret" not in body
    assert SECRET not in response.content.decode()


def test_log_filter_masks_registered_secret(credential, caplog):
    from quantweb.logging import RedactSecretsFilter

    assert Credential.objects.get(pk=credential.pk).api_secret == SECRET  # decrypting registers it
    logger = logging.getLogger("quantweb.test")
    record = logger.makeRecord("quantweb.test", logging.ERROR, __file__, 1, "upstream said %s", (f"bad key {SECRET}",), None)
    RedactSecretsFilter().filter(record)
    assert SECRET not in record.getMessage()
    assert "********" in record.getMessage()


def test_non_staff_cannot_add_credentials(client, operator):
    client.force_login(operator)
    response = client.post(reverse("config"), {"exchange": "upbit", "label": "x", "api_key": KEY, "api_secret": SECRET})
    assert response.status_code == 403
    assert SECRET not in response.content.decode()
    assert not Credential.objects.exists()
    assert client.get("/api/credentials/").status_code == 403


def test_bad_credential_form_is_a_400_with_message(admin_client):
    response = admin_client.post(reverse("config"), {"exchange": "sim", "label": "x", "api_key": "", "api_secret": ""})
    assert response.status_code == 400
    assert b"needs no credential" in response.content
    assert not Credential.objects.exists()
