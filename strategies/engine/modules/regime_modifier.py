"""Regime modifier (REGIME): how well a market fits the current market regime.

Rule, from the scan's regime (label, regime_score) and each market's return over the last
``window`` (12) module bars (1 h on 5 m bars), ranked across markets:

* TREND: markets moving with the majority (long when breadth > 0.5, short otherwise) score
  ``regime_score * rank`` where rank is the percentile of the return in that direction.
* BREAKOUT_ROTATION: the strongest movers either way: ``regime_score * rank of |return|``,
  direction = sign of the return.
* RANGE: every market scores ``0.5 * regime_score`` with no direction (neutral support).
* CHOP and PANIC: 0 for every market (no entries) [RG-4].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regime.engine.types import RegimeLabel
from strategies.engine.modules.base import ScanContext, output
from strategies.engine.types import Direction, ModuleOutput


def _pct_rank(x: np.ndarray) -> np.ndarray:
    """Percentile rank 0..1 among the finite entries (NaN -> 0)."""
    ok = np.isfinite(x)
    out = np.zeros(len(x))
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(np.where(ok, x, -np.inf), kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    base = len(x) - m
    out[ok] = (ranks[ok] - base + 1) / m
    return out


@dataclass(frozen=True, slots=True)
class RegimeModifier:
    name: str = "REGIME"
    window: int = 12

    def score(self, ctx: ScanContext) -> ModuleOutput:
        c = ctx.bars.close
        n_mk, n = c.shape
        label, rs = ctx.regime.label, ctx.regime.regime_score
        w = min(self.window, n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ret = c[:, -1] / c[:, -1 - w] - 1.0 if w > 0 else np.full(n_mk, np.nan)
        long_score = np.zeros(n_mk)
        short_score = np.zeros(n_mk)
        neutral = np.zeros(n_mk)
        if label is RegimeLabel.TREND:
            up = ctx.regime.inputs.breadth_up_1h >= 0.5 if np.isfinite(ctx.regime.inputs.breadth_up_1h) else True
            if up:
                long_score = np.where(ret > 0, rs * _pct_rank(ret), 0.0)
            else:
                short_score = np.where(ret < 0, rs * _pct_rank(-ret), 0.0)
        elif label is RegimeLabel.BREAKOUT_ROTATION:
            s = rs * _pct_rank(np.abs(ret))
            long_score = np.where(ret > 0, s, 0.0)
            short_score = np.where(ret < 0, s, 0.0)
        elif label is RegimeLabel.RANGE:
            neutral = np.full(n_mk, 0.5 * rs)
        out = output(self.name, long_score, short_score, [(f"REGIME_{label}", np.ones(n_mk, bool))],
                     {"return_window": ret, "regime_score": np.full(n_mk, rs)}, ctx.can_short)
        if label is RegimeLabel.RANGE:
            return type(out)(out.module, neutral, np.full(n_mk, Direction.NONE, np.int8), out.reasons, out.raw)
        return out
