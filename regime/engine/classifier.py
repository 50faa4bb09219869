"""Regime classifier [RG-2]..[RG-5]: six inputs -> label, regime_score 0-100, confidence.

Each label has a membership in 0..1: the product of linear ramps over a few inputs. A ramp
``(a, b)`` is 0 at ``a`` and 1 at ``b`` (rising when ``a < b``, falling when ``a > b``), so every
rule reads like "ADX from 20 to 30" and can be checked against a chart. A ramp whose input is
NaN (not enough history) counts 0.5 and halves the confidence.

* PANIC = breadth ramp (few markets up over 1 h) x leader ATR% ramp (volatile).
* TREND = leader ADX ramp x low-whipsaw ramp x one-sided-breadth ramp.
* BREAKOUT_ROTATION = 1 h dispersion ramp x top-5 value share ramp x breadth-not-collapsed ramp.
* CHOP = leader ATR% ramp (violent) x whipsaw ramp (reverses bar after bar).
* RANGE = low-ADX ramp x low-ATR% ramp x low-dispersion ramp; also the fallback when no
  membership reaches ``min_membership``.

The label is the highest membership (ties in the order above), ``regime_score = 100 *
membership`` of the winner (how clearly the market shows it; used by [RG-3]) and
``confidence = (best - second) / best`` (how clearly it beats the runner-up).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from regime.engine.features import INPUT_NAMES, InputSeries
from regime.engine.types import RegimeInputs, RegimeLabel, RegimeState

ABSOLUTE_MAX_POSITIONS = 10

# Label order = tie-break priority (the most defensive first).
LABELS: tuple[RegimeLabel, ...] = (
    RegimeLabel.PANIC, RegimeLabel.TREND, RegimeLabel.BREAKOUT_ROTATION, RegimeLabel.CHOP, RegimeLabel.RANGE,
)

DEFAULT_MAX_POSITIONS: dict[RegimeLabel, int] = {
    RegimeLabel.BREAKOUT_ROTATION: 7,
    RegimeLabel.TREND: 5,
    RegimeLabel.RANGE: 3,
    RegimeLabel.CHOP: 0,
    RegimeLabel.PANIC: 0,
}

Ramp = tuple[float, float]


@dataclass(frozen=True, slots=True)
class RegimeThresholds:
    """Ramps ``(zero_at, one_at)`` of every rule; all configurable per deployment.

    Units: ADX 0..100; ATR% in percent of price; breadth and shares 0..1; dispersion is the
    standard deviation of 1 h returns as a fraction (0.01 = 1 %); whipsaw 0..1.
    """

    # Defaults tuned on the simulator (state version 2: OU level model for RANGE / CHOP; seeds 1-6,
    # 14 days each; see docs/regime.md).
    # PANIC: no market up over 1 h, leader ATR% elevated.
    panic_breadth: Ramp = (0.03, 0.0)
    panic_atr_pct: Ramp = (0.10, 0.60)
    # TREND: ADX rising from 10 to 26, mild preference for clean moves and one-sided breadth.
    trend_adx: Ramp = (10.0, 26.0)
    trend_whipsaw: Ramp = (1.2, 0.8)
    trend_breadth_skew: Ramp = (-0.08, 0.53)     # |breadth - 0.5|
    # BREAKOUT_ROTATION: 1 h dispersion above ~1.3 %, value concentrated, breadth not collapsed.
    rotation_dispersion: Ramp = (0.0124, 0.0132)
    rotation_top5_share: Ramp = (0.09, 0.44)
    rotation_breadth: Ramp = (0.16, 0.22)
    # CHOP: leader ATR% from 0.36 to 0.56 with whipsaw above ~0.45.
    chop_atr_pct: Ramp = (0.36, 0.56)
    chop_whipsaw: Ramp = (0.41, 0.52)
    # RANGE: ADX not extreme (below ~60), low ATR% (below ~0.3), 1 h dispersion well below ~1.5 %.
    range_adx: Ramp = (90.0, 63.0)
    range_atr_pct: Ramp = (0.42, 0.28)
    range_dispersion: Ramp = (0.015, 0.0047)
    # Below this best membership the market is called RANGE (nothing stands out).
    min_membership: float = 0.10

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _ramp(x: np.ndarray, r: Ramp) -> np.ndarray:
    a, b = r
    if a == b:
        raise ValueError("a ramp needs two different end points")
    with np.errstate(invalid="ignore"):
        v = np.clip((x - a) / (b - a), 0.0, 1.0)
    return np.where(np.isnan(x), 0.5, v)


def memberships(inputs: dict[str, np.ndarray], th: RegimeThresholds) -> np.ndarray:
    """Membership of every label, ``[5 labels (LABELS order) x n]``; inputs are arrays ``[n]``."""
    adx = inputs["btc_adx_4h"]
    atrp = inputs["btc_atr_pct_4h"]
    br = inputs["breadth_up_1h"]
    disp = inputs["dispersion_1h"]
    top5 = inputs["top5_value_share_1h"]
    whip = inputs["whipsaw_5m"]
    panic = _ramp(br, th.panic_breadth) * _ramp(atrp, th.panic_atr_pct)
    trend = _ramp(adx, th.trend_adx) * _ramp(whip, th.trend_whipsaw) * _ramp(np.abs(br - 0.5), th.trend_breadth_skew)
    rotation = _ramp(disp, th.rotation_dispersion) * _ramp(top5, th.rotation_top5_share) * _ramp(br, th.rotation_breadth)
    chop = _ramp(atrp, th.chop_atr_pct) * _ramp(whip, th.chop_whipsaw)
    rng = _ramp(adx, th.range_adx) * _ramp(atrp, th.range_atr_pct) * _ramp(disp, th.range_dispersion)
    return np.stack([panic, trend, rotation, chop, rng])


@dataclass(frozen=True, slots=True)
class RegimeSeries:
    """Labels for every bar of a history: ``labels`` object array of label strings ``[bars]``,
    ``regime_score`` and ``confidence`` float64 ``[bars]``, and the inputs."""

    labels: np.ndarray
    regime_score: np.ndarray
    confidence: np.ndarray
    inputs: InputSeries


def _decide(m: np.ndarray, missing: np.ndarray, th: RegimeThresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    best_i = np.argmax(m, axis=0)
    srt = np.sort(m, axis=0)
    best, second = srt[-1], srt[-2]
    fallback = best < th.min_membership
    range_i = LABELS.index(RegimeLabel.RANGE)
    label_i = np.where(fallback, range_i, best_i)
    score = np.where(fallback, 100.0 * m[range_i], 100.0 * best)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(best > 0, (best - second) / best, 0.0)
    conf = np.where(fallback, 0.0, conf) * np.where(missing, 0.5, 1.0)
    return label_i, np.round(score, 6), np.round(conf, 6)


def classify(inputs: RegimeInputs, thresholds: RegimeThresholds | None = None) -> RegimeState:
    """Classify one evaluation [RG-2]."""
    th = thresholds or RegimeThresholds()
    arr = {n: np.array([getattr(inputs, n)], dtype=np.float64) for n in INPUT_NAMES}
    missing = np.array([any(np.isnan(a[0]) for a in arr.values())])
    li, score, conf = _decide(memberships(arr, th), missing, th)
    return RegimeState(LABELS[int(li[0])], float(score[0]), float(conf[0]), inputs)


def classify_series(inputs: InputSeries, thresholds: RegimeThresholds | None = None) -> RegimeSeries:
    """Classify every bar at once (evaluation, backtests); bar i equals
    ``classify(inputs.at(i))``."""
    th = thresholds or RegimeThresholds()
    arr = {n: np.asarray(getattr(inputs, n), dtype=np.float64) for n in INPUT_NAMES}
    missing = ~inputs.valid
    li, score, conf = _decide(memberships(arr, th), missing, th)
    names = np.array([str(label) for label in LABELS], dtype=object)
    return RegimeSeries(names[li], score, conf, inputs)


def applied_weight(w: float | np.ndarray, regime_score: float | np.ndarray) -> float | np.ndarray:
    """[RG-3] ``1 + (w - 1) * regime_score / 100``: a module's per-regime weight ``w`` applies
    fully only when the regime is clear, and fades to 1 (neutral) when it is not."""
    rs = np.clip(regime_score, 0.0, 100.0)
    out = 1.0 + (np.asarray(w, dtype=np.float64) - 1.0) * rs / 100.0
    return float(out) if np.ndim(out) == 0 else out


def max_positions(label: RegimeLabel | str, profile_cap: int = ABSOLUTE_MAX_POSITIONS,
                  table: dict[RegimeLabel, int] | None = None) -> int:
    """[RG-5] Maximum concurrent positions: the regime's table value, capped by the profile's
    cap and never above ABSOLUTE_MAX_POSITIONS (10). CHOP and PANIC give 0 (no new entries)."""
    t = table or DEFAULT_MAX_POSITIONS
    n = t[RegimeLabel(label)]
    return max(0, min(n, profile_cap, ABSOLUTE_MAX_POSITIONS))


def allows_entries(label: RegimeLabel | str) -> bool:
    """[RG-4] CHOP and PANIC allow no new entries."""
    return RegimeLabel(label) not in (RegimeLabel.CHOP, RegimeLabel.PANIC)


def may_reduce_positions(label: RegimeLabel | str) -> bool:
    """[RG-4] PANIC allows reducing existing positions."""
    return RegimeLabel(label) is RegimeLabel.PANIC
