"""The regime-thresholds section of the STRATEGY page: show the thresholds in force and their
versions; staff store a new version (POST /strategy/regime/thresholds/)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from regime import thresholds
from regime.models import RegimeThresholdsVersion

SECTION_VERSIONS = 10


def section_context(request, *, fields=None, error: str = "") -> dict:
    row = thresholds.current_version()
    th = thresholds.thresholds_from_params(row.params) if row is not None else thresholds.RegimeThresholds()
    return {
        "regime_version": row,
        "regime_fields": fields if fields is not None else thresholds.form_fields(th),
        "regime_versions": RegimeThresholdsVersion.objects.select_related("created_by")[:SECTION_VERSIONS],
        "regime_can_edit": bool(getattr(request.user, "is_staff", False)),
        "regime_error": error,
    }


@require_POST
def thresholds_update(request):
    try:
        params = thresholds.params_from_post(request.POST)
        row = thresholds.save_thresholds(params, user=request.user, comment=request.POST.get("comment", "")[:200])
    except PermissionDenied as exc:
        return render(request, "traders/refused.html", {"message": str(exc)}, status=403)
    except ValidationError as exc:
        message = "Regime thresholds not saved: " + " ".join(exc.messages)
        messages.error(request, message)
        return render(request, "regime/thresholds_page.html", section_context(request, error=message), status=400)
    if row is None:
        messages.info(request, "Regime thresholds: nothing changed.")
    else:
        messages.success(request, f"Regime thresholds saved as version {row.version}; the next scans use them.")
    return redirect("strategy")
