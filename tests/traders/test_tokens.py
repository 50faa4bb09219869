"""REST API tokens expire after QUANTWEB_API_TOKEN_TTL_HOURS and can be revoked [SPEC 13]."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from traders.models import AuditLog

pytestmark = pytest.mark.django_db

URL = "/api/traders/"


def _auth(token: Token) -> dict:
    return {"HTTP_AUTHORIZATION": f"Token {token.key}"}


def test_a_fresh_token_is_accepted(client, admin_user):
    token = Token.objects.create(user=admin_user)
    assert client.get(URL, **_auth(token)).status_code == 200


def test_an_expired_token_is_refused_with_401(client, admin_user, settings):
    settings.QUANTWEB_API_TOKEN_TTL_HOURS = 24
    token = Token.objects.create(user=admin_user)
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(hours=24, seconds=1))
    response = client.get(URL, **_auth(token))
    assert response.status_code == 401
    assert response.json() == {"detail": "Token has expired; ask staff for a new one."}


def test_default_ttl_is_thirty_days(client, admin_user):
    token = Token.objects.create(user=admin_user)
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(days=29, hours=23))
    assert client.get(URL, **_auth(token)).status_code == 200
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - timedelta(days=30, seconds=1))
    assert client.get(URL, **_auth(token)).status_code == 401


def test_a_token_revokes_itself(client, admin_user):
    token = Token.objects.create(user=admin_user)
    assert client.delete("/api/token/", **_auth(token)).status_code == 204
    assert not Token.objects.exists()
    assert client.get(URL, **_auth(token)).status_code == 401
    assert AuditLog.objects.filter(kind="API_TOKEN_REVOKED", actor="boss").count() == 1


def test_revoking_needs_authentication(client, admin_user):
    Token.objects.create(user=admin_user)
    assert client.delete("/api/token/").status_code in (401, 403)
    assert Token.objects.count() == 1


def test_staff_revoke_tokens_in_the_admin(admin_client, admin_user, viewer):
    token = Token.objects.create(user=viewer)
    response = admin_client.post(f"/admin/authtoken/tokenproxy/{viewer.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Token.objects.filter(pk=token.pk).exists()
