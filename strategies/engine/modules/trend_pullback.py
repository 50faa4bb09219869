"""Trend Pullback (TP): buy the first bounce off EMA20 inside an established trend.

Rule (long; short is the mirror), on the module timeframe (5 m by default), at the last bar:

1. Trend: EMA20 > EMA50, close > EMA50, ADX(14) >= ``min_adx`` (20) and +DI > -DI.
2. Pullback: within the last ``pullback_bars`` (3) bars the low came within
   ``touch_atr`` (0.3) ATR(14) of EMA20 (or below it) but stayed above EMA50 - 0.5 ATR.
3. Resumption: the last close is above EMA20 and above the previous close.

Score when all three hold: ``40 + 0.3 * linear(ADX, 20, 40) + 0.3 * linear(EMA20-EMA50 gap in
ATR, 0, 2)`` (40..100); otherwise 0 and the failing condition is in the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine.modules.base import ScanContext, last, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class TrendPullback:
    name: str = "TP"
    fast: int = 20
    slow: int = 50
    min_adx: float = 20.0
    pullback_bars: int = 3
    touch_atr: float = 0.3

    def score(self, ctx: ScanContext) -> ModuleOutput:
        b = ctx.bars
        ef, es = ctx.ind.ema(self.fast), ctx.ind.ema(self.slow)
        atr = last(ctx.ind.atr(14))
        a = ctx.ind.adx(14)
        adx, pdi, mdi = last(a.adx), last(a.plus_di), last(a.minus_di)
        c, c_prev = last(b.close), last(b.close, 2)
        f, s = last(ef), last(es)
        k = self.pullback_bars
        with np.errstate(invalid="ignore"):
            low_gap = np.min(b.low[:, -k:] - ef[:, -k:], axis=1) / atr      # <= touch: touched EMA20
            high_gap = np.min(ef[:, -k:] - b.high[:, -k:], axis=1) / atr    # mirror for shorts
            low_floor = np.min(b.low[:, -k:], axis=1) > s - 0.5 * atr
            high_cap = np.max(b.high[:, -k:], axis=1) < s + 0.5 * atr
            gap_atr = (f - s) / atr
            up_trend = (f > s) & (c > s) & (adx >= self.min_adx) & (pdi > mdi)
            dn_trend = (f < s) & (c < s) & (adx >= self.min_adx) & (mdi > pdi)
            long_pb = (low_gap <= self.touch_atr) & low_floor
            short_pb = (high_gap <= self.touch_atr) & high_cap
            long_go = (c > f) & (c > c_prev)
            short_go = (c < f) & (c < c_prev)
        strength = 0.3 * linear(adx, self.min_adx, 40.0)
        long_ok = up_trend & long_pb & long_go
        short_ok = dn_trend & short_pb & short_go
        long_score = np.where(long_ok, 40.0 + strength + 0.3 * linear(gap_atr, 0.0, 2.0), 0.0)
        short_score = np.where(short_ok, 40.0 + strength + 0.3 * linear(-gap_atr, 0.0, 2.0), 0.0)
        flags = [
            ("TP_UPTREND", up_trend), ("TP_DOWNTREND", dn_trend),
            ("TP_NO_TREND", ~up_trend & ~dn_trend),
            ("TP_PULLBACK_TO_EMA20", (up_trend & long_pb) | (dn_trend & short_pb)),
            ("TP_RESUMED", long_ok | short_ok),
            ("TP_WARMUP", np.isnan(s) | np.isnan(adx)),
        ]
        raw = {"adx": adx, "ema_gap_atr": gap_atr, "pullback_gap_atr": np.where(f >= s, low_gap, high_gap)}
        return output(self.name, long_score, short_score, flags, raw, ctx.can_short)
