"""Profile edits: validated by risk.engine.profiles, stored as a new ConfigVersion, audited.

Running traders keep the ConfigVersion they were created with; an edit affects new traders only.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Max

from risk.engine.profiles import PARAMETERS, ProfileError, RiskProfile, profile_for
from strategies.engine.learning.lifecycle import LIVE_SLOT, PAPER_SLOT
from strategies.engine.learning.params import PROFILE_KEYS, SCAN_KEYS
from strategies.models import ConfigVersion, ModelVersion, ProfileKey, StrategyProfile

# Parameters shown as one form field each. module_weights is edited as one field per module;
# take_profit_plan as JSON ([[R multiple, fraction], ...]).
SKIP = {"name"}


def deployed_model(mode: str | None = None) -> ModelVersion | None:
    """The model version AI MODE traders in ``mode`` run [AI-5]: LIVE -> the LIVE_ARMED model;
    PAPER (or None) -> the paper-slot model (PAPER_DEPLOYED / LIVE_ELIGIBLE), else the armed
    one. None: no model, AI MODE runs STANDARD."""
    if mode == "LIVE":
        return ModelVersion.objects.filter(slot=LIVE_SLOT).first()
    return (ModelVersion.objects.filter(slot=PAPER_SLOT).first()
            or ModelVersion.objects.filter(slot=LIVE_SLOT).first())


def live_model_params(mode: str | None = None) -> dict | None:
    """The risk-profile part of the deployed model's params (see :func:`deployed_model`)."""
    model = deployed_model(mode)
    if model is None:
        return None
    return {k: v for k, v in model.params.items() if k in PROFILE_KEYS}


def effective_profile(profile: StrategyProfile, params: dict | None = None, mode: str | None = None) -> RiskProfile:
    """The RiskProfile a trader with this profile runs (AI MODE: the deployed model for the
    trader's ``mode`` over STANDARD, or STANDARD)."""
    stored = profile.params if params is None else params
    if profile.key == ProfileKey.AI_MODE:
        live = live_model_params(mode)
        return profile_for(profile.key, live_params={**stored, **(live or {})})
    return profile_for(profile.key, stored=stored)


def baseline_profile(profile: StrategyProfile, params: dict | None = None) -> RiskProfile:
    """What a trader with this profile runs without any model: for AI MODE, STANDARD with the
    stored edits (the deterministic strategy a model is compared with, [RK-4] model
    disagreement); the same as ``effective_profile`` for the other profiles."""
    stored = profile.params if params is None else params
    if profile.key == ProfileKey.AI_MODE:
        return profile_for(profile.key, live_params=dict(stored))
    return profile_for(profile.key, stored=stored)


def scan_overrides(profile: StrategyProfile, mode: str | None = None) -> dict:
    """What a scan of an AI MODE trader adds to the profile's ScanParams [AI-3], [AI-4]: the
    deployed model's scan keys (top_n, penalty_weights, regime_weights) and the bandit's
    per-regime module weights. Empty for the other profiles. JSON-safe, so a tick can store it
    beside the effective profile; apply with ``strategies.engine.learning.params.apply_scan_params``
    (``scan`` and ``bandit_weights``)."""
    if profile.key != ProfileKey.AI_MODE:
        return {}
    from strategies.models import BanditState

    model = deployed_model(mode)
    scan = {k: v for k, v in (model.params if model else {}).items() if k in SCAN_KEYS}
    bandit: dict[str, dict[str, float]] = {}
    for regime, module, weight in BanditState.objects.values_list("regime", "module", "weight"):
        bandit.setdefault(regime, {})[module] = float(weight)
    return {"model_version": model.pk if model else None, "scan": scan, "bandit_weights": bandit}


def param_keys(profiles: list[StrategyProfile] | None = None) -> list[str]:
    return [key for key in PARAMETERS if key not in SKIP]


def param_rows(profiles: list[StrategyProfile]) -> list[dict]:
    effective = [effective_profile(p).to_dict() for p in profiles]
    return [
        {"key": key, "unit": PARAMETERS[key].get("unit", ""), "doc": PARAMETERS[key].get("doc", ""),
         "values": [_display(e[key]) for e in effective]}
        for key in param_keys()
    ]


def _display(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def params_from_post(profile: StrategyProfile, post) -> dict:
    """Read the edit form; every parameter not posted keeps its current value. Raises
    ValidationError listing every bad field."""
    current = effective_profile(profile).to_dict()
    data: dict[str, Any] = {}
    errors: list[str] = []
    for key in param_keys():
        if key == "module_weights":
            weights = dict(current[key])
            for module in list(weights) + [m for m in ("MR", "MOM", "MICRO") if m not in weights]:
                raw = post.get(f"module_weights.{module}")
                if raw not in (None, ""):
                    try:
                        weights[module] = float(raw)
                    except ValueError:
                        errors.append(f"module_weights.{module}: not a number")
            data[key] = weights
            continue
        raw = post.get(key)
        if raw is None:
            data[key] = current[key]
            continue
        template = current[key]
        try:
            if isinstance(template, bool):
                lowered = raw.strip().lower()
                if lowered not in ("true", "false", "on", "off", "1", "0"):
                    raise ValueError(raw)
                data[key] = lowered in ("true", "on", "1")
            elif isinstance(template, int):
                data[key] = int(raw)
            elif isinstance(template, float):
                data[key] = float(raw)
            elif isinstance(template, list):
                data[key] = json.loads(raw)
            else:
                data[key] = raw
        except (ValueError, json.JSONDecodeError):
            errors.append(f"{key}: {raw!r} is not a valid value")
    if errors:
        raise ValidationError(errors)
    try:
        validated = RiskProfile.from_dict({**data, "name": profile.key}, base=effective_profile(profile))
    except ProfileError as exc:
        raise ValidationError(exc.errors) from None
    out = validated.to_dict()
    out.pop("name", None)
    return out


def full_params(profile: StrategyProfile) -> dict:
    """Every parameter's effective value (stored values over the profile's defaults)."""
    data = effective_profile(profile).to_dict()
    data.pop("name", None)
    return data


def diff_params(old: dict, new: dict) -> dict[str, list]:
    keys = sorted(set(old) | set(new))
    return {k: [old.get(k), new.get(k)] for k in keys if old.get(k) != new.get(k)}


def update_profile(*, profile: StrategyProfile, params: dict, user, comment: str = "") -> ConfigVersion:
    """Store validated params as the profile's next ConfigVersion (staff only)."""
    from traders import audit
    from traders.services import can_manage_live, log_event

    if not can_manage_live(user):
        raise PermissionDenied("only staff may change strategy profiles")
    try:
        RiskProfile.from_dict({**params, "name": profile.key}, base=effective_profile(profile))
    except ProfileError as exc:
        raise ValidationError(exc.errors) from None
    with transaction.atomic():
        profile = StrategyProfile.objects.select_for_update().get(pk=profile.pk)
        diff = diff_params(full_params(profile), params)
        if not diff:
            raise ValidationError("nothing changed")
        number = (ConfigVersion.objects.filter(profile=profile).aggregate(m=Max("version"))["m"] or 0) + 1
        version = ConfigVersion.objects.create(profile=profile, version=number, params=params, diff=diff,
                                               comment=comment, created_by=user)
        profile.params, profile.current_version = params, version
        profile.save(update_fields=["params", "current_version", "updated_at"])
        audit.record("CONFIG_CHANGED", actor=user, obj=version,
                     payload={"profile": profile.key, "version": number, "diff": diff, "comment": comment})
        log_event(None, "CONFIG_CHANGED", f"{profile.name} v{number}: {', '.join(diff)} changed by {user.username}")
    return version


def edit_fields(profile: StrategyProfile) -> list[tuple[str, str]]:
    """(name, current value) for each scalar form field of one profile, plus one per module weight."""
    current = effective_profile(profile).to_dict()
    out: list[tuple[str, str]] = []
    for key in param_keys():
        if key == "module_weights":
            out += [(f"module_weights.{m}", str(w)) for m, w in current[key].items()]
        elif key == "take_profit_plan":
            out.append((key, json.dumps(current[key])))
        else:
            out.append((key, str(current[key]).lower() if isinstance(current[key], bool) else str(current[key])))
    return out
