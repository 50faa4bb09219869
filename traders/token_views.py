"""Revoking one's own REST API token (kept apart from traders.tokens: DRF's settings import that
module while rest_framework.views is still loading)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.response import Response
from rest_framework.views import APIView

from traders import audit


class TokenRevokeView(APIView):
    """DELETE: revoke the caller's API token (the one used for this call, or the session user's).
    The client must ask staff for a new one afterwards."""

    # Left out of the OpenAPI schema so the API fuzz cannot revoke its own tokens mid-run;
    # documented in docs/ui-api.md.
    @extend_schema(exclude=True)
    def delete(self, request):
        deleted, _ = Token.objects.filter(user=request.user).delete()
        if deleted:
            audit.record("API_TOKEN_REVOKED", actor=request.user, payload={"via": "api"})
        return Response(status=status.HTTP_204_NO_CONTENT)
