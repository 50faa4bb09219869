"""Secrets [SPEC 13, issue 21 #5]: write-only and masked in the admin whatever the viewer's
permissions; a value that looks like ciphertext is stored encrypted like any other; the
"test connection" intent checks a credential with one read-only call in the worker; and
``rotate_credentials`` re-encrypts every secret with the first key."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from tests.execution.fake_http import FakeExchangeServer, Reply, fixture
from tests.factories import UserFactory
from traders.fields import decrypt
from traders.models import AlertSettings, AuditLog, Credential, Event, Intent, IntentKind, IntentStatus
from traders.services import process_intents

pytestmark = pytest.mark.django_db

KEY = "AKupbitACCESSkey0123456789abcdefghijklmn"
SECRET = "SKupbitSECRETkey9876543210zyxwvutsrqponm"
BOT_TOKEN = "123456789:AAE-telegram-bot-token-value-xyz"


def _raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608 (test constants)
        return cursor.fetchone()[0]


@pytest.fixture
def credential(admin_user):
    return Credential.objects.create(exchange="upbit", label="main", api_key=KEY, api_secret=SECRET,
                                     created_by=admin_user, owner=admin_user)


@pytest.fixture
def alert_settings(admin_user):
    row = AlertSettings(token=BOT_TOKEN, chat_id="42")
    row.save()
    return row


@pytest.fixture
def view_only_staff(db):
    user = UserFactory(username="auditor", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_credential", "view_alertsettings"]))
    return user


def _page(client, url) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def test_view_only_staff_sees_masked_secrets_never_plaintext(client, view_only_staff, credential, alert_settings):
    client.force_login(view_only_staff)
    page = _page(client, reverse("admin:traders_credential_change", args=[credential.pk]))
    assert KEY not in page and SECRET not in page
    assert "****" + KEY[-4:] in page
    page = _page(client, reverse("admin:traders_alertsettings_change", args=[1]))
    assert BOT_TOKEN not in page
    assert "****" + BOT_TOKEN[-4:] in page
    for url in (reverse("admin:traders_credential_changelist"), reverse("admin:traders_alertsettings_changelist")):
        page = _page(client, url)
        assert KEY not in page and SECRET not in page and BOT_TOKEN not in page


def test_superuser_change_pages_are_write_only(admin_client, credential, alert_settings):
    page = _page(admin_client, reverse("admin:traders_credential_change", args=[credential.pk]))
    assert KEY not in page and SECRET not in page and "****" + KEY[-4:] in page
    assert 'name="api_secret"' in page          # a write-only input: a new secret may be entered
    page = _page(admin_client, reverse("admin:traders_alertsettings_change", args=[1]))
    assert BOT_TOKEN not in page and 'name="token"' in page


def test_a_key_that_looks_like_ciphertext_is_stored_encrypted(admin_client):
    fake_cipher = "fernet:gAAAAABlooks-like-a-token"
    response = admin_client.post(reverse("config"), {"exchange": "upbit", "ccxt_id": "", "label": "odd",
                                                     "api_key": fake_cipher, "api_secret": SECRET})
    assert response.status_code == 302, response.content[:300]
    credential = Credential.objects.get(label="odd")
    raw = _raw("traders_credential", "api_key", credential.pk)
    assert raw != fake_cipher and raw.startswith("fernet:")
    assert decrypt(raw) == fake_cipher
    assert Credential.objects.get(pk=credential.pk).api_key == fake_cipher
    page = _page(admin_client, reverse("config"))   # CONFIG never 500s on it
    assert "odd" in page and fake_cipher not in page


def test_admin_and_model_store_ciphertext_lookalikes_encrypted(admin_client, alert_settings):
    response = admin_client.post(reverse("admin:traders_credential_add"), {
        "exchange": "upbit", "ccxt_id": "", "label": "admin-odd", "api_key": "fernet:abc", "api_secret": "fernet:def"})
    assert response.status_code == 302, response.content[:500]
    credential = Credential.objects.get(label="admin-odd")
    assert decrypt(_raw("traders_credential", "api_secret", credential.pk)) == "fernet:def"
    alert_settings.token = "fernet:123456789:not-really-a-token"
    alert_settings.save()
    assert decrypt(_raw("traders_alertsettings", "token", 1)) == "fernet:123456789:not-really-a-token"
    assert _page(admin_client, reverse("config"))


# -- rotate_credentials ------------------------------------------------------------------------

def test_rotate_credentials_reencrypts_with_the_first_key(settings, credential, alert_settings):
    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    out = io.StringIO()
    call_command("rotate_credentials", stdout=out)
    assert "re-encrypted 3 secret value(s)" in out.getvalue()
    only_new = MultiFernet([Fernet(new_key.encode())])
    for table, column, pk in [("traders_credential", "api_key", credential.pk),
                              ("traders_credential", "api_secret", credential.pk),
                              ("traders_alertsettings", "token", 1)]:
        raw = _raw(table, column, pk)
        assert only_new.decrypt(raw.removeprefix("fernet:").encode()).decode() in (KEY, SECRET, BOT_TOKEN)
    settings.FIELD_ENCRYPTION_KEYS = [new_key]       # the old key can go now
    assert Credential.objects.get(pk=credential.pk).api_secret == SECRET


def test_rotate_credentials_reports_rows_no_key_decrypts(settings, credential):
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]     # the old key was lost
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 row"):
        call_command("rotate_credentials", stderr=err, stdout=io.StringIO())
    assert f"traders.Credential #{credential.pk}" in err.getvalue()
    assert SECRET not in err.getvalue()


# -- test connection ---------------------------------------------------------------------------

@pytest.fixture
def upbit(settings):
    with FakeExchangeServer() as server:
        settings.QUANTWEB_UPBIT_BASE_URL = server.url
        yield server


def _request_test(client, credential) -> Intent:
    response = client.post(reverse("credential-test", args=[credential.pk]))
    assert response.status_code == 302
    return Intent.objects.get(kind=IntentKind.TEST_CREDENTIAL)


def test_test_connection_is_an_intent_the_web_never_calls_the_venue(admin_client, credential, upbit):
    upbit.add("GET", "/v1/accounts", Reply(fixture("upbit/accounts.json")))
    intent = _request_test(admin_client, credential)
    assert intent.payload == {"credential_id": credential.pk} and intent.status == IntentStatus.PENDING
    assert upbit.requests == []                     # the web recorded it; nothing reached the venue
    process_intents()
    intent.refresh_from_db()
    assert intent.status == IntentStatus.DONE
    assert intent.result.startswith("OK: connection OK, balances read")
    assert [r.path for r in upbit.requests] == ["/v1/accounts"]       # one read-only call
    event = Event.objects.get(kind="CREDENTIAL_TEST_OK")
    assert event.message.startswith("Credential main: connection OK") and event.level == "INFO"
    assert AuditLog.objects.filter(kind="CREDENTIAL_TESTED", payload__ok=True).count() == 1
    page = _page(admin_client, reverse("config"))   # CONFIG shows the latest outcome per credential
    assert "Credential main: connection OK, balances read" in page


def test_test_connection_reports_a_refused_key_clearly(admin_client, credential, upbit):
    upbit.add("GET", "/v1/accounts", Reply({"error": {"name": "invalid_access_key",
                                                      "message": f"bad key {KEY}"}}, 401))
    intent = _request_test(admin_client, credential)
    process_intents()
    intent.refresh_from_db()
    assert intent.status == IntentStatus.DONE       # a failed check is a result, not a retry
    assert intent.result.startswith("FAILED: the venue refused the key")
    event = Event.objects.get(kind="CREDENTIAL_TEST_FAILED")
    assert event.level == "WARN" and "refused the key" in event.message
    assert KEY not in event.message and KEY not in intent.result and SECRET not in event.message
    page = _page(admin_client, reverse("config"))
    assert "the venue refused the key" in page and KEY not in page


def test_test_connection_with_an_undecryptable_credential_answers(admin_client, credential, upbit, settings):
    intent = _request_test(admin_client, credential)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    process_intents()
    intent.refresh_from_db()
    assert intent.status == IntentStatus.DONE
    assert intent.result == "FAILED: credential cannot be decrypted with the configured keys"
    assert upbit.requests == []


def test_only_staff_may_test_a_credential(client, operator, credential):
    client.force_login(operator)
    response = client.post(reverse("credential-test", args=[credential.pk]))
    assert response.status_code == 403
    assert not Intent.objects.exists()
