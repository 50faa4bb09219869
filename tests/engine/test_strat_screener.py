"""Screener [PL-1]: top N by value with spread, depth, volatility and caution filters."""

from __future__ import annotations

import numpy as np

from execution.engine.types import MarketInfo, OrderBook, Ticker
from strategies.engine.screener import ScreenerParams, screen

SYMS = ("A", "B", "C", "D", "E", "F")


def _ticker(s: str, value: float, spread_pct: float = 0.05) -> Ticker:
    half = spread_pct / 200
    return Ticker(s, 0, 100.0, 100 * (1 - half), 100 * (1 + half), value, 0.0)


def test_flags_say_why_each_market_is_in_or_out():
    tickers = {"A": _ticker("A", 9e9), "B": _ticker("B", 8e9, spread_pct=1.0), "C": _ticker("C", 7e9),
               "D": _ticker("D", 6e9), "E": _ticker("E", 5e9), "F": _ticker("F", 1e9)}
    books = {"C": OrderBook("C", 0, np.array([[99.99, 0.01]]), np.array([[100.01, 0.01]]))}
    markets = {"D": MarketInfo("D", "D", "KRW", caution=True)}
    atr = np.array([0.5, 0.5, 0.5, 0.5, 9.0, 0.5])
    r = screen(SYMS, np.full(6, 100.0), atr, np.zeros(6), ScreenerParams(top_n=5, min_depth_value=100.0),
               tickers=tickers, books=books, markets=markets)
    assert r.symbols == ("A",)
    assert r.candidate.tolist() == [True, False, False, False, False, False]
    assert "CANDIDATE" in r.flags[0] and "TOP_VALUE" in r.flags[0]
    assert "SPREAD_WIDE" in r.flags[1]
    assert "DEPTH_THIN" in r.flags[2]
    assert "CAUTION" in r.flags[3]
    assert "ATR_HIGH" in r.flags[4]
    assert "OUT_OF_TOP_N" in r.flags[5]
    assert r.rank.tolist() == [0, 1, 2, 3, 4, 5]


def test_candidates_ordered_by_value_and_fallback_to_candle_value():
    r = screen(SYMS, np.full(6, 100.0), np.full(6, 0.5), np.zeros(6), ScreenerParams(top_n=3),
               value_from_candles=np.array([1.0, 6.0, 3.0, 5.0, 2.0, 4.0]))
    assert r.symbols == ("B", "D", "F")
    assert r.indices.tolist() == [1, 3, 5]
    assert all("VALUE_FROM_CANDLES" in f and "NO_TICKER" in f for f in r.flags)


def test_stale_no_data_and_dead_markets_are_out():
    last = np.array([100.0, np.nan, 100.0, 100.0, 100.0, 100.0])
    atr = np.array([0.5, 0.5, 0.01, 0.5, 0.5, 0.5])
    missing = np.array([0.0, 0.0, 0.0, 0.9, 0.0, 0.0])
    r = screen(SYMS, last, atr, missing, ScreenerParams(), value_from_candles=np.ones(6))
    assert r.candidate.tolist() == [True, False, False, False, True, True]
    assert "NO_DATA" in r.flags[1] and "ATR_LOW" in r.flags[2] and "STALE" in r.flags[3]
