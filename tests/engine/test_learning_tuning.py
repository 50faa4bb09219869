"""Tuning [AI-3]: the evaluator's trades and costs, the walk-forward plan, TPE reproducibility by
seed, the hold-out kept from the optimizer, gating with DSR and PBO."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from execution.engine.sim import SimConfig, SimMarket
from regime.engine.types import RegimeLabel
from strategies.engine.learning.evaluator import (
    EvaluatorConfig,
    Panel,
    PanelEvaluator,
    Window,
    WindowResult,
    build_panel,
    simulate,
)
from strategies.engine.learning.params import validate
from strategies.engine.learning.tuning import TuningConfig, plan_windows, tune
from strategies.engine.types import ModuleOutput
from tests.engine.test_strat_support import regime

H = 3600
DAY = 86_400


# -- the evaluator on a hand-made panel --------------------------------------------------------------

def tiny_panel(close: list[float], low: list[float] | None = None, fire_at: tuple[int, ...] = (0,),
               label: RegimeLabel = RegimeLabel.TREND) -> Panel:
    """One market, bars of one hour, open = close; TP scores 100 at the bars in ``fire_at``."""
    n = len(close)
    c = np.array([close], float)
    lo = np.array([low if low is not None else close], float)
    outputs = tuple((ModuleOutput("TP", np.array([100.0 if t in fire_at else 0.0]),
                                  np.array([1 if t in fire_at else 0], np.int8), ((),)),) for t in range(n))
    return Panel(("M",), np.arange(n, dtype=np.int64) * H, c.copy(), np.maximum(c, lo), lo, c, np.full((1, n), 1.0),
                 np.array([0.001]), np.array([False]), 0, tuple(regime(label, 100.0) for _ in range(n)), outputs,
                 np.ones((n, 1), bool), np.zeros((n, 1), np.int64), tuple(None for _ in range(n)), H)


PARAMS = {"module_weights": {"TP": 1.0}, "entry_threshold": 60.0, "exit_threshold": 30.0,
          "score_calibration": "RAW"}          # hand-computed on the raw composite
CFG = EvaluatorConfig(window_bars=60, max_hold_bars=3, atr_stop_mult=2.0, slippage=0.002)
COST = 2 * 0.001 + 2 * 0.002


def test_entry_next_open_time_stop_and_costs():
    close = [100, 101, 102, 103, 104, 105, 106, 107]
    sim = simulate(tiny_panel(close), PARAMS, CFG)
    # ENTER at bar 0's close (score 100), filled at bar 1's open; the score EMA decays (70, 49,
    # 34.3 > exit 30), so the time stop (3 bars) decides at bar 3 and sells at bar 4's open
    assert sim.entry_bar.tolist() == [1]
    entry, exit_ = 101 * 1.002, 104 * (1 - 0.002)
    assert sim.r_net[0] == pytest.approx(exit_ / entry - 1 - COST)
    assert sim.mae[0] == pytest.approx(101 / entry - 1 - COST)         # bar 1's low, under the fill price
    # the portfolio's bar returns carry the trade at 1/5 of equity (STANDARD's position cap)
    assert sim.bar_returns.sum() == pytest.approx((exit_ / entry - 1 - COST) / 5, abs=2e-4)


def test_the_score_exit():
    close = [100, 101, 102, 103, 104, 105, 106, 107]
    sim = simulate(tiny_panel(close), {**PARAMS, "exit_threshold": 50.0}, replace(CFG, max_hold_bars=10))
    # EMA 70 at bar 1, 49 at bar 2 <= 50: EXIT decided at bar 2, sold at bar 3's open
    assert sim.r_net[0] == pytest.approx(103 * (1 - 0.002) / (101 * 1.002) - 1 - COST)


def test_the_atr_stop_sells_at_the_stop():
    close = [100, 100, 100, 100, 99, 99, 99, 99]
    low = [100, 100, 97, 100, 99, 99, 99, 99]          # ATR 1: stop at entry - 2, hit at bar 2
    sim = simulate(tiny_panel(close, low), PARAMS, replace(CFG, max_hold_bars=10))
    entry = 100 * 1.002
    assert sim.r_net[0] == pytest.approx((entry - 2.0) * (1 - 0.002) / entry - 1 - COST)
    assert sim.mae[0] == pytest.approx(97 / entry - 1 - COST)


def test_no_entries_in_chop():
    sim = simulate(tiny_panel([100] * 8, label=RegimeLabel.CHOP), PARAMS, CFG)
    assert len(sim.r_net) == 0 and not sim.bar_returns.any()


def test_windows_take_the_trades_entered_in_them():
    ev = PanelEvaluator(tiny_panel([100, 101, 102, 103, 104, 105, 106, 107]), CFG)
    assert ev.evaluate(PARAMS, Window(0, 1 * H)).n_trades == 0
    inside = ev.evaluate(PARAMS, Window(1 * H, 8 * H))
    assert inside.n_trades == 1 and ev.simulations == 1      # one simulation serves every window


# -- plan and tuner with a fast fake evaluator -------------------------------------------------------

class FakeEvaluator:
    """Deterministic in the params; the hold-out's results come from ``holdout_seed``."""

    def __init__(self, holdout_seed: int = 0) -> None:
        self.calls: list[Window] = []
        self.holdout_seed = holdout_seed

    def evaluate(self, params, window):
        self.calls.append(window)
        w = params["module_weights"]
        edge = (w["TP"] - w["MR"]) * 0.004 + (params["entry_threshold"] - 50) * 1e-5
        key = window.start if window.start < HOLDOUT_START else window.start + self.holdout_seed
        rng = np.random.default_rng(abs(hash((round(edge, 8), key))) % 2**32)
        n = 40
        r = rng.normal(edge, 0.01, n)
        days = window.days
        daily = rng.normal(edge / 5, 0.01, int(math.ceil(days)))
        return WindowResult(r, -np.abs(rng.normal(0.005, 0.002, n)), np.full(n, window.start), daily, days)


SPAN = Window(0, 100 * DAY)
HOLDOUT_START = plan_windows(SPAN, TuningConfig()).holdout.start


def test_the_plan_keeps_the_holdout_after_every_fold():
    plan = plan_windows(SPAN, TuningConfig(train_days=14, test_days=7))
    assert plan.holdout.start == plan.tuning.end and plan.holdout.end == SPAN.end
    assert plan.holdout.days == pytest.approx(30, abs=1 / 24)
    assert all(f.end <= plan.holdout.start for f in plan.folds)
    assert [f.start for f in plan.folds] == [(14 + 7 * k) * DAY for k in range(len(plan.folds))]
    assert len(plan.folds) == 8


def test_same_seed_same_trials_other_seed_other_trials():
    cfg = TuningConfig(n_trials=12, seed=4)
    a = tune(FakeEvaluator(), SPAN, 20, cfg)
    b = tune(FakeEvaluator(), SPAN, 20, cfg)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.objective for t in a.trials] == [t.objective for t in b.trials]
    c = tune(FakeEvaluator(), SPAN, 20, replace(cfg, seed=5))
    assert [t.params for t in c.trials] != [t.params for t in a.trials]
    assert all(validate(t.params) == [] for t in a.trials)


def test_the_optimizer_never_sees_the_holdout():
    cfg = TuningConfig(n_trials=10, seed=1)
    spy = FakeEvaluator(holdout_seed=0)
    a = tune(spy, SPAN, 20, cfg)
    plan = plan_windows(SPAN, cfg)
    assert spy.calls.count(plan.holdout) == 10                 # one hold-out evaluation per trial ...
    b = tune(FakeEvaluator(holdout_seed=999), SPAN, 20, cfg)    # ... which cannot steer the search
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.gate.metrics["e"] for t in a.trials] != [t.gate.metrics["e"] for t in b.trials]


def test_every_trial_is_gated_with_dsr_and_pbo():
    res = tune(FakeEvaluator(), SPAN, 20, TuningConfig(n_trials=8, seed=2))
    assert res.pbo is not None and 0 <= res.pbo["pbo"] <= 1 and res.pbo["candidates"] == 8
    for t in res.trials:
        assert t.gate is not None and t.gate.metrics["dsr"] is not None and t.gate.metrics["pbo"] == res.pbo["pbo"]
    s = res.summary()
    assert sum(s["decisions"].values()) == 8 and s["best_trial"] == max(res.trials, key=lambda t: t.objective).number


# -- the real pieces end to end on a small simulated market -------------------------------------------

def test_tuning_on_a_simulated_market_is_reproducible():
    market = SimMarket(SimConfig(seed=5, n_markets=6, bar_seconds=3600))
    candles = market.generate(40 * 24).candles
    panel = build_panel(candles, {m.symbol: m for m in market.market_info()})
    assert panel.first == EvaluatorConfig().window_bars - 1
    cfg = TuningConfig(n_trials=4, seed=3, train_days=7, test_days=5)
    runs = []
    for _ in range(2):
        ev = PanelEvaluator(panel)
        runs.append(tune(ev, ev.span(), 6, cfg))
    a, b = runs
    assert [t.objective for t in a.trials] == [t.objective for t in b.trials]
    assert [t.holdout.n_trades for t in a.trials] == [t.holdout.n_trades for t in b.trials]
    assert all(t.gate.decision.value in ("PASS", "HOLD", "REJECT") for t in a.trials)
