"""Learning on real data (issue 14 part 4): the [AI-1] labels of candle files (vectorised, equal
to ``label_snapshot``), the tuner's real-data input (resampled, cropped, most traded markets),
the hold-out random-entry baseline in the gate's report, the decision reasons of a tuning run,
and, on ``../shared/data``, labels of real files and a gate sample reachable on 90 days x 20
markets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from execution.engine.types import Candles
from strategies.engine.learning.evaluator import PanelEvaluator, Window
from strategies.engine.learning.gate import GateConfig, evaluate_gate
from strategies.engine.learning.labels import LABEL_FIELDS, LabelCosts, SymbolBars, label_snapshot
from strategies.engine.learning.realdata import (
    label_bars,
    label_summary,
    load_real,
    prepare_candles,
    real_files,
)
from strategies.engine.learning.tuning import TuningConfig, tune
from tests.conftest import require_shared_data
from tests.engine.test_learning_tuning import CFG, PARAMS, SPAN, FakeEvaluator, tiny_panel

COSTS = LabelCosts(fee=0.001, slippage=0.0005)


def random_candles(n: int, markets: int = 2, timeframe: str = "1m", seed: int = 0, gaps: float = 0.05,
                   start: int = 1_700_000_040) -> Candles:
    bar = {"1m": 60, "5m": 300, "15m": 900}[timeframe]
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, (markets, n)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, (markets, n)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, (markets, n)))
    vol = rng.uniform(1, 10, (markets, n)) * (1 + np.arange(markets))[:, None]
    arrays = [open_, high, low, close, vol]
    gap = rng.random((markets, n)) < gaps
    for a in arrays:
        a[gap] = np.nan
    ts = (start - start % bar) + np.arange(n, dtype=np.int64) * bar
    return Candles(tuple(f"M{i}-USDT" for i in range(markets)), timeframe, ts, *arrays)


# -- labels of candle files ---------------------------------------------------------------------------

@pytest.mark.parametrize("timeframe", ["1m", "5m"])
def test_label_bars_equal_label_snapshot_at_every_bar(timeframe):
    bar = {"1m": 60, "5m": 300}[timeframe]
    n = 320 if timeframe == "1m" else 90            # the end: horizons run past the data
    c = random_candles(n, timeframe=timeframe, seed=3)
    labels = label_bars(c, COSTS)
    known_until = int(c.ts[-1])
    for i in range(c.n_markets):
        bars = SymbolBars.from_arrays(c.ts, c.high[i], c.low[i], c.close[i])
        for k, t in enumerate(labels.bar):
            price = c.close[i, t]
            got = {f: labels.values[f][i, k] for f in LABEL_FIELDS}
            if not math.isfinite(price):
                assert all(math.isnan(v) for v in got.values())
                continue
            want = label_snapshot(int(c.ts[t]), float(price), bars, COSTS, known_until, bar_seconds=bar).as_fields()
            for f in LABEL_FIELDS:
                if want[f] is None:
                    assert math.isnan(got[f]), (f, t)
                else:
                    assert got[f] == pytest.approx(want[f], abs=1e-12), (f, t)


def test_label_bars_step_and_nothing_past_the_horizon():
    c = random_candles(600, markets=1, seed=5, gaps=0.0)
    full = label_bars(c, COSTS)
    every5 = label_bars(c, COSTS, step=5)
    assert every5.bar.tolist() == list(range(0, 600, 5))
    for f in LABEL_FIELDS:
        np.testing.assert_array_equal(every5.values[f], full.values[f][:, ::5])
    # changing bars after bar t + 240 changes no label of bar t
    t = 100
    changed = Candles(c.symbols, c.timeframe, c.ts, c.open.copy(), c.high.copy(), c.low.copy(), c.close.copy(),
                      c.volume)
    changed.high[:, t + 241:] *= 2
    changed.low[:, t + 241:] /= 2
    changed.close[:, t + 241:] *= 3
    again = label_bars(changed, COSTS)
    for f in LABEL_FIELDS:
        assert again.values[f][0, t] == full.values[f][0, t]
    with pytest.raises(ValueError):
        label_bars(c, COSTS, step=0)


def test_horizons_must_be_whole_bars():
    c = random_candles(200, markets=1)
    c7 = Candles(c.symbols, "4h", c.ts * 240, c.open, c.high, c.low, c.close, c.volume)
    with pytest.raises(ValueError, match="not a whole number"):
        label_bars(c7, COSTS)


# -- the tuner's real-data input ----------------------------------------------------------------------

def test_prepare_candles_resamples_keeps_the_most_traded_and_the_last_days():
    c = random_candles(3 * 1440, markets=4, seed=1, gaps=0.0, start=1_700_006_400)
    out = prepare_candles(c, timeframe="15m", markets=2, days=1)
    assert out.timeframe == "15m" and out.symbols == ("M2-USDT", "M3-USDT")     # most volume
    assert out.n_bars == 96 and int(out.ts[-1]) + 900 == int(c.ts[-1]) + 60
    i = c.index("M3-USDT")
    last = slice(len(c.ts) - 15, None)
    assert out.close[1, -1] == c.close[i, -1] and out.high[1, -1] == np.max(c.high[i, last])
    with pytest.raises(ValueError, match="multiple"):
        prepare_candles(out, timeframe="5m")
    with pytest.raises(ValueError):
        prepare_candles(c, markets=1)


def test_the_automatic_bar_is_the_finest_within_the_budget():
    from strategies.engine.learning.realdata import auto_bar

    assert auto_bar("5m", 20, 90) == "1h"            # 15m: 172,800 market-bars > 50,000
    assert auto_bar("1m", 6, 46) == "15m"            # 5m: 79,488 > 50,000; 15m: 26,496
    assert auto_bar("5m", 2, 40) == "5m"
    assert auto_bar("1m", 200, 366) == "4h"          # nothing fits: the coarsest
    assert auto_bar("1h", 2, 10) == "1h" and auto_bar("1d", 5, 100) == "1d"
    c = random_candles(3 * 1440, markets=4, seed=1, gaps=0.0, start=1_700_006_400)
    assert prepare_candles(c, timeframe="auto", markets=2).timeframe == "5m"     # 2 x 3 days


# -- the random-entry baseline in the gate's report -----------------------------------------------------

def test_panel_evaluator_baseline_matches_the_evidence_module():
    close = [100, 101, 102, 103, 104, 105, 106, 107, 106, 105, 104, 103]
    panel = tiny_panel(close, fire_at=(0, 6))
    ev = PanelEvaluator(panel, CFG)
    window = Window(0, len(close) * 3600)
    res = ev.evaluate(PARAMS, window)
    assert res.n_trades >= 1 and res.market is not None and res.hold_bars is not None
    base = ev.baseline(PARAMS, window, n_draws=100, seed=0)
    assert base["trades"] == res.n_trades and base["draws"] == 100
    total = float(res.weight @ res.r_net)
    assert base["excess_total"] == pytest.approx(total - base["total_return_mean"])
    assert 0.0 <= base["percentile"] <= 100.0
    assert ev.baseline(PARAMS, window, n_draws=100, seed=0) == base            # deterministic
    gate = evaluate_gate(res.r_net, res.mae, window.days, GateConfig(min_samples=1), baseline=base)
    plain = evaluate_gate(res.r_net, res.mae, window.days, GateConfig(min_samples=1))
    assert gate.decision == plain.decision and gate.rule == plain.rule         # reporting only
    assert gate.metrics["rb_excess_total"] == pytest.approx(base["excess_total"])
    assert gate.metrics["baseline_percentile"] == base["percentile"]


def test_tuning_summary_says_why_each_trial_was_decided():
    res = tune(FakeEvaluator(), SPAN, 20, TuningConfig(n_trials=6, seed=2))
    s = res.summary()
    assert sum(sum(v.values()) for v in s["decisive_rules"].values()) == 6
    for decision, rules in s["decisive_rules"].items():
        assert sum(rules.values()) == s["decisions"][decision]
    assert s["oos_trades"]["reaching_n_min"] == 6 and s["oos_trades"]["median"] == 40
    assert all(s["failing_rules"][r] >= n for d in s["decisive_rules"].values() for r, n in d.items()
               if r != "ALL_RULES_PASSED")


# -- real files (../shared/data) ----------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.parametrize("relative", ["upbit_azuremooni/upbit_KRW-BTC_1m.csv.gz",
                                      "binance_selskas_2021/binance_ETH-USDT_5m.csv.gz"])
def test_labels_of_a_real_file(relative):
    path = require_shared_data(relative)
    candles, rules, described = load_real([path])
    c = prepare_candles(candles, days=5)                       # five days keep the test quick
    bar = {"1m": 60, "5m": 300}[c.timeframe]
    costs = LabelCosts(fee=float(rules[c.symbols[0]].taker_fee), slippage=0.0005)
    labels = label_bars(c, costs)
    summary = label_summary(labels)
    horizon = 240 * 60 // bar
    assert summary["labelled"] >= 0.95 * (c.n_bars - horizon)
    r60, r240 = summary["label_ret_60m"], summary["label_ret_240m"]
    # a round trip costs 2 * (fee + slippage): on a few days of a real market the mean net
    # return is within a few tenths of a percent of minus that cost, and MFE >= ret >= MAE
    assert abs(r60["mean"] + costs.round_trip) < 0.01 and abs(r240["mean"] + costs.round_trip) < 0.03
    v = labels.values
    ok = np.isfinite(v["label_ret_240m"])
    assert np.all(v["label_mfe_240m"][ok] >= v["label_ret_240m"][ok] - 1e-12)
    assert np.all(v["label_mae_240m"][ok] <= v["label_ret_240m"][ok] + 1e-12)
    assert np.all(v["label_dd_240m"][ok] <= 0)
    # spot check against the per-snapshot labeller
    bars = SymbolBars.from_arrays(c.ts, c.high[0], c.low[0], c.close[0])
    for t in range(0, c.n_bars, max(1, c.n_bars // 25)):
        if not math.isfinite(c.close[0, t]):
            continue
        want = label_snapshot(int(c.ts[t]), float(c.close[0, t]), bars, costs, int(c.ts[-1]), bar_seconds=bar)
        for f, w in want.as_fields().items():
            got = v[f][0, t]
            assert (w is None and math.isnan(got)) or got == pytest.approx(w, abs=1e-12)


@pytest.mark.realdata
def test_the_default_real_universe_is_20_markets_by_90_days():
    files = real_files(require_shared_data())
    candles, _rules, described = load_real(files, timeframe="1h", days=90, markets=20)
    assert candles.n_markets == 20 and candles.timeframe == "1h"
    assert described["days"] == pytest.approx(90, abs=1 / 24) and described["file_timeframe"] == "5m"


@pytest.mark.slow
@pytest.mark.realdata
def test_the_gate_sample_is_reachable_on_90_days_by_20_real_markets():
    """binance_selskas_2021, 20 markets x 90 days, 15-minute bars (the tuner's real-data bar): a
    typical candidate (module weights of STANDARD, an entry threshold in the lower half of the
    search range) makes at least N_MIN trades in the hold-out alone (the last 30 %, 27 days)."""
    from strategies.engine.learning.evaluator import build_panel
    from strategies.engine.learning.tick_evaluator import TickEvaluator
    from strategies.engine.learning.tuning import plan_windows

    candles, rules, _ = load_real(real_files(require_shared_data()), timeframe="15m", days=90, markets=20)
    ev = TickEvaluator(build_panel(candles, rules), candles, rules)
    plan = plan_windows(ev.span(), TuningConfig())
    n_min = GateConfig().min_samples
    counts = {}
    for entry in (35.0, 40.0):
        params = {"entry_threshold": entry, "exit_threshold": entry / 2}
        counts[entry] = ev.evaluate(params, plan.holdout).n_trades
    assert all(n >= n_min for n in counts.values()), counts
