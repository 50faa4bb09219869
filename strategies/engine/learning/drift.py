"""Drift monitoring and the automatic-rollback rules of a deployed model [AI-6] (STAB-0002).

Every hour the deployed model's last 24 hours (the rolling window) are compared with its
baseline reference: the 14 days before it was deployed, while the baseline model (the one it
replaced, or STANDARD) was running. Inputs, all computed by the Django side:

* ``recent_r``: net return of every trade the model's traders closed in the window;
* ``reference_r``: the same for the baseline over the reference window; when it holds fewer
  than ``min_reference_trades`` trades, the model's own out-of-sample expectation from the gate
  (``expected_mean`` / ``expected_std``) is the reference instead;
* ``net_return_24h``: equity change of the model's traders over the window (realised and
  unrealised, net of fees);
* ``consecutive_losses``: losing trades in a row, newest first, since the model was deployed;
* regime counts: the market regime labels seen in the window and in the reference window.

Rollback (checked first; the first that holds is the ``rollback_rule``):

1. ``NET_RETURN_24H``       net_return_24h < -2 %.
2. ``CONSECUTIVE_LOSSES``   consecutive_losses >= 5.
3. ``DRIFT_WARN_STREAK``    this check warns and the two before it warned too (3 in a row).

DRIFT_WARN reasons (any one makes the check a warning):

* ``PERFORMANCE``   at least ``min_trades`` (5) recent trades and their mean r_net is more than
  2 standard errors below the reference mean: ``z = (mean - ref_mean) / (ref_std / sqrt(n)) < -2``.
* ``NET_RETURN``    net_return_24h < -1 % (half-way to the rollback).
* ``LOSS_STREAK``   consecutive_losses >= 3.
* ``REGIME_MIX``    the population stability index of the regime labels, window against
  reference, is above 0.25 (both with at least ``min_regime_samples`` labels, the reference
  spanning at least ``min_reference_hours`` (72): a mix is only a reference once it covers
  several regime episodes) AND the window's
  trades do worse than the reference (mean r_net below the reference mean, or below 0 without a
  reference): ``PSI = sum_k (p_k - q_k) ln(p_k / q_k)`` with shares floored at 1e-4. The model
  was validated on the reference mix; a new mix in which it also does worse is drift, while a
  new mix alone is not (regime episodes last hours to days, so a 24 h window often differs from
  14 days without anything being wrong).

A check with no trade, no equity and no regime label in its window is INSUFFICIENT (nothing to
judge, the streak is unchanged); otherwise OK, DRIFT_WARN or ROLLBACK.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class DriftStatus(StrEnum):
    OK = "OK"
    DRIFT_WARN = "DRIFT_WARN"
    ROLLBACK = "ROLLBACK"
    INSUFFICIENT = "INSUFFICIENT"


@dataclass(frozen=True, slots=True)
class DriftConfig:
    window_hours: float = 24.0
    reference_days: float = 14.0
    rollback_net_return: float = -0.02
    rollback_consecutive_losses: int = 5
    rollback_warn_streak: int = 3
    warn_net_return: float = -0.01
    warn_consecutive_losses: int = 3
    warn_z: float = -2.0
    min_trades: int = 5
    min_reference_trades: int = 20
    psi_warn: float = 0.25
    min_regime_samples: int = 30
    min_reference_hours: float = 72.0


@dataclass(frozen=True, slots=True)
class DriftInputs:
    recent_r: np.ndarray
    reference_r: np.ndarray
    net_return_24h: float | None
    consecutive_losses: int
    recent_regimes: Mapping[str, int] = field(default_factory=dict)
    reference_regimes: Mapping[str, int] = field(default_factory=dict)
    previous_streak: int = 0
    reference_hours: float = 0.0          # span of the reference window's regime labels
    expected_mean: float | None = None
    expected_std: float | None = None


@dataclass(frozen=True, slots=True)
class DriftResult:
    status: DriftStatus
    reasons: tuple[str, ...]
    rollback_rule: str | None
    warn_streak: int
    metrics: dict[str, float | int | str | None]


def psi(reference: Mapping[str, int], recent: Mapping[str, int], floor: float = 1e-4) -> float:
    """Population stability index of two label count tables (0: same mix)."""
    labels = sorted(set(reference) | set(recent))
    ref = np.array([reference.get(k, 0) for k in labels], dtype=np.float64)
    cur = np.array([recent.get(k, 0) for k in labels], dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return float("nan")
    q = np.maximum(ref / ref.sum(), floor)
    p = np.maximum(cur / cur.sum(), floor)
    return float(((p - q) * np.log(p / q)).sum())


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def evaluate_drift(inputs: DriftInputs, config: DriftConfig | None = None) -> DriftResult:
    """One drift check; see the module docstring for every rule."""
    c = config or DriftConfig()
    recent = np.asarray(inputs.recent_r, dtype=np.float64)
    reference = np.asarray(inputs.reference_r, dtype=np.float64)
    if not (np.isfinite(recent).all() and np.isfinite(reference).all()):
        raise ValueError("trade returns must be finite")
    n = len(recent)
    mean = float(recent.mean()) if n else None
    if len(reference) >= c.min_reference_trades:
        ref_mean, ref_std, ref_source = float(reference.mean()), float(reference.std(ddof=1)), "baseline"
    elif inputs.expected_mean is not None and inputs.expected_std:
        ref_mean, ref_std, ref_source = float(inputs.expected_mean), float(inputs.expected_std), "gate"
    else:
        ref_mean, ref_std, ref_source = None, None, "none"
    z = None
    if n >= c.min_trades and ref_mean is not None and ref_std and ref_std > 0:
        z = (mean - ref_mean) / (ref_std / math.sqrt(n))
    n_recent_regimes = sum(inputs.recent_regimes.values())
    n_reference_regimes = sum(inputs.reference_regimes.values())
    mix = None
    if (n_recent_regimes >= c.min_regime_samples and n_reference_regimes >= c.min_regime_samples
            and inputs.reference_hours >= c.min_reference_hours):
        mix = psi(inputs.reference_regimes, inputs.recent_regimes)
    net = _finite(inputs.net_return_24h)
    metrics: dict[str, float | int | str | None] = {
        "n_trades_24h": n, "mean_r_net_24h": mean, "win_rate_24h": float((recent > 0).mean()) if n else None,
        "net_return_24h": net, "consecutive_losses": inputs.consecutive_losses,
        "reference": ref_source, "reference_trades": len(reference), "reference_mean": ref_mean,
        "reference_std": ref_std, "z": z, "regime_psi": _finite(mix) if mix is not None else None,
        "regimes_24h": n_recent_regimes, "regimes_reference": n_reference_regimes,
        "reference_hours": inputs.reference_hours,
    }
    if n == 0 and net is None and n_recent_regimes == 0:
        return DriftResult(DriftStatus.INSUFFICIENT, (), None, inputs.previous_streak, metrics)
    reasons = []
    if z is not None and z < c.warn_z:
        reasons.append("PERFORMANCE")
    if net is not None and net < c.warn_net_return:
        reasons.append("NET_RETURN")
    if inputs.consecutive_losses >= c.warn_consecutive_losses:
        reasons.append("LOSS_STREAK")
    worse = mean is not None and mean < (ref_mean if ref_mean is not None else 0.0)
    if mix is not None and math.isfinite(mix) and mix > c.psi_warn and worse:
        reasons.append("REGIME_MIX")
    warn = bool(reasons)
    streak = inputs.previous_streak + 1 if warn else 0
    metrics["warn_streak"] = streak
    rule = None
    if net is not None and net < c.rollback_net_return:
        rule = "NET_RETURN_24H"
    elif inputs.consecutive_losses >= c.rollback_consecutive_losses:
        rule = "CONSECUTIVE_LOSSES"
    elif warn and streak >= c.rollback_warn_streak:
        rule = "DRIFT_WARN_STREAK"
    if rule is not None:
        return DriftResult(DriftStatus.ROLLBACK, tuple(reasons), rule, streak, metrics)
    return DriftResult(DriftStatus.DRIFT_WARN if warn else DriftStatus.OK, tuple(reasons), None, streak, metrics)
