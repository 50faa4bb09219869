"""Mean Reversion (MR): fade a stretch outside the Bollinger band confirmed by RSI.

Rule (long; short is the mirror), on the module timeframe, at the last bar:

1. Stretch: close at or below the lower Bollinger(20, 2) band (%b <= 0).
2. Oversold: RSI(14) <= ``rsi_low`` (30).

Score when both hold: ``50 + 25 * linear(-%b, 0, 0.5) + 25 * linear(30 - RSI, 0, 15)``,
halved when ADX(14) >= ``trend_adx`` (30): fading a strong trend is the classic way to lose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine.modules.base import ScanContext, last, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class MeanReversion:
    name: str = "MR"
    rsi_low: float = 30.0
    rsi_high: float = 70.0
    trend_adx: float = 30.0

    def score(self, ctx: ScanContext) -> ModuleOutput:
        pb = last(ctx.ind.bollinger(20, 2.0).percent_b)
        r = last(ctx.ind.rsi(14))
        adx = last(ctx.ind.adx(14).adx)
        with np.errstate(invalid="ignore"):
            long_ok = (pb <= 0) & (r <= self.rsi_low)
            short_ok = (pb >= 1) & (r >= self.rsi_high)
            trending = adx >= self.trend_adx
        damp = np.where(trending, 0.5, 1.0)
        long_score = np.where(long_ok, (50 + 0.25 * linear(-pb, 0, 0.5) + 0.25 * linear(self.rsi_low - r, 0, 15))
                              * damp, 0.0)
        short_score = np.where(short_ok, (50 + 0.25 * linear(pb - 1, 0, 0.5)
                                          + 0.25 * linear(r - self.rsi_high, 0, 15)) * damp, 0.0)
        flags = [
            ("MR_BELOW_LOWER_BAND", pb <= 0), ("MR_ABOVE_UPPER_BAND", pb >= 1),
            ("MR_OVERSOLD", r <= self.rsi_low), ("MR_OVERBOUGHT", r >= self.rsi_high),
            ("MR_TRENDING_DAMPED", trending & (long_ok | short_ok)),
        ]
        return output(self.name, long_score, short_score, flags, {"percent_b": pb, "rsi": r, "adx": adx},
                      ctx.can_short)
