"""Login throttling with django-axes: one throttle for every login form, a lockout that lasts
LOGIN_LOCKOUT_SECONDS (attempts in the database, not the cache), keyed on username AND client,
and a client address that only trusted proxies can set [SPEC 13]."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.urls import reverse

from tests.factories import PASSWORD, UserFactory
from traders.auth import hash_username

pytestmark = pytest.mark.django_db

LOCKED = b"Too many failed attempts"


def _login(client, username: str, password: str, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def _admin_login(client, username: str, password: str, **extra):
    return client.post(reverse("admin:login"), {"username": username, "password": password, "next": "/admin/"},
                       **extra)


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_admin_login_is_throttled_and_then_refuses_the_right_password(client, admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 3
    for _ in range(2):
        assert _admin_login(client, "boss", "wrong").status_code == 200
    assert _admin_login(client, "boss", "wrong").status_code == 429
    response = _admin_login(client, "boss", PASSWORD)
    assert response.status_code == 429 and LOCKED in response.content
    assert not _logged_in(client)


def test_admin_and_login_page_share_one_counter(client, admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 3
    _login(client, "boss", "wrong")
    _admin_login(client, "boss", "wrong")
    assert _login(client, "boss", "wrong").status_code == 429
    assert _admin_login(client, "boss", PASSWORD).status_code == 429
    assert not _logged_in(client)


def test_lockout_lasts_the_configured_seconds(client, admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 2
    settings.LOGIN_LOCKOUT_SECONDS = 900
    _login(client, "boss", "wrong")
    assert _login(client, "boss", "wrong").status_code == 429
    # 10 minutes later (longer than the old 300 s cache timeout): still locked.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(seconds=600))
    response = _login(client, "boss", PASSWORD)
    assert response.status_code == 429 and b"Try again in 15 minutes" in response.content
    assert not _logged_in(client)
    # Once LOGIN_LOCKOUT_SECONDS have passed since the lockout began, the right password works.
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(seconds=301))
    response = _login(client, "boss", PASSWORD)
    assert response.status_code == 302 and _logged_in(client)
    assert not AccessAttempt.objects.exists()  # a success resets the pair's failures


def test_lockout_is_per_user_and_client(client, admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 2
    other = UserFactory(username="alice")
    for _ in range(2):
        _login(client, "boss", "wrong", REMOTE_ADDR="10.0.0.1")
    assert _login(client, "boss", PASSWORD, REMOTE_ADDR="10.0.0.1").status_code == 429
    # Another user from the same address is not locked out by boss's failures...
    response = _login(client, "alice", PASSWORD, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(other.pk)
    client.logout()
    # ...and boss from another address is not either.
    response = _login(client, "boss", PASSWORD, REMOTE_ADDR="10.0.0.2")
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(admin_user.pk)


def test_attempts_store_a_hash_of_the_username_never_the_typed_text(client, admin_user):
    _login(client, "my-password-typed-here", "x", REMOTE_ADDR="10.0.0.1")
    attempt = AccessAttempt.objects.get()
    assert attempt.username == hash_username("my-password-typed-here")
    assert "my-password-typed-here" not in attempt.username + attempt.get_data + attempt.post_data


def test_forwarded_for_is_ignored_without_trusted_proxies(client, admin_user, settings):
    """A client cannot pick the address it is throttled under by sending X-Forwarded-For."""
    settings.LOGIN_MAX_FAILURES = 2
    settings.QUANTWEB_TRUSTED_PROXY_COUNT = 0
    _login(client, "boss", "wrong", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.1.1.1")
    response = _login(client, "boss", "wrong", REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="2.2.2.2")
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}


def test_behind_a_trusted_proxy_the_forwarded_client_is_the_key(client, admin_user, settings):
    """Behind one proxy, every request comes from the proxy's address: the lockout follows the
    address the proxy saw, and entries a client prepends are ignored."""
    settings.LOGIN_MAX_FAILURES = 2
    settings.QUANTWEB_TRUSTED_PROXY_COUNT = 1
    proxy = {"REMOTE_ADDR": "10.9.9.9"}
    for forged in ("7.7.7.1", "7.7.7.2"):
        response = _login(client, "boss", "wrong", HTTP_X_FORWARDED_FOR=f"{forged}, 203.0.113.5", **proxy)
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"203.0.113.5"}
    # The attacker cannot lock out boss's own client behind the same proxy.
    response = _login(client, "boss", PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.7", **proxy)
    assert response.status_code == 302 and _logged_in(client)


def test_an_address_that_is_not_an_ip_is_none(rf, settings):
    """axes keeps the address in an IP column (PostgreSQL validates it): junk in the forwarded
    header or no socket address must not reach it."""
    from traders.auth import client_ip

    settings.QUANTWEB_TRUSTED_PROXY_COUNT = 1
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="not-an-ip", REMOTE_ADDR="10.0.0.1")) is None
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="10.0.0.1")) == "203.0.113.9"
    settings.QUANTWEB_TRUSTED_PROXY_COUNT = 0
    request = rf.get("/")
    request.META.pop("REMOTE_ADDR", None)
    assert client_ip(request) is None
    assert client_ip(None) is None
