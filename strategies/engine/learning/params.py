"""What a model version's parameters are, and how they reach a scan [AI-3], [AI-5].

A model version's ``params`` is one flat JSON object:

* risk-profile keys (``risk.engine.profiles.RiskProfile`` fields). The tuner sets
  ``module_weights`` (the feature weights [SC-2]) and ``entry_threshold`` (the score threshold
  [SC-4]); any other profile key may be present. AI MODE merges them over STANDARD.
* scan keys, which the risk profile does not know:

  - ``top_n`` (int 3..200): the screener's top-N markets by traded value [PL-1];
  - ``penalty_weights`` ``{"CONFLICT": w, "EXTENSION": w}`` (each 0..1), see
    ``strategies.engine.aggregator``;
  - ``regime_weights`` ``{regime: w}`` (each 0.25..2): the regime policy multipliers applied to
    the final score through [RG-3] (``AggregatorParams.regime_weights``).

:func:`split` separates the two, :func:`apply_scan_params` applies the scan keys (and the
bandit's weights) to a ``ScanParams``. The tuner's evaluator and the live tick use the same
function, so a tuned value means the same thing in the backtest and in trading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from risk.engine.profiles import ProfileError, RiskProfile
from strategies.engine.aggregator import PENALTY_TERMS
from strategies.engine.pipeline import ScanParams

SCAN_KEYS: tuple[str, ...] = ("top_n", "penalty_weights", "regime_weights")
PROFILE_KEYS: frozenset[str] = frozenset(f.name for f in fields(RiskProfile)) - {"name"}
REGIME_LABELS: tuple[str, ...] = ("TREND", "RANGE", "BREAKOUT_ROTATION", "CHOP", "PANIC")
TOP_N_RANGE = (3, 200)
REGIME_WEIGHT_RANGE = (0.25, 2.0)


def split(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(risk-profile keys, scan keys) of a model version's params. Raises ProfileError listing
    every unknown or invalid key."""
    errors = validate(params)
    if errors:
        raise ProfileError(errors)
    profile = {k: v for k, v in params.items() if k in PROFILE_KEYS}
    scan = {k: v for k, v in params.items() if k in SCAN_KEYS}
    return profile, scan


def validate(params: Mapping[str, Any]) -> list[str]:
    """Every problem with ``params`` (empty when valid), the profile part included."""
    if not isinstance(params, Mapping):
        return ["model params must be an object"]
    errors = [f"unknown parameter {k!r}" for k in params if k not in PROFILE_KEYS and k not in SCAN_KEYS]
    profile = {k: v for k, v in params.items() if k in PROFILE_KEYS}
    try:
        RiskProfile.from_dict({**profile, "name": "AI_MODE"})
    except ProfileError as exc:
        errors += exc.errors
    if "top_n" in params:
        v = params["top_n"]
        if isinstance(v, bool) or not isinstance(v, int) or not TOP_N_RANGE[0] <= v <= TOP_N_RANGE[1]:
            errors.append(f"top_n must be an integer in {list(TOP_N_RANGE)}, got {v!r}")
    if "penalty_weights" in params:
        pw = params["penalty_weights"]
        if not isinstance(pw, Mapping):
            errors.append("penalty_weights must be an object")
        else:
            errors += [f"unknown penalty term {k!r}" for k in pw if k not in PENALTY_TERMS]
            errors += [f"penalty_weights.{k} must be in [0, 1], got {v!r}" for k, v in pw.items()
                       if not _number_in(v, 0.0, 1.0)]
    if "regime_weights" in params:
        rw = params["regime_weights"]
        if not isinstance(rw, Mapping):
            errors.append("regime_weights must be an object")
        else:
            errors += [f"unknown regime {k!r}" for k in rw if k not in REGIME_LABELS]
            errors += [f"regime_weights.{k} must be in {list(REGIME_WEIGHT_RANGE)}, got {v!r}" for k, v in rw.items()
                       if not _number_in(v, *REGIME_WEIGHT_RANGE)]
    return errors


def _number_in(v: Any, lo: float, hi: float) -> bool:
    return (not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v) and lo <= v <= hi)


def apply_scan_params(base: ScanParams, scan: Mapping[str, Any] | None = None,
                      bandit_weights: Mapping[str, Mapping[str, float]] | None = None) -> ScanParams:
    """``base`` with the scan keys and the bandit's ``{regime: {module: w}}`` applied."""
    scan = scan or {}
    agg = base.aggregator
    changes: dict[str, Any] = {}
    if "penalty_weights" in scan:
        changes["penalty_weights"] = {str(k): float(v) for k, v in scan["penalty_weights"].items()}
    if "regime_weights" in scan:
        changes["regime_weights"] = {**agg.regime_weights,
                                     **{str(k): float(v) for k, v in scan["regime_weights"].items()}}
    if bandit_weights:
        changes["bandit_weights"] = {str(r): {str(m): float(w) for m, w in row.items()}
                                     for r, row in bandit_weights.items()}
    out = replace(base, aggregator=replace(agg, **changes)) if changes else base
    if "top_n" in scan:
        out = replace(out, screener=replace(out.screener, top_n=int(scan["top_n"])))
    return out
