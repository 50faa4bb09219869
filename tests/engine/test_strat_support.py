"""Builders for engine tests: bars, scan contexts, regime states (no Django)."""

from __future__ import annotations

import numpy as np

from execution.engine.types import Candles
from regime.engine.features import Bars
from regime.engine.types import RegimeInputs, RegimeLabel, RegimeState
from strategies.engine.modules.base import BookArrays, ScanContext


def bars_from_close(close: np.ndarray, wick: float = 0.002, volume: np.ndarray | None = None) -> Bars:
    """OHLC around a close path: open = previous close, high/low = max/min(open, close) +- wick."""
    c = np.atleast_2d(np.asarray(close, dtype=np.float64))
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)
    h = np.maximum(o, c) * (1 + wick)
    lo = np.minimum(o, c) * (1 - wick)
    v = np.ones_like(c) * 100.0 if volume is None else np.atleast_2d(np.asarray(volume, dtype=np.float64))
    return Bars(o, h, lo, c, v)


def regime(label: RegimeLabel = RegimeLabel.TREND, score: float = 80.0, breadth: float = 0.7) -> RegimeState:
    return RegimeState(label, score, 0.8, RegimeInputs(30.0, 0.3, breadth, 0.005, 0.4, 0.4))


def ctx(bars: Bars, reg: RegimeState | None = None, can_short: bool = True, leader_index: int = 0,
        books: BookArrays | None = None) -> ScanContext:
    n = bars.close.shape[0]
    syms = tuple(f"M{i}" for i in range(n))
    return ScanContext(symbols=syms, ts=0, bars=bars, bars_1m=bars, timeframe_minutes=5, leader_index=leader_index,
                       regime=reg or regime(), can_short=np.full(n, can_short), books=books)


def random_walk_candles(n_markets: int, n_bars: int, seed: int = 0, vol: float = 0.001) -> Candles:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, vol, (n_markets, n_bars)), axis=1))
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)
    h = np.maximum(o, c) * (1 + rng.uniform(0, 0.0005, c.shape))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.0005, c.shape))
    v = rng.lognormal(2, 0.5, c.shape)
    ts = 1_700_000_040 + 60 * np.arange(n_bars, dtype=np.int64)
    return Candles(tuple(f"M{i:03d}" for i in range(n_markets)), "1m", ts, o, h, lo, c, v)
