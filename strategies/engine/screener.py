"""Screener [PL-1]: the whole market -> the candidates worth scoring for entries.

A market is a candidate when all of these hold; every market carries flags saying which held
and which failed, so the UI can show why a market was in or out:

* ``TOP_VALUE``: among the ``top_n`` (30) markets by 24 h traded value (ticker ``value_24h``;
  without tickers, close x volume summed over the candles given, flag ``VALUE_FROM_CANDLES``);
  ``OUT_OF_TOP_N`` otherwise; ``LOW_VALUE`` below ``min_value_24h``.
* ``SPREAD_WIDE``: spread above ``max_spread_pct`` (0.3 %) (book, else ticker bid / ask).
* ``DEPTH_THIN``: average top-5 level value (both sides) below ``min_depth_value``.
* ``ATR_LOW`` / ``ATR_HIGH``: ATR(14) of the module-timeframe bars as a % of price outside
  [``min_atr_pct``, ``max_atr_pct``] (too dead to pay fees / too wild to size).
* ``CAUTION``: the exchange flags the market (warning / caution / delisting).
* ``STALE``: more than ``max_missing_share`` of the last hour's 1 m bars are missing.
* ``NO_DATA``: no usable last price.
* ``NO_BOOK`` / ``NO_TICKER`` are informational (the check used the fallback or was skipped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from execution.engine.types import MarketInfo, OrderBook, Ticker
from strategies.engine.modules.base import build_reasons


@dataclass(frozen=True, slots=True)
class ScreenerParams:
    top_n: int = 30
    min_value_24h: float = 0.0
    max_spread_pct: float = 0.3
    min_depth_value: float = 0.0
    min_atr_pct: float = 0.05
    max_atr_pct: float = 5.0
    max_missing_share: float = 0.5


@dataclass(frozen=True, slots=True)
class ScreenResult:
    """``candidate``: bool ``[markets]``; ``indices`` / ``symbols`` of candidates by descending
    value; ``flags``: per-market reason codes; the measured metrics, float64 ``[markets]``."""

    candidate: np.ndarray
    indices: np.ndarray
    symbols: tuple[str, ...]
    flags: tuple[tuple[str, ...], ...]
    value_24h: np.ndarray
    spread_pct: np.ndarray
    depth_value: np.ndarray
    atr_pct: np.ndarray
    rank: np.ndarray


def screen(symbols: Sequence[str], last_close: np.ndarray, atr_pct: np.ndarray, missing_share_1h: np.ndarray,
           params: ScreenerParams, tickers: Mapping[str, Ticker] | None = None,
           books: Mapping[str, OrderBook] | None = None, markets: Mapping[str, MarketInfo] | None = None,
           value_from_candles: np.ndarray | None = None) -> ScreenResult:
    """Screen every market at once; array inputs are ``[markets]`` aligned with ``symbols``."""
    n = len(symbols)
    for name, a in (("last_close", last_close), ("atr_pct", atr_pct), ("missing_share_1h", missing_share_1h)):
        if np.shape(a) != (n,):
            raise ValueError(f"{name} must be [markets]")
    tickers = tickers or {}
    books = books or {}
    markets = markets or {}
    nan = float("nan")
    # Marshalling from per-symbol objects (one attribute read each; the checks are vectorised).
    t_list = [tickers.get(s) for s in symbols]
    has_ticker = np.array([t is not None for t in t_list])
    value = np.array([t.value_24h if t is not None else nan for t in t_list], dtype=np.float64)
    t_bid = np.array([t.bid if t is not None else nan for t in t_list], dtype=np.float64)
    t_ask = np.array([t.ask if t is not None else nan for t in t_list], dtype=np.float64)
    b_list = [books.get(s) for s in symbols]
    has_book = np.array([b is not None and len(b.bids) > 0 and len(b.asks) > 0 for b in b_list])
    b_spread = np.array([b.spread_pct if ok else nan for b, ok in zip(b_list, has_book, strict=True)])
    depth = np.array([b.depth_value(5) if ok else nan for b, ok in zip(b_list, has_book, strict=True)])
    caution = np.array([bool(markets[s].caution) if s in markets else False for s in symbols])

    from_candles = ~np.isfinite(value)
    if value_from_candles is not None:
        value = np.where(from_candles, value_from_candles, value)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_spread = (t_ask - t_bid) / ((t_ask + t_bid) / 2.0) * 100.0
    spread = np.where(has_book, b_spread, t_spread)

    no_data = ~np.isfinite(last_close) | (last_close <= 0)
    v_rank = np.where(np.isfinite(value) & ~no_data, value, -np.inf)
    order = np.argsort(-v_rank, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    with np.errstate(invalid="ignore"):
        top = (rank < params.top_n) & np.isfinite(v_rank)
        low_value = ~(value >= params.min_value_24h)
        wide = spread > params.max_spread_pct
        thin = depth < params.min_depth_value
        atr_low = atr_pct < params.min_atr_pct
        atr_high = atr_pct > params.max_atr_pct
        stale = missing_share_1h > params.max_missing_share
    candidate = top & ~low_value & ~wide & ~thin & ~atr_low & ~atr_high & ~caution & ~stale & ~no_data
    flags = build_reasons([
        ("TOP_VALUE", top), ("OUT_OF_TOP_N", ~top), ("LOW_VALUE", low_value), ("SPREAD_WIDE", wide),
        ("DEPTH_THIN", thin), ("ATR_LOW", atr_low), ("ATR_HIGH", atr_high), ("CAUTION", caution),
        ("STALE", stale), ("NO_DATA", no_data), ("VALUE_FROM_CANDLES", from_candles),
        ("NO_BOOK", ~has_book), ("NO_TICKER", ~has_ticker), ("CANDIDATE", candidate),
    ], n)
    idx = order[candidate[order]]
    return ScreenResult(candidate, idx, tuple(symbols[i] for i in idx.tolist()), flags, value, spread, depth,
                        np.asarray(atr_pct, dtype=np.float64), rank)


#: Screener flags that refuse a market (``OUT_OF_TOP_N`` aside).
FAILING_FLAGS = frozenset({"LOW_VALUE", "SPREAD_WIDE", "DEPTH_THIN", "ATR_LOW", "ATR_HIGH", "CAUTION", "STALE",
                           "NO_DATA"})


def candidates_for_top_n(result: ScreenResult, top_n: int) -> np.ndarray:
    """The candidates the same screen gives with another ``top_n`` (every other check as it was):
    a second signal source with its own ``top_n`` on the same market data."""
    others_ok = np.array([not (FAILING_FLAGS.intersection(f)) for f in result.flags], dtype=bool)
    return others_ok & (result.rank < top_n) & np.isfinite(result.value_24h)
