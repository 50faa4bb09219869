"""Volatility Contraction Breakout (VCB): a squeeze followed by a range break on volume.

Rule (long; short is the mirror), on the module timeframe, at the last bar:

1. Squeeze: the smallest Bollinger(20, 2) bandwidth of the ``squeeze_bars`` (5) bars before
   the last one is within the lowest ``squeeze_pct`` (25 %) of the bandwidths of the last
   ``lookback`` (100) bars, and is at most ``max_squeeze_ratio`` (0.6) x their median (a real
   contraction, not the low point of an unchanged range).
2. Break: the last close is above the highest high of the ``channel`` (20) bars before it.
3. Volume: the last bar's volume is >= ``min_volume_spike`` (1.5) x its 20-bar mean.

Score when all hold: ``40 + 0.2 * (100 - squeeze percentile scaled) + 0.2 * linear(break
distance in ATR, 0, 1.5) + 0.2 * linear(volume spike, 1.5, 4)``; otherwise 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine import indicators as ind
from strategies.engine.modules.base import ScanContext, last, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class VolContractionBreakout:
    name: str = "VCB"
    squeeze_bars: int = 5
    squeeze_pct: float = 0.25
    lookback: int = 100
    channel: int = 20
    min_volume_spike: float = 1.5
    max_squeeze_ratio: float = 0.6

    def score(self, ctx: ScanContext) -> ModuleOutput:
        b = ctx.bars
        n_mk, n = b.close.shape
        bw = ctx.ind.bollinger(20, 2.0).bandwidth
        atr = last(ctx.ind.atr(14))
        vs = last(ctx.ind.volume_spike(20))
        if n < max(self.lookback, self.channel) + 2:
            z = np.zeros(n_mk)
            return output(self.name, z, z, [("VCB_WARMUP", np.ones(n_mk, bool))], {}, ctx.can_short)
        recent = np.min(bw[:, -1 - self.squeeze_bars:-1], axis=1)
        hist = bw[:, -self.lookback:]
        with np.errstate(invalid="ignore"):
            pct = np.mean(hist <= recent[:, None], axis=1)          # percentile of the squeeze
            pct = np.where(np.isnan(recent) | np.isnan(hist[:, 0]), np.nan, pct)
            ratio = recent / np.median(hist, axis=1)
            squeeze = (pct <= self.squeeze_pct) & (ratio <= self.max_squeeze_ratio)
            hh = ind.rolling_max(b.high[:, -self.channel - 1:-1], self.channel)[:, -1]
            ll = ind.rolling_min(b.low[:, -self.channel - 1:-1], self.channel)[:, -1]
            c = last(b.close)
            up_break = (c - hh) / atr
            dn_break = (ll - c) / atr
            vol_ok = vs >= self.min_volume_spike
        common = 40.0 + 0.2 * linear(pct, self.squeeze_pct, 0.0) + 0.2 * linear(vs, self.min_volume_spike, 4.0)
        long_ok = squeeze & (up_break > 0) & vol_ok
        short_ok = squeeze & (dn_break > 0) & vol_ok
        long_score = np.where(long_ok, common + 0.2 * linear(up_break, 0.0, 1.5), 0.0)
        short_score = np.where(short_ok, common + 0.2 * linear(dn_break, 0.0, 1.5), 0.0)
        flags = [
            ("VCB_SQUEEZE", squeeze), ("VCB_NO_SQUEEZE", ~squeeze),
            ("VCB_BREAK_UP", up_break > 0), ("VCB_BREAK_DOWN", dn_break > 0),
            ("VCB_VOLUME_OK", vol_ok), ("VCB_LOW_VOLUME", ~vol_ok),
        ]
        raw = {"squeeze_pct": pct, "squeeze_ratio": ratio, "bandwidth": last(bw), "break_atr": np.fmax(up_break, dn_break),
               "volume_spike": vs}
        return output(self.name, long_score, short_score, flags, raw, ctx.can_short)
