"""Signal types: score-module output and aggregated decisions [SC-1]..[SC-4] (no Django)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

import numpy as np


class Direction(IntEnum):
    SHORT = -1
    NONE = 0
    LONG = 1


class Action(StrEnum):
    ENTER = "ENTER"   # final score >= entry threshold and every pre-trade check passed
    EXIT = "EXIT"     # final score <= exit threshold on a held market
    HOLD = "HOLD"     # held, nothing to do
    SKIP = "SKIP"     # not entered: the reason codes say why


@dataclass(frozen=True, slots=True)
class ModuleOutput:
    """One score module over the whole market at one bar.

    ``score``: float64 ``[markets]`` in 0..100 (NaN not allowed: a module that cannot judge a
    market gives 0 and says why in ``reasons``).
    ``direction``: int8 ``[markets]`` of Direction values.
    ``reasons``: per market, a tuple of reason codes (``"TP_PULLBACK_TO_EMA20"``...).
    ``raw``: named raw metrics, each float64 ``[markets]``.
    """

    module: str
    score: np.ndarray
    direction: np.ndarray
    reasons: tuple[tuple[str, ...], ...]
    raw: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MarketSignal:
    """The aggregator's verdict on one market at one bar; stored as a Signal row."""

    symbol: str
    ts: int
    module_scores: dict[str, float]
    base_score: float          # weighted sum before smoothing
    total_score: float         # EMA-smoothed [SC-3]
    final_score: float         # total * regime_weight * bandit_weight * risk_multiplier
    direction: Direction
    reason_codes: tuple[str, ...]
    raw_metrics: dict[str, float] = field(default_factory=dict)
    action: Action = Action.SKIP  # the aggregator's proposal [SC-4]; risk checks may still refuse ENTER
