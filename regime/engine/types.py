"""Regime engine types [RG-1], [RG-2] (no Django)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RegimeLabel(StrEnum):
    BREAKOUT_ROTATION = "BREAKOUT_ROTATION"
    TREND = "TREND"
    RANGE = "RANGE"
    CHOP = "CHOP"
    PANIC = "PANIC"


@dataclass(frozen=True, slots=True)
class RegimeInputs:
    """The regime inputs [RG-1]: the six of the spec plus the leader's relative ATR.

    ``btc_atr_rel`` defaults to NaN so code written for the six inputs keeps working; a
    classifier given NaN counts its ramps 0.5 and halves the confidence."""

    btc_adx_4h: float
    btc_atr_pct_4h: float
    breadth_up_1h: float        # share of markets up over 1 h, 0..1
    dispersion_1h: float        # cross-sectional stdev of 1 h returns (fraction)
    top5_value_share_1h: float  # share of traded value in the top 5 markets, 0..1
    whipsaw_5m: float           # leader direction changes / efficiency on 5 m, 0..1 (1 = pure chop)
    btc_atr_rel: float = float("nan")  # leader ATR% / its own median over the last 24 h (1 = normal)


@dataclass(frozen=True, slots=True)
class RegimeState:
    """Classifier output [RG-2]: label, regime_score 0-100, confidence 0-1, and the inputs."""

    label: RegimeLabel
    regime_score: float
    confidence: float
    inputs: RegimeInputs

    @property
    def allows_entries(self) -> bool:
        """[RG-4]: CHOP and PANIC allow no new entries."""
        return self.label not in (RegimeLabel.CHOP, RegimeLabel.PANIC)
