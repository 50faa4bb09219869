"""Login throttling and login auditing [SPEC 13, DM-2]."""

from __future__ import annotations

import hashlib

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache


def _client(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def _key(username: str, request) -> str:
    raw = f"{(username or '').lower()}|{_client(request)}"
    return "login-fail:" + hashlib.sha256(raw.encode()).hexdigest()


def is_locked(username: str, request) -> bool:
    return cache.get(_key(username, request), 0) >= settings.LOGIN_MAX_FAILURES


def note_failure(username: str, request) -> None:
    key = _key(username, request)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)


def clear_failures(username: str, request) -> None:
    cache.delete(_key(username, request))


class ThrottledAuthenticationForm(AuthenticationForm):
    """Refuses further attempts for a while after LOGIN_MAX_FAILURES failures for one
    (username, client address) pair. The message does not say whether the user exists."""

    def clean(self):
        username = self.data.get("username", "")
        if is_locked(username, self.request):
            raise forms.ValidationError(
                "Too many failed attempts. Try again in %(minutes)d minutes.",
                code="throttled",
                params={"minutes": max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)},
            )
        try:
            data = super().clean()
        except forms.ValidationError:
            note_failure(username, self.request)
            raise
        clear_failures(username, self.request)
        return data


def on_login(sender, request, user, **kwargs) -> None:
    from traders import audit

    audit.record("LOGIN", actor=user, payload={"client": _client(request)})


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    from traders import audit

    # credentials holds the password: only the username goes into the audit row.
    audit.record("LOGIN_FAILED", actor="anonymous",
                 payload={"username": str(credentials.get("username", ""))[:150], "client": _client(request)})


def on_logout(sender, request, user, **kwargs) -> None:
    from traders import audit

    if user is not None:
        audit.record("LOGOUT", actor=user, payload={"client": _client(request)})
