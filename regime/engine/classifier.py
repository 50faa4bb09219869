"""Regime classifier [RG-2]..[RG-5]: the inputs -> label, regime_score 0-100, confidence.

Each label has a membership in 0..1: the product of linear ramps over a few inputs. A ramp
``(a, b)`` is 0 at ``a`` and 1 at ``b`` (rising when ``a < b``, falling when ``a > b``), so every
rule reads like "ADX from 20 to 30" and can be checked against a chart. A ramp whose input is
NaN (not enough history) counts 0.5 and halves the confidence.

Volatility and dispersion are read scale-free, so one set of thresholds works on any venue and
timeframe: ``atr_rel`` = the leader's ATR% over its own 24 h median (input ``btc_atr_rel``) and
``dispersion_rel`` = ``dispersion_1h / (btc_atr_pct_4h / 100)`` (how much the markets disagree
over the hour, in units of the leader's typical 15 m range).

* PANIC = breadth ramp (few markets up over 1 h) x atr_rel ramp (far above normal).
* TREND = leader ADX ramp x low-whipsaw ramp x one-sided-breadth ramp x atr_rel not exploding.
* BREAKOUT_ROTATION = dispersion_rel ramp x top-5 value share ramp x breadth-not-collapsed ramp.
* CHOP = atr_rel ramp (above normal) x whipsaw ramp (reverses bar after bar).
* RANGE = ADX-not-extreme ramp x atr_rel-at-most-normal ramp x dispersion_rel-not-rotation
  ramp; also the fallback when no membership reaches ``min_membership``.

The label is the highest membership (ties in the order above), ``regime_score = 100 *
membership`` of the winner (how clearly the market shows it; used by [RG-3]) and
``confidence = (best - second) / best`` (how clearly it beats the runner-up).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

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

    Units: ADX 0..100; ``*_atr_rel`` a ratio to the leader's own 24 h median ATR% (1 = normal);
    ``*_dispersion_rel`` the 1 h dispersion over the leader's ATR as a fraction (a ratio);
    breadth and shares 0..1; whipsaw 0..1. Stored, versioned copies live in the database
    (``regime.models.RegimeThresholdsVersion``); these defaults apply when none exists.
    """

    # Defaults fitted on the simulator AND real 1-minute data together (docs/regime.md): the
    # simulator's accuracy (seeds 1-6) maximised by a local random search subject to PANIC <= 4 %
    # and CHOP <= 25 % of the bars on every real 1m set and PANIC's next-4h drawdown >= 2.1x
    # RANGE's where a real set has both, then rounded. Every volatility and dispersion ramp is
    # scale-free: ``atr_rel`` is the leader's ATR% over its own 24 h median (1 = normal),
    # ``dispersion_rel`` the 1 h cross-sectional dispersion in units of the leader's ATR%
    # (dispersion_1h / (btc_atr_pct_4h / 100)).
    # PANIC: no market up over 1 h while the leader is far more volatile than its own normal.
    panic_breadth: Ramp = (0.03, 0.0)
    panic_atr_rel: Ramp = (1.5, 2.6)
    # TREND: ADX rising, clean moves, one-sided breadth, volatility not exploding.
    trend_adx: Ramp = (7.0, 24.0)
    trend_whipsaw: Ramp = (1.35, 0.85)
    trend_breadth_skew: Ramp = (-0.08, 0.5)      # |breadth - 0.5|
    trend_atr_rel: Ramp = (2.2, 1.5)
    # BREAKOUT_ROTATION: markets disperse far more than the leader moves, value concentrated,
    # breadth not collapsed.
    rotation_dispersion_rel: Ramp = (2.5, 4.4)
    rotation_top5_share: Ramp = (0.09, 0.44)
    rotation_breadth: Ramp = (0.16, 0.22)
    # CHOP: leader more volatile than its normal while reversing bar after bar.
    chop_atr_rel: Ramp = (1.0, 1.4)
    chop_whipsaw: Ramp = (0.28, 0.63)
    # RANGE: ADX not extreme, volatility at or below normal, dispersion not rotation-like.
    range_adx: Ramp = (90.0, 50.0)
    range_atr_rel: Ramp = (1.55, 0.6)
    range_dispersion_rel: Ramp = (5.0, 4.5)
    # Below this best membership the market is called RANGE (nothing stands out).
    min_membership: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "min_membership":
                if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0.0):
                    raise ValueError(f"min_membership must be a finite number >= 0 (above 1: always RANGE), got {v!r}")
                continue
            if not (isinstance(v, tuple) and len(v) == 2
                    and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
                raise ValueError(f"{f.name} must be a ramp of two finite numbers [zero_at, one_at], got {v!r}")
            if v[0] == v[1]:
                raise ValueError(f"{f.name}: a ramp needs two different end points, got {list(v)}")

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> dict[str, object]:
        """JSON-ready: ramps as ``[zero_at, one_at]`` lists."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.as_dict().items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], base: RegimeThresholds | None = None) -> RegimeThresholds:
        """``base`` (default: the code defaults) with the fields in ``data`` replaced; ramps as
        two-element lists. Unknown fields and bad values raise ``ValueError`` naming the field."""
        if not isinstance(data, Mapping):
            raise ValueError("regime thresholds must be an object of field: value")
        base = base or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown regime threshold(s): {', '.join(unknown)}")
        values: dict[str, object] = {}
        for name, value in data.items():
            if name == "min_membership":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"min_membership must be a number, got {value!r}")
                values[name] = float(value)
            else:
                if not (isinstance(value, list | tuple) and len(value) == 2
                        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)):
                    raise ValueError(f"{name} must be a list of two numbers [zero_at, one_at], got {value!r}")
                values[name] = (float(value[0]), float(value[1]))
        return replace(base, **values)


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
    rel = inputs["btc_atr_rel"]
    with np.errstate(invalid="ignore", divide="ignore"):
        disp_rel = np.where(atrp > 0, disp / (atrp / 100.0), np.nan)
    panic = _ramp(br, th.panic_breadth) * _ramp(rel, th.panic_atr_rel)
    trend = (_ramp(adx, th.trend_adx) * _ramp(whip, th.trend_whipsaw) * _ramp(np.abs(br - 0.5), th.trend_breadth_skew)
             * _ramp(rel, th.trend_atr_rel))
    rotation = (_ramp(disp_rel, th.rotation_dispersion_rel) * _ramp(top5, th.rotation_top5_share)
                * _ramp(br, th.rotation_breadth))
    chop = _ramp(rel, th.chop_atr_rel) * _ramp(whip, th.chop_whipsaw)
    rng = _ramp(adx, th.range_adx) * _ramp(rel, th.range_atr_rel) * _ramp(disp_rel, th.range_dispersion_rel)
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
