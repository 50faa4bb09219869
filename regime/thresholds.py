"""Stored, versioned regime thresholds [RG-2]: read by live scans and backtests, edited in the
admin and on the STRATEGY page, every change audited.

Storage: one immutable ``RegimeThresholdsVersion`` row per version holding the full
``RegimeThresholds`` as JSON; the highest version is in force. No row = the code defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from regime.engine.classifier import RegimeThresholds
from regime.models import RegimeThresholdsVersion

AUDIT_KIND = "REGIME_THRESHOLDS_CHANGED"


def current_version() -> RegimeThresholdsVersion | None:
    return RegimeThresholdsVersion.objects.order_by("-version").first()


def thresholds_from_params(params: Mapping[str, object]) -> RegimeThresholds:
    """Stored JSON -> thresholds (fields missing from an older row take the code defaults)."""
    try:
        return RegimeThresholds.from_dict(dict(params))
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def current_thresholds() -> RegimeThresholds:
    """The thresholds in force: the newest stored version, else the code defaults."""
    row = current_version()
    return thresholds_from_params(row.params) if row is not None else RegimeThresholds()


def diff(old: RegimeThresholds, new: RegimeThresholds) -> dict[str, list]:
    a, b = old.to_json(), new.to_json()
    return {k: [a[k], b[k]] for k in a if a[k] != b[k]}


def save_thresholds(params: Mapping[str, object], *, user=None, comment: str = "") -> RegimeThresholdsVersion | None:
    """Validate ``params`` (any subset of the fields; the rest keep the values in force) and
    store them as the next version; audited. Returns None when nothing changed. Raises
    ``ValidationError`` (bad values) or ``PermissionDenied`` (not staff)."""
    if user is not None and not getattr(user, "is_staff", False):
        raise PermissionDenied("Only staff may change the regime thresholds.")
    from traders import audit

    with transaction.atomic():
        head = RegimeThresholdsVersion.objects.select_for_update().order_by("-version").first()
        old = thresholds_from_params(head.params) if head is not None else RegimeThresholds()
        try:
            new = RegimeThresholds.from_dict(dict(params), base=old)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        changes = diff(old, new)
        if not changes and head is not None:
            return None
        row = RegimeThresholdsVersion.objects.create(
            version=(head.version if head is not None else 0) + 1, params=new.to_json(), diff=changes,
            comment=comment[:200], created_by=user if getattr(user, "pk", None) else None)
        audit.record(AUDIT_KIND, actor=user, obj=row,
                     payload={"version": row.version, "diff": changes, "comment": row.comment})
    return row


def form_fields(th: RegimeThresholds | None = None) -> list[tuple[str, str, str]]:
    """(field, zero_at or value, one_at or "") for the STRATEGY form, in declaration order."""
    out = []
    for k, v in (th or current_thresholds()).to_json().items():
        if isinstance(v, list):
            out.append((k, repr(float(v[0])), repr(float(v[1]))))
        else:
            out.append((k, repr(float(v)), ""))
    return out


def params_from_post(post: Mapping[str, str]) -> dict[str, object]:
    """Form fields ``<field>.0`` / ``<field>.1`` (ramps) and ``min_membership`` -> params.
    Fields not posted are left out (they keep the values in force)."""
    out: dict[str, object] = {}
    for name, value in RegimeThresholds().to_json().items():
        if isinstance(value, list):
            a, b = post.get(f"{name}.0"), post.get(f"{name}.1")
            if a is None and b is None:
                continue
            try:
                out[name] = [float(a), float(b)]
            except (TypeError, ValueError):
                raise ValidationError(f"{name}: both ends of the ramp must be numbers, got {a!r} and {b!r}") from None
        else:
            raw = post.get(name)
            if raw is None:
                continue
            try:
                out[name] = float(raw)
            except ValueError:
                raise ValidationError(f"{name} must be a number, got {raw!r}") from None
    return out
