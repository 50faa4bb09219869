"""The tuner's full-tick evaluator [AI-3]: every trial is a pipeline backtest of the live tick on
the panel's precomputed scan parts, on 1-hour bars."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from execution.engine.sim import SimConfig, SimMarket
from execution.engine.types import Candles
from risk.engine.profiles import STANDARD
from strategies.engine.backtest.pipeline import BacktestConfig, MarketData, run_backtest
from strategies.engine.learning.evaluator import PanelEvaluator, Window, build_panel
from strategies.engine.learning.tick_evaluator import TickEvaluator, TickEvaluatorConfig
from strategies.engine.learning.tuning import TuningConfig, tune

#: a trial that trades: a low entry threshold over the trend modules, every market screened in
ACTIVE = {"entry_threshold": 35.0, "exit_threshold": 17.5, "top_n": 12,
          "module_weights": {"TP": 1.0, "VCB": 0.5, "LSR": 0.3, "LF": 0.3, "REGIME": 0.5, "MR": 0.2, "MOM": 0.8,
                             "MICRO": 0.0}}


@pytest.fixture(scope="module")
def hourly():
    market = SimMarket(SimConfig(seed=7, n_markets=12, bar_seconds=3600))
    candles = market.generate(45 * 24).candles
    markets = {m.symbol: m for m in market.market_info()}
    return candles, markets, build_panel(candles, markets)


@pytest.fixture(scope="module")
def evaluator(hourly):
    candles, markets, panel = hourly
    return TickEvaluator(panel, candles, markets)


def test_a_trial_runs_the_whole_tick(evaluator):
    run = evaluator.backtest(ACTIVE)
    assert run.bars == evaluator.panel.n_bars - evaluator.panel.first
    assert len(run.trades) >= 5 and run.fees_paid > 0
    # what only the full tick does: sizing caps on every entry, the position manager's exits
    assert any(code.startswith("SIZE_") or code.startswith("CAP_") for code in run.reason_counts)
    assert set(run.exit_reasons) - {"SCORE_EXIT", "STOP_LOSS", "TIME_STOP"}, run.exit_reasons
    # sizing by risk: no position is worth more than the equity, none is a fixed fraction
    values = {round(t.entry_value, 2) for t in run.trades}
    assert len(values) > 1 and max(values) <= float(run.initial_cash) * 1.5


def test_the_simulation_is_the_backtest(evaluator):
    run = evaluator.backtest(ACTIVE)
    sim = evaluator._simulate(ACTIVE)
    assert len(sim.r_net) == len([t for t in run.trades if t.entry_value > 0])
    assert sorted(sim.r_net.tolist()) == pytest.approx(sorted(t.return_ for t in run.trades if t.entry_value > 0))
    # the per-bar returns compound to the backtest's final equity
    growth = float(np.prod(1.0 + sim.bar_returns))
    assert growth == pytest.approx(float(run.final_equity / run.initial_cash), rel=1e-9)
    assert (sim.mae <= 0).all()
    ts = evaluator.panel.ts
    for bar, trade in zip(sim.entry_bar, sorted((t for t in run.trades if t.entry_value > 0),
                                               key=lambda t: t.entry_ts), strict=True):
        assert ts[bar] < trade.entry_ts <= ts[bar] + evaluator.panel.bar_seconds


def test_windows_take_the_trades_they_entered(evaluator):
    span = evaluator.span()
    mid = (span.start + span.end) // 2
    whole = evaluator.evaluate(ACTIVE, span)
    a, b = evaluator.evaluate(ACTIVE, Window(span.start, mid)), evaluator.evaluate(ACTIVE, Window(mid, span.end))
    assert a.n_trades + b.n_trades == whole.n_trades
    assert (a.entry_ts < mid).all() and (b.entry_ts >= mid).all()
    assert evaluator.simulations >= 1


def test_same_params_same_result_and_params_matter(hourly):
    candles, markets, panel = hourly
    one, two = TickEvaluator(panel, candles, markets), TickEvaluator(panel, candles, markets)
    a, b = one.backtest(ACTIVE), two.backtest(ACTIVE)
    assert [t.to_dict() for t in a.trades] == [t.to_dict() for t in b.trades]
    strict = one.backtest({**ACTIVE, "entry_threshold": 80.0, "exit_threshold": 40.0})
    assert len(strict.trades) < len(a.trades)


def test_the_full_tick_differs_from_the_quick_approximation(hourly, evaluator):
    """Sizing, checklist and the position manager change the trades (else the evaluator would
    not be worth its cost)."""
    candles, markets, panel = hourly
    quick = PanelEvaluator(panel)
    span = evaluator.span()
    full, approx = evaluator.evaluate(ACTIVE, span), quick.evaluate(ACTIVE, span)
    assert full.n_trades != approx.n_trades or not np.allclose(np.sort(full.r_net), np.sort(approx.r_net))


def test_books_on_long_bars_hold_a_minutes_value():
    """An hour bar's traded value is spread over its minutes: the book is as deep as on the same
    flow in 1-minute bars."""
    market = SimMarket(SimConfig(seed=2, n_markets=3, bar_seconds=3600))
    hour = market.generate(100).candles
    minute = Candles(hour.symbols, "1m", hour.ts, hour.open, hour.high, hour.low, hour.close, hour.volume / 60)
    info = {m.symbol: m for m in market.market_info()}
    h, m = MarketData(hour, info), MarketData(minute, info)
    assert h.bar_seconds == 3600 and h.day_bars == 24
    for t in (10, 70, 99):
        mid = h.mid(0, t)
        assert h.level_value(0, t, mid) == pytest.approx(m.level_value(0, t, mid))
    with pytest.raises(ValueError, match="1-minute"):
        run_backtest(h, BacktestConfig(profile=STANDARD))


def test_a_tuning_run_on_the_full_tick_is_reproducible(hourly):
    candles, markets, panel = hourly
    cfg = TuningConfig(n_trials=3, seed=4, train_days=7, test_days=5)
    runs = []
    for _ in range(2):
        ev = TickEvaluator(panel, candles, markets, TickEvaluatorConfig(cash=Decimal("5000000")))
        runs.append(tune(ev, ev.span(), len(candles.symbols), cfg))
    a, b = runs
    assert [t.objective for t in a.trials] == [t.objective for t in b.trials]
    assert [t.holdout.n_trades for t in a.trials] == [t.holdout.n_trades for t in b.trials]
    assert all(t.gate is not None for t in a.trials)


def test_candles_must_be_the_panels(hourly):
    candles, markets, panel = hourly
    short = Candles(candles.symbols, candles.timeframe, candles.ts[:-1], candles.open[:, :-1], candles.high[:, :-1],
                    candles.low[:, :-1], candles.close[:, :-1], candles.volume[:, :-1])
    with pytest.raises(ValueError, match="panel"):
        TickEvaluator(panel, short, markets)
