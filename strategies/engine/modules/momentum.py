"""Momentum (MOM): moving-average momentum confirmed by a volume surge, long and short.

Rule (long; short is the mirror), on the module timeframe, at the last bar:

1. Momentum: MACD(12, 26, 9) line > 0, histogram > 0 and rising, close > EMA26.
2. Move: the return over ``move_bars`` (12) bars is >= ``min_move_atr`` (1.0) ATR(14).
3. Volume surge: the largest volume spike (volume / 20-bar mean) of the last 3 bars is >=
   ``min_volume_spike`` (2.0).

Score when all hold: ``40 + 0.3 * linear(move in ATR, 1, 3) + 0.3 * linear(volume spike, 2, 5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine.modules.base import ScanContext, last, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class Momentum:
    name: str = "MOM"
    move_bars: int = 12
    min_move_atr: float = 1.0
    min_volume_spike: float = 2.0

    def score(self, ctx: ScanContext) -> ModuleOutput:
        b = ctx.bars
        n_mk, n = b.close.shape
        m = ctx.ind.macd(12, 26, 9)
        line, hist, hist_prev = last(m.line), last(m.hist), last(m.hist, 2)
        e26 = last(ctx.ind.ema(26))
        atr = last(ctx.ind.atr(14))
        vs = np.nanmax(ctx.ind.volume_spike(20)[:, -3:], axis=1) if n >= 3 else np.full(n_mk, np.nan)
        c = last(b.close)
        k = min(self.move_bars, n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            move_atr = (c - b.close[:, -1 - k]) / atr if k > 0 else np.full(n_mk, np.nan)
            up = (line > 0) & (hist > 0) & (hist > hist_prev) & (c > e26)
            dn = (line < 0) & (hist < 0) & (hist < hist_prev) & (c < e26)
            surge = vs >= self.min_volume_spike
            long_ok = up & (move_atr >= self.min_move_atr) & surge
            short_ok = dn & (-move_atr >= self.min_move_atr) & surge
        vol = 0.3 * linear(vs, self.min_volume_spike, 5.0)
        long_score = np.where(long_ok, 40 + 0.3 * linear(move_atr, self.min_move_atr, 3.0) + vol, 0.0)
        short_score = np.where(short_ok, 40 + 0.3 * linear(-move_atr, self.min_move_atr, 3.0) + vol, 0.0)
        flags = [
            ("MOM_MACD_UP", up), ("MOM_MACD_DOWN", dn), ("MOM_VOLUME_SURGE", surge),
            ("MOM_NO_SURGE", ~surge), ("MOM_CONFIRMED", long_ok | short_ok),
        ]
        raw = {"macd_hist": hist, "move_atr": move_atr, "volume_spike": vs}
        return output(self.name, long_score, short_score, flags, raw, ctx.can_short)
