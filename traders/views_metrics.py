"""``/metrics``: the Prometheus text endpoint [AL-2].

A logged-in session or ``Authorization: Bearer <METRICS_TOKEN>`` (compared in constant time).
The site-wide LoginRequiredMiddleware would send a scraper to the login page, so the view is
``login_not_required`` and checks for itself: a request without credentials is redirected to
the login page like every other page (a browser), a request with a wrong or unexpected bearer
token gets 401 (a scraper). With ``METRICS_TOKEN`` unset, only sessions are accepted.
"""

from __future__ import annotations

import hmac
import os

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from quantweb.logging import register_secret
from traders.metrics import prometheus_text

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_token() -> str:
    """``METRICS_TOKEN`` from settings (if a settings module defines it) or the environment."""
    token = getattr(settings, "METRICS_TOKEN", None) or os.environ.get("METRICS_TOKEN", "")
    register_secret(token)
    return token


def bearer_ok(request) -> bool:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, supplied = header.partition(" ")
    expected = metrics_token()
    if scheme.lower() != "bearer" or not supplied.strip() or not expected:
        return False
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


@login_not_required
@never_cache
@require_GET
def metrics(request):
    if not (request.user.is_authenticated or bearer_ok(request)):
        if "HTTP_AUTHORIZATION" in request.META:
            response = HttpResponse("invalid or missing metrics token\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="quantweb metrics"'
            return response
        return redirect_to_login(request.get_full_path())
    if not bearer_ok(request) and not request.user.is_staff:
        # Every trader's figures: staff and the scraper only [issue 21 #4]; non-staff see their
        # own traders' metrics on the DASHBOARD and at /api/metrics/.
        return HttpResponse("the platform metrics are for staff\n", status=403, content_type="text/plain")
    return HttpResponse(prometheus_text(), content_type=CONTENT_TYPE)
