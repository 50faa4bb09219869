"""Model disagreement [RK-4]: a second signal source (the deterministic profile beside an AI MODE
model) aggregates the same scan; the guard judges the conflicting share of strong markets,
pooled over a window of ticks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from execution.engine.sim import SimConfig, SimMarket
from risk.engine.guard import MODEL_DISAGREEMENT, disagreement_counts
from strategies.engine.aggregator import AggregatorParams
from strategies.engine.backtest.pipeline import BacktestConfig, MarketData, run_backtest
from strategies.engine.pipeline import reaggregate, scan
from strategies.engine.screener import ScreenerParams, candidates_for_top_n, screen
from tests.engine.test_backtest_pipeline import ACTIVE
from traders.engine.tick import (
    DISAGREEMENT_MIN_STRONG,
    DISAGREEMENT_WINDOW,
    GuardFeedState,
    SecondOpinion,
    scan_conflicts,
    scan_params,
)


def test_counts_strong_conflicts_only():
    a, da = np.array([80.0, 80.0, 10.0, 90.0]), np.array([1, 1, 1, 1])
    b, db = np.array([80.0, 20.0, 20.0, 85.0]), np.array([-1, 1, 1, 1])
    # market 0: opposite sides; 1: 60 points apart; 2: nobody strong; 3: agree
    assert disagreement_counts(a, da, b, db) == (2, 3)


def test_different_thresholds_alone_are_no_conflict():
    """A model with a lower entry threshold acts on markets the profile would not; with the same
    scores that is a policy difference, not a conflicting signal."""
    score = np.array([36.0, 50.0, 90.0])
    side = np.array([1, 1, -1])
    assert disagreement_counts(score, side, score, side, strong=(35.0, 70.0)) == (0, 3)
    # the profile barely sees what the model finds strong: a conflict
    assert disagreement_counts(score, side, score * 0.4, side, strong=(35.0, 70.0)) == (3, 3)


def test_feed_pools_the_window_and_forgets_a_vanished_source():
    feed = GuardFeedState()
    feed = feed.with_disagreement((3, 4))
    assert feed.model_disagreement is None                    # 4 strong markets are not a sample yet
    feed = feed.with_disagreement((1, DISAGREEMENT_MIN_STRONG))
    assert feed.model_disagreement == pytest.approx(4 / (4 + DISAGREEMENT_MIN_STRONG))
    for _ in range(DISAGREEMENT_WINDOW):
        feed = feed.with_disagreement((0, 2))
    assert len(feed.disagreement) == DISAGREEMENT_WINDOW and feed.model_disagreement == 0.0   # old ticks fell out
    again = GuardFeedState.from_dict(feed.to_dict())
    assert again == feed
    assert GuardFeedState.from_dict({"atr_ticks": 3}).disagreement == ()   # stored before the feed existed
    assert feed.with_disagreement(None).model_disagreement is None and feed.with_disagreement(None).disagreement == ()


def test_candidates_for_another_top_n_equal_a_screen_with_it():
    rng = np.random.default_rng(4)
    n = 40
    symbols = tuple(f"M{i}" for i in range(n))
    close = rng.uniform(1, 100, n)
    close[3] = np.nan
    atr_pct = rng.uniform(0.1, 4.0, n)
    missing = rng.uniform(0, 0.2, n)
    value = rng.uniform(1e8, 1e11, n)
    wide = screen(symbols, close, atr_pct, missing, ScreenerParams(top_n=n), value_from_candles=value)
    for top_n in (1, 5, 17, 40):
        direct = screen(symbols, close, atr_pct, missing, ScreenerParams(top_n=top_n), value_from_candles=value)
        assert np.array_equal(candidates_for_top_n(wide, top_n), direct.candidate), top_n
        assert np.array_equal(candidates_for_top_n(direct, top_n), direct.candidate)


@pytest.fixture(scope="module")
def sim_window():
    sim = SimMarket(SimConfig(seed=5, n_markets=10))
    history = sim.generate(1200)
    return history.candles, {m.symbol: m for m in sim.market_info()}


def test_the_same_settings_never_disagree(sim_window):
    candles, markets = sim_window
    params = scan_params(ACTIVE)
    ema = None
    for end in range(1000, 1200, 20):
        window = _slice(candles, end - 1000, end)
        result = scan(window, params=params, ema_state=ema, markets=markets)
        second = reaggregate(result, params, ema_state=ema, markets=markets)
        assert np.allclose(second.final_score, result.aggregate.final_score, equal_nan=True)
        assert np.array_equal(second.direction, result.aggregate.direction)
        conflicts, strong = scan_conflicts(result, SecondOpinion(second, params.aggregator, params.aggregator), {})
        assert conflicts == 0
        ema = result.ema_state


def test_other_weights_give_other_scores(sim_window):
    candles, markets = sim_window
    result = scan(_slice(candles, 0, 1000), params=scan_params(ACTIVE), markets=markets)
    other = replace(scan_params(ACTIVE), aggregator=AggregatorParams(weights={"MR": 1.0}, entry_threshold=30.0,
                                                                        exit_threshold=15.0))
    second = reaggregate(result, other, markets=markets)
    assert not np.allclose(second.final_score, result.aggregate.final_score)


def _slice(c, a, b):
    from execution.engine.types import Candles

    s = slice(a, b)
    return Candles(c.symbols, c.timeframe, c.ts[s], c.open[:, s], c.high[:, s], c.low[:, s], c.close[:, s],
                   c.volume[:, s])


def test_a_backtest_with_a_conflicting_second_source_trips_the_guard():
    """The guard halts a model whose scores the deterministic source contradicts; the same
    source twice never trips it."""
    sim = SimMarket(SimConfig(seed=3, n_markets=8))
    history = sim.generate(1500)
    data = MarketData(history.candles, {m.symbol: m for m in sim.market_info()})
    own = scan_params(ACTIVE)
    # All weight on MICRO, which has no order books in a backtest: it scores nothing, so every
    # market the trader's own aggregation finds strong is 50+ points apart.
    blind = replace(own, aggregator=replace(own.aggregator, weights={"MICRO": 1.0}))
    tripped = run_backtest(data, BacktestConfig(profile=ACTIVE, second_params=blind, start_index=999, end_index=1500))
    same = run_backtest(data, BacktestConfig(profile=ACTIVE, second_params=own, start_index=999, end_index=1500))
    assert tripped.guard_trips.get(MODEL_DISAGREEMENT, 0) >= 1
    assert MODEL_DISAGREEMENT not in same.guard_trips
    assert "HALTED" in tripped.trading_state
    assert same.entries > 0 and tripped.entries < same.entries       # halted: fewer entries
