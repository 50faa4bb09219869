"""Score calibration [CA-2]: one score scale that means the same on every market and timeframe.

The aggregator's composite (the weighted module sum, smoothed by the score EMA) is a sum of
conditional setups: a module scores 0 until its setup is present, and the setups rarely
coincide. Its raw level therefore says little by itself (the raw composite of the default
weights never passed ~66 in six weeks of real minutes on any market), and the profiles'
thresholds (60..80, times a risk multiplier of 0.8..1.3) were unreachable.

The calibrated score puts the composite on a **rarity scale** measured on real markets:

    score(x) = 70 - 12 * log2(r(x))

where ``r(x)`` is how often, per market and per day, the smoothed composite rises through
``x`` (up-crossings: one per setup episode, not one per minute above it). So:

=====  ============================  ==============================================
score  episodes per market per day   meaning
=====  ============================  ==============================================
100    ~0.18 (one in ~6 days)        the rarest setups (SAFETY FIRST: 80 / 0.8)
70     ~1                            one a day per market (STANDARD)
56.5   ~2.2                          PROFIT FIRST's effective level (65 / 1.15)
46     ~4                            CRAZY's effective level (60 / 1.3)
40     ~5.7                          the exit level: the setup has faded
=====  ============================  ==============================================

The curve ``r(x)`` was measured with :func:`crossing_rates` on every real 1-minute set in
``shared/data`` (Upbit KRW 2025, Binance USDT 2021 and 2023) and agreed across venues within
a factor of ~2 at every level, because the modules already normalise their raw metrics (ATR
units, z-scores, ranks). The knots below are the pooled (geometric mean) curve; they are data,
versioned by name, and re-fitted with :func:`fit_knots` (``docs/strategy-quality.md`` gives the
command). Between knots the map is linear; below the first knot it is 0, above the last 100.

Calibration applies after the EMA and before the regime / bandit / risk multipliers, so
``final = clip(calibrate(total) * regime_weight * bandit_weight * risk_multiplier, 0, 100)``
keeps [SC-3]'s product form. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Composite (raw, smoothed) -> calibrated score: ``strategy_quality --fit-calibration`` on the
#: real 1-minute universes of shared/data (Upbit KRW-BTC/ETH/XRP 2025-09, Binance BTC/ETH/BNB
#: 2021-04..05, Binance BTC/ETH/ADA/DOGE/SOL 2023-03..05; about 400 market-days), docs/scores.md.
REAL_V1: tuple[tuple[float, float], ...] = (
    (0.0, 0.0), (8.0, 16.7), (10.0, 17.9), (12.0, 19.2), (14.0, 21.9), (16.0, 24.0), (18.0, 26.9),
    (20.0, 33.0), (22.0, 36.4), (24.0, 39.9), (26.0, 44.3), (28.0, 49.1), (30.0, 54.8), (32.0, 60.4),
    (34.0, 66.0), (36.0, 72.4), (38.0, 79.7), (40.0, 86.0), (42.0, 92.5), (44.0, 98.4), (46.0, 100.0),
)
#: The identity (no calibration): the raw composite is the score.
RAW: tuple[tuple[float, float], ...] = ((0.0, 0.0), (100.0, 100.0))

CALIBRATIONS: dict[str, tuple[tuple[float, float], ...]] = {"REAL_V1": REAL_V1, "RAW": RAW}
DEFAULT_CALIBRATION = "REAL_V1"

#: Rarity scale: score = ANCHOR_SCORE - POINTS_PER_DOUBLING * log2(episodes per market-day).
ANCHOR_SCORE = 70.0
POINTS_PER_DOUBLING = 12.0


@dataclass(frozen=True, slots=True)
class ScoreCalibration:
    """A monotone piecewise-linear map from the raw composite to the calibrated score."""

    knots: tuple[tuple[float, float], ...] = REAL_V1

    def __post_init__(self) -> None:
        validate_knots(self.knots)

    def __call__(self, raw: np.ndarray | float) -> np.ndarray:
        return calibrate(self.knots, raw)

    @classmethod
    def named(cls, name: str) -> ScoreCalibration:
        try:
            return cls(CALIBRATIONS[name])
        except KeyError:
            raise ValueError(f"unknown score calibration {name!r}; known: {', '.join(CALIBRATIONS)}") from None


@lru_cache(maxsize=64)
def _arrays(knots: tuple[tuple[float, float], ...]) -> tuple[np.ndarray, np.ndarray]:
    """The knots as arrays, validated once per table (the aggregator calls the map every tick)."""
    validate_knots(knots)
    xs = np.array([float(k[0]) for k in knots])
    ys = np.array([float(k[1]) for k in knots])
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def calibrate(knots: tuple[tuple[float, float], ...], raw: np.ndarray | float) -> np.ndarray:
    """``ScoreCalibration(knots)(raw)`` without building the object (the aggregator's hot path)."""
    xs, ys = _arrays(tuple((float(a), float(b)) for a, b in knots))
    return np.interp(np.asarray(raw, dtype=np.float64), xs, ys, left=ys[0], right=ys[-1])


def validate_knots(knots: Sequence[Sequence[float]]) -> None:
    """At least two (raw, score) knots, raw strictly increasing, score non-decreasing in 0..100."""
    if len(knots) < 2:
        raise ValueError("a score calibration needs at least two knots")
    xs = [float(k[0]) for k in knots]
    ys = [float(k[1]) for k in knots]
    if not all(np.isfinite(xs)) or not all(np.isfinite(ys)):
        raise ValueError("score calibration knots must be finite")
    if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
        raise ValueError("score calibration raw levels must increase strictly")
    if any(b < a for a, b in zip(ys, ys[1:], strict=False)) or ys[0] < 0 or ys[-1] > 100:
        raise ValueError("calibrated scores must be non-decreasing within 0..100")


def crossing_rates(composite: np.ndarray, levels: Sequence[float], bar_seconds: int) -> np.ndarray:
    """Up-crossings of each level per market per day. ``composite``: ``[bars x markets]`` of the
    smoothed composite (NaN = not scored); a crossing is ``x[t-1] < level <= x[t]``."""
    c = np.asarray(composite, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 2:
        raise ValueError("composite must be [bars x markets] with at least two bars")
    valid = np.isfinite(c[1:]) & np.isfinite(c[:-1])
    market_days = valid.sum() * bar_seconds / 86_400.0
    if market_days <= 0:
        raise ValueError("no scored bars")
    out = np.empty(len(levels))
    with np.errstate(invalid="ignore"):
        for i, lv in enumerate(levels):
            out[i] = ((c[:-1] < lv) & (c[1:] >= lv) & valid).sum() / market_days
    return out


def score_for_rate(rate: np.ndarray | float) -> np.ndarray:
    """The rarity scale: ``70 - 12 * log2(rate)``, clipped to 0..100 (rate 0 -> 100)."""
    r = np.asarray(rate, dtype=np.float64)
    with np.errstate(divide="ignore"):
        s = ANCHOR_SCORE - POINTS_PER_DOUBLING * np.log2(r)
    return np.clip(np.nan_to_num(s, nan=0.0, posinf=100.0), 0.0, 100.0)


def fit_knots(rates_by_set: Sequence[np.ndarray], levels: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """Knots from the pooled (geometric mean over data sets) crossing rates at ``levels``: each
    level from the most-crossed one upwards gets ``score_for_rate`` (below it the composite sits
    above the level most of the time and crossings no longer measure rarity: the map is linear
    from (0, 0) there); scores are made non-decreasing and the curve ends at the first level
    that reaches 100."""
    rates = np.vstack([np.asarray(r, dtype=np.float64) for r in rates_by_set])
    with np.errstate(divide="ignore"):
        pooled = np.exp(np.mean(np.log(np.maximum(rates, 1e-6)), axis=0))
    peak = int(np.argmax(pooled))
    scores = np.maximum.accumulate(score_for_rate(pooled[peak:]))
    knots: list[tuple[float, float]] = [(0.0, 0.0)]
    for lv, s in zip(list(levels)[peak:], scores, strict=True):
        if lv <= 0:
            continue
        knots.append((float(lv), round(float(s), 1)))
        if s >= 100.0:
            break
    validate_knots(knots)
    return tuple(knots)


def smooth(base: np.ndarray, alpha: float) -> np.ndarray:
    """The aggregator's score EMA along axis 0 (``[bars x markets]``), seeded with the first bar."""
    b = np.asarray(base, dtype=np.float64)
    out = np.empty_like(b)
    out[0] = b[0]
    for t in range(1, len(b)):
        out[t] = alpha * b[t] + (1 - alpha) * out[t - 1]
    return out
