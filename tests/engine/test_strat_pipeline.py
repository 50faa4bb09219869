"""pipeline.scan: one pure function from stored inputs to decisions [PL-1], [PL-2]."""

from __future__ import annotations

import numpy as np
import pytest

from execution.engine.types import MarketDataError, OrderBook
from strategies.engine.pipeline import ScanParams, scan
from strategies.engine.types import Action, Direction
from tests.engine.test_strat_support import random_walk_candles


def _books(c):
    out = {}
    for i, s in enumerate(c.symbols[:5]):
        px = c.close[i, -1]
        out[s] = [OrderBook(s, 0, np.array([[px * 0.999, q]]), np.array([[px * 1.001, 10.0 - q]]))
                  for q in (3.0, 5.0, 7.0)]
    return out


def test_scan_is_deterministic_and_recomputable():
    c = random_walk_candles(40, 1000, seed=11, vol=0.002)
    a = scan(c, books=_books(c), ema_state={"M001": 12.0}, held={"M002": Direction.LONG})
    b = scan(c, books=_books(c), ema_state={"M001": 12.0}, held={"M002": Direction.LONG})
    assert repr(a.signals) == repr(b.signals)           # repr: raw metrics may hold NaN
    assert a.regime == b.regime
    assert a.ema_state == b.ema_state
    for x, y in zip(a.modules, b.modules, strict=True):
        np.testing.assert_array_equal(x.score, y.score)
    assert a.ts == int(c.ts[-1])


def test_scan_covers_every_market_and_module():
    c = random_walk_candles(40, 1000, seed=3, vol=0.002)
    r = scan(c, params=ScanParams(signals_for_all=True), held={"M039": Direction.LONG})
    assert [o.module for o in r.modules] == ["TP", "VCB", "LSR", "LF", "REGIME", "MR", "MOM", "MICRO"]
    assert len(r.signals) == 40 and set(r.ema_state) == set(c.symbols)
    assert r.aggregate.final_score.shape == (40,)
    assert all(0 <= s.final_score <= 100 for s in r.signals)
    assert r.signals[39].action in (Action.HOLD, Action.EXIT)
    assert r.modules[-1].reasons[0] == ("MICRO_NO_BOOK",)
    assert 0 <= r.max_positions <= 10


def test_default_signals_only_for_candidates_and_held():
    c = random_walk_candles(50, 600, seed=4)
    r = scan(c, params=ScanParams(), held={"M049": Direction.LONG})
    expected = {c.symbols[i] for i in np.nonzero(r.screen.candidate)[0]} | {"M049"}
    assert {s.symbol for s in r.signals} == expected


def test_ema_state_carries_across_ticks():
    c = random_walk_candles(20, 1200, seed=8, vol=0.002)
    first = scan(_prefix(c, 1199))
    second = scan(c, ema_state=first.ema_state)
    fresh = scan(c)                                     # no state: the EMA seeds with the signed base
    prev = np.array([first.ema_state[s] for s in c.symbols])
    signed_base = np.array([fresh.ema_state[s] for s in c.symbols])
    np.testing.assert_allclose([second.ema_state[s] for s in c.symbols], 0.3 * signed_base + 0.7 * prev)
    np.testing.assert_allclose(second.aggregate.total_score, np.abs(0.3 * signed_base + 0.7 * prev))


def _prefix(c, n):
    from execution.engine.types import Candles
    return Candles(c.symbols, "1m", c.ts[:n], c.open[:, :n], c.high[:, :n], c.low[:, :n], c.close[:, :n],
                   c.volume[:, :n])


def test_too_short_window_fails_fast():
    with pytest.raises(MarketDataError, match="at least"):
        scan(random_walk_candles(5, 100))
