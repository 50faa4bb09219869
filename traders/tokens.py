"""REST API tokens that expire and can be revoked [SPEC 13].

Tokens are rest_framework.authtoken's: issued by staff in the admin ("Tokens"), one per user.
A token older than ``QUANTWEB_API_TOKEN_TTL_HOURS`` is refused with 401; ``DELETE /api/token/``
(traders/token_views.py) revokes the caller's token, and staff revoke any in the admin.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token


def token_expires_at(token: Token):
    return token.created + timedelta(hours=settings.QUANTWEB_API_TOKEN_TTL_HOURS)


class ExpiringTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, refused once the token is older than the TTL."""

    def authenticate_credentials(self, key):
        user, token = super().authenticate_credentials(key)
        if timezone.now() >= token_expires_at(token):
            raise exceptions.AuthenticationFailed("Token has expired; ask staff for a new one.")
        return user, token
