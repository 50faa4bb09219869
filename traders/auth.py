"""Login throttling and login auditing [SPEC 13, DM-2].

Throttling is django-axes' (``AUTHENTICATION_BACKENDS`` and ``AXES_*`` in quantweb/settings.py):
its backend runs inside every ``authenticate()`` call, so the login page, the admin's login and
anything else that authenticates share one counter per (username, client address). Attempts
are rows in the database, so a lockout lasts ``LOGIN_LOCKOUT_SECONDS`` whatever cache is in use.
The helpers here are the callables those settings name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.forms.utils import ErrorDict
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

LOCKOUT_STATUS = 429


def failure_limit(request: HttpRequest | None = None, credentials: dict | None = None) -> int:
    """``AXES_FAILURE_LIMIT``: read when called, so LOGIN_MAX_FAILURES overrides apply."""
    return settings.LOGIN_MAX_FAILURES


def cool_off(request: HttpRequest | None = None) -> timedelta:
    """``AXES_COOLOFF_TIME``: how long a locked (username, client) pair stays locked."""
    return timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)


def client_ip(request: HttpRequest | None) -> str | None:
    """The client's address: the socket's, or, behind ``QUANTWEB_TRUSTED_PROXY_COUNT`` reverse
    proxies that each append to X-Forwarded-For, the address the outermost proxy saw.

    Entries left of that one are whatever the client sent and are ignored: a client cannot
    choose the address it is throttled under. A request with fewer entries than trusted proxies
    did not come through them, and its socket address is used. Anything that is not an IP
    address (no socket address in a test client, junk in the header) is None: axes stores the
    address in an IP column, which PostgreSQL validates.
    """
    if request is None:
        return None
    remote = _valid_ip(request.META.get("REMOTE_ADDR"))
    proxies = settings.QUANTWEB_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) < proxies:
        return remote
    return _valid_ip(forwarded[-proxies])


def _valid_ip(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()[:64]))
    except ValueError:
        return None


def hash_username(username: str) -> str:
    """A keyed hash of a typed username. Failed logins store only this (people type passwords
    into the username field); ``hash_username('alice')`` finds alice's rows."""
    key = ("login-username|" + settings.AUDIT_HMAC_KEY).encode()
    digest = hmac.new(key, (username or "").strip().lower().encode(), hashlib.sha256).hexdigest()
    return "h:" + digest[:32]


def username_key(request: HttpRequest | None, credentials: dict | None = None) -> str | None:
    """``AXES_USERNAME_CALLABLE``: axes counts and stores attempts under the username's hash."""
    if credentials:
        username = credentials.get("username")
    else:
        data = getattr(request, "data", None) or getattr(request, "POST", {})
        username = data.get("username") if hasattr(data, "get") else None
    if username is None:
        return None
    return hash_username(str(username))


def lockout_message() -> str:
    minutes = max(1, -(-settings.LOGIN_LOCKOUT_SECONDS // 60))
    return f"Too many failed attempts. Try again in {minutes} minutes."


def lockout_response(request: HttpRequest, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """``AXES_LOCKOUT_CALLABLE``: the login page with the lockout message, HTTP 429. The message
    is the same whether the account exists or not."""
    form = AuthenticationForm(request, initial={"username": str(request.POST.get("username", ""))[:150]})
    form._errors = ErrorDict({"__all__": form.error_class([lockout_message()])})
    return render(request, "registration/login.html", {"form": form, "next": request.POST.get("next", "")},
                  status=LOCKOUT_STATUS)


class ThrottledAuthenticationForm(AuthenticationForm):
    """The login form. Throttling happens in ``authenticate()`` (django-axes), for this form
    and the admin's alike; the name stays for the views that use it."""


def on_login(sender, request, user, **kwargs) -> None:
    from traders import audit

    audit.record("LOGIN", actor=user, payload={"client": client_ip(request)})


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    from traders import audit

    # credentials holds the password, and the username field sometimes does too: only a keyed
    # hash of the username goes into the audit row.
    audit.record("LOGIN_FAILED", actor="anonymous",
                 payload={"username_hash": hash_username(str(credentials.get("username", ""))),
                          "client": client_ip(request)})


def on_logout(sender, request, user, **kwargs) -> None:
    from traders import audit

    if user is not None:
        audit.record("LOGOUT", actor=user, payload={"client": client_ip(request)})
