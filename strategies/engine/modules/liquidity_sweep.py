"""Liquidity Sweep Reversal (LSR): stops under a swing low get taken, then price snaps back.

Rule (long; short is the mirror on swing highs), on the module timeframe, at the last bar:

1. Swing low L = lowest low of the ``lookback`` (20) bars before the last bar.
2. Sweep: the last bar's low is below L by at least ``min_sweep_atr`` (0.1) ATR(14).
3. Reclaim: the last close is back above L.
4. Rejection wick: (min(open, close) - low) / (high - low) >= ``min_wick`` (0.5).

Score when all hold: ``40 + 0.25 * linear(sweep depth in ATR, 0.1, 1) + 0.2 * linear(wick,
0.5, 0.9) + 0.15 * linear(volume spike, 1, 3)``; otherwise 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine import indicators as ind
from strategies.engine.modules.base import ScanContext, last, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class LiquiditySweepReversal:
    name: str = "LSR"
    lookback: int = 20
    min_sweep_atr: float = 0.1
    min_wick: float = 0.5

    def score(self, ctx: ScanContext) -> ModuleOutput:
        b = ctx.bars
        n_mk, n = b.close.shape
        if n < self.lookback + 2:
            z = np.zeros(n_mk)
            return output(self.name, z, z, [("LSR_WARMUP", np.ones(n_mk, bool))], {}, ctx.can_short)
        atr = last(ctx.ind.atr(14))
        vs = last(ctx.ind.volume_spike(20))
        swing_low = ind.rolling_min(b.low[:, -self.lookback - 1:-1], self.lookback)[:, -1]
        swing_high = ind.rolling_max(b.high[:, -self.lookback - 1:-1], self.lookback)[:, -1]
        o, h, lo, c = last(b.open), last(b.high), last(b.low), last(b.close)
        rng = h - lo
        with np.errstate(invalid="ignore", divide="ignore"):
            low_wick = np.where(rng > 0, (np.minimum(o, c) - lo) / rng, 0.0)
            high_wick = np.where(rng > 0, (h - np.maximum(o, c)) / rng, 0.0)
            sweep_dn = (swing_low - lo) / atr
            sweep_up = (h - swing_high) / atr
            long_ok = (sweep_dn >= self.min_sweep_atr) & (c > swing_low) & (low_wick >= self.min_wick)
            short_ok = (sweep_up >= self.min_sweep_atr) & (c < swing_high) & (high_wick >= self.min_wick)
        vol = 0.15 * linear(vs, 1.0, 3.0)
        long_score = np.where(long_ok, 40 + 0.25 * linear(sweep_dn, self.min_sweep_atr, 1.0)
                              + 0.2 * linear(low_wick, self.min_wick, 0.9) + vol, 0.0)
        short_score = np.where(short_ok, 40 + 0.25 * linear(sweep_up, self.min_sweep_atr, 1.0)
                               + 0.2 * linear(high_wick, self.min_wick, 0.9) + vol, 0.0)
        flags = [
            ("LSR_SWEPT_LOW", sweep_dn >= self.min_sweep_atr), ("LSR_SWEPT_HIGH", sweep_up >= self.min_sweep_atr),
            ("LSR_RECLAIMED", long_ok | short_ok), ("LSR_NO_SWEEP", ~(sweep_dn >= self.min_sweep_atr)
                                                  & ~(sweep_up >= self.min_sweep_atr)),
        ]
        raw = {"sweep_low_atr": sweep_dn, "sweep_high_atr": sweep_up, "low_wick": low_wick, "high_wick": high_wick}
        return output(self.name, long_score, short_score, flags, raw, ctx.can_short)
