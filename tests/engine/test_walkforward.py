"""Walk-forward windows, chaining out-of-sample segments and running a runner per window [BT-4];
chart curves that keep the true drawdown. No database."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.engine.backtest.curves import chart_curves, drawdown_pct
from strategies.engine.backtest.reference import sma_cross
from strategies.engine.backtest.report import compute_report
from strategies.engine.backtest.walkforward import (
    Segment,
    SegmentTrade,
    WalkForwardError,
    combine_out_of_sample,
    epoch_seconds,
    run_walk_forward,
    segment_from_result,
    split_windows,
)

DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def spans(windows):
    return [((w.train_start - T0) // DAY, (w.train_end - T0) // DAY, (w.test_start - T0) // DAY,
             (w.test_end - T0) // DAY) for w in windows]


# -- splitting --------------------------------------------------------------------------------------

def test_rolling_windows_slide_by_the_step_and_drop_a_short_remainder():
    windows = split_windows(T0, T0 + 100 * DAY, train=30 * DAY, test=10 * DAY)
    assert spans(windows) == [(0, 30, 30, 40), (10, 40, 40, 50), (20, 50, 50, 60), (30, 60, 60, 70),
                              (40, 70, 70, 80), (50, 80, 80, 90), (60, 90, 90, 100)]
    assert [w.index for w in windows] == list(range(7))
    shorter = split_windows(T0, T0 + 95 * DAY, train=30 * DAY, test=10 * DAY)
    assert spans(shorter)[-1] == (50, 80, 80, 90)   # 90..95 is shorter than a test window: not tested


def test_anchored_windows_train_from_the_start():
    windows = split_windows(T0, T0 + 60 * DAY, train=20 * DAY, test=10 * DAY, anchored=True)
    assert spans(windows) == [(0, 20, 20, 30), (0, 30, 30, 40), (0, 40, 40, 50), (0, 50, 50, 60)]


def test_a_step_longer_than_the_test_leaves_gaps_between_test_windows():
    windows = split_windows(T0, T0 + 60 * DAY, train=20 * DAY, test=5 * DAY, step=15 * DAY)
    assert spans(windows) == [(0, 20, 20, 25), (15, 35, 35, 40), (30, 50, 50, 55)]


def test_window_bounds_are_iso_in_to_dict():
    w = split_windows(T0, T0 + 3 * DAY, train=2 * DAY, test=DAY)[0]
    assert w.to_dict() == {"index": 0, "train_start": "2024-01-01T00:00:00Z", "train_end": "2024-01-03T00:00:00Z",
                           "test_start": "2024-01-03T00:00:00Z", "test_end": "2024-01-04T00:00:00Z"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"train": 0, "test": DAY}, "positive"),
    ({"train": DAY, "test": -DAY}, "positive"),
    ({"train": DAY, "test": 2 * DAY, "step": DAY}, "at least the test length"),
    ({"train": 50 * DAY, "test": 20 * DAY}, "shorter than one train"),
    ({"train": 1.5, "test": DAY}, "whole seconds"),
    ({"train": 60, "test": 60, "max_windows": 10}, "at most 10"),
])
def test_bad_walk_forward_settings_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(WalkForwardError, match=message):
        split_windows(T0, T0 + 60 * DAY, **kwargs)


def test_an_empty_period_is_refused():
    with pytest.raises(WalkForwardError, match="start must be before end"):
        split_windows(T0, T0, train=DAY, test=DAY)


# -- combining ----------------------------------------------------------------------------------------

def test_segments_chain_their_capital():
    """Each test window starts with the same cash; chained, window 2 starts where window 1 ended."""
    ts1, ts2 = T0 + np.arange(3) * 3600, T0 + 10 * 3600 + np.arange(3) * 3600
    s1 = Segment(ts1, np.array([110.0, 120.0, 150.0]), 100.0,
                 [SegmentTrade(int(ts1[0]), int(ts1[2]), 50.0, 0.5, False, 100.0, 150.0)])
    s2 = Segment(ts2, np.array([90.0, 80.0, 200.0]), 100.0,
                 [SegmentTrade(int(ts2[0]), int(ts2[2]), 100.0, 1.0, False, 100.0, 200.0)])
    combined = combine_out_of_sample([s1, s2], bar_seconds=3600, initial_equity=100.0)
    assert combined.scales == [1.0, 1.5]
    assert combined.equity.tolist() == [110.0, 120.0, 150.0, 135.0, 120.0, 300.0]
    assert combined.report["final_equity"] == 300.0
    assert combined.report["total_return"] == pytest.approx(2.0)
    assert [t.pnl for t in combined.trades] == [50.0, 150.0]
    assert combined.report["trades"] == 2 and combined.report["win_rate"] == 1.0
    # drawdown across the boundary: peak 150 (end of window 1), trough 120 in window 2
    assert combined.report["max_drawdown"] == pytest.approx(0.2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-0.05, 0.05), min_size=6, max_size=80), st.data())
def test_chaining_consecutive_pieces_of_one_run_gives_that_run(returns, data):
    """Cut one equity curve into consecutive pieces, each restarted from the same cash: chained
    back together they are the original curve and report the same metrics."""
    equity = 1000.0 * np.cumprod(1.0 + np.asarray(returns))
    ts = T0 + np.arange(len(equity)) * 60
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(equity) - 1), max_size=4))))
    bounds = [0, *cuts, len(equity)]
    segments, start_value = [], 1000.0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        piece = equity[lo:hi] / start_value * 1000.0     # as if run alone from 1000 cash
        segments.append(Segment(ts[lo:hi], piece, 1000.0))
        start_value = equity[hi - 1]
    combined = combine_out_of_sample(segments, bar_seconds=60, initial_equity=1000.0)
    np.testing.assert_allclose(combined.equity, equity, rtol=1e-12)
    direct = compute_report(equity, ts, bar_seconds=60, initial_equity=1000.0).to_dict()
    # (ratios such as Sharpe follow from the same curve; on near-constant returns they are
    # dominated by rounding noise, so they are not compared here)
    for key in ("total_return", "annualized_return", "max_drawdown", "bars", "period_days"):
        if direct[key] is None:        # annualising minutes of returns can overflow: None on both sides
            assert combined.report[key] is None
        else:
            assert combined.report[key] == pytest.approx(direct[key], rel=1e-9, abs=1e-12)


def test_overlapping_or_empty_segments_are_refused():
    a = Segment(T0 + np.arange(3) * 60, np.ones(3), 1.0)
    with pytest.raises(WalkForwardError, match="overlap"):
        combine_out_of_sample([a, a], bar_seconds=60, initial_equity=1.0)
    with pytest.raises(WalkForwardError, match="at least one bar"):
        combine_out_of_sample([Segment(np.array([], dtype=np.int64), np.array([]), 1.0)], bar_seconds=60,
                              initial_equity=1.0)
    with pytest.raises(WalkForwardError, match="no test window"):
        combine_out_of_sample([], bar_seconds=60, initial_equity=1.0)


def test_segment_from_a_runner_result():
    result = {"strategy": "x", "report": {"initial_equity": 100.0},
              "equity": [[T0, 100.0], [T0 + 60, 105.0]],
              "trade_list": [{"entry_time": "2024-01-01T00:00:00Z", "exit_time": "2024-01-01T00:01:00Z",
                              "qty": 2.0, "entry_price": 50.0, "exit_price": 52.5, "pnl": 5.0, "return": 0.05,
                              "is_open": False}]}
    seg = segment_from_result(result)
    assert seg.ts.tolist() == [T0, T0 + 60] and seg.initial_equity == 100.0
    assert seg.trades[0] == SegmentTrade(T0, T0 + 60, 5.0, 0.05, False, 100.0, 105.0)
    with pytest.raises(WalkForwardError, match="no equity series"):
        segment_from_result({"strategy": "x", "report": {}})
    assert epoch_seconds("2024-01-01T00:00:00Z") == T0 == epoch_seconds(T0)


# -- running --------------------------------------------------------------------------------------------

class InputError(ValueError):
    pass


def make_runner(n_bars: int = 24 * 120, fee: float = 0.001, seed: int = 5):
    """A runner shaped like strategies.backtests.run_sma_cross on an in-memory hourly series."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, n_bars)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    ts_all = T0 + np.arange(n_bars, dtype=np.int64) * 3600
    calls = []

    def runner(options, progress=None):
        lo = epoch_seconds(options["start"]) if options.get("start") else T0
        hi = epoch_seconds(options["end"]) if options.get("end") else int(ts_all[-1]) + 3600
        keep = (ts_all >= lo) & (ts_all < hi)
        calls.append((options["start"], options["end"]))
        if keep.sum() < options["slow"] + 2:
            raise InputError(f"{keep.sum()} bars; needs {options['slow'] + 2}")
        ts = ts_all[keep]
        res = sma_cross(open_[keep], close[keep], options["fast"], options["slow"], fee, options["cash"], ts=ts)
        report = compute_report(res.equity, ts, res.trades, bar_seconds=3600, initial_equity=options["cash"],
                                position_value=res.position_value, traded_value=res.traded_value)
        if progress:
            progress(0.5)
            progress(1.0)
        return {"strategy": "sma_cross", "params": {"fast": options["fast"]}, "report": report.to_dict(),
                "equity": [[int(t), float(e)] for t, e in zip(ts, res.equity, strict=True)],
                "trade_list": [{"entry_time": int(t.entry_ts), "exit_time": int(t.exit_ts), "qty": t.qty,
                                "entry_price": t.entry_price, "exit_price": t.exit_price, "pnl": t.pnl,
                                "fees": t.entry_fee + t.exit_fee, "return": t.return_, "is_open": t.is_open}
                               for t in res.trades]}
    return runner, calls


OPTIONS = {"fast": 5, "slow": 20, "cash": 1_000_000.0, "start": None, "end": None, "no_trade_list": True}


def test_walk_forward_runs_every_window_in_and_out_of_sample():
    runner, calls = make_runner()
    windows = split_windows(T0, T0 + 120 * DAY, train=40 * DAY, test=20 * DAY)
    seen = []
    wf = run_walk_forward(runner, OPTIONS, windows, initial_equity=1_000_000.0, progress=seen.append,
                          window_error=InputError)
    assert len(calls) == 2 * len(windows) == 8
    assert calls[0] == ("2024-01-01T00:00:00Z", "2024-02-10T00:00:00Z")    # train of window 0
    assert calls[1] == ("2024-02-10T00:00:00Z", "2024-03-01T00:00:00Z")    # test of window 0
    assert wf["tested_windows"] == 4
    assert seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1
    oos = wf["out_of_sample"]
    assert oos["report"]["bars"] == 4 * 20 * 24
    # the combined curve is the test runs chained: its final equity is the product of their growth
    growth = np.prod([1 + w["out_of_sample"]["total_return"] for w in wf["windows"]])
    assert oos["report"]["final_equity"] == pytest.approx(1_000_000.0 * growth, rel=1e-9)
    assert oos["equity"][-1][1] == pytest.approx(oos["report"]["final_equity"])
    assert {t["window"] for t in oos["trade_list"]} <= {0, 1, 2, 3}
    assert oos["report"]["trades"] == sum(w["out_of_sample"]["trades"] for w in wf["windows"])
    # chained trade PnL adds up to the combined gain (closed trades only; open ones are marked)
    closed = [t for t in oos["trade_list"] if not t["is_open"]]
    assert len(closed) >= 1
    mean_is = wf["in_sample_mean"]["annualized_return"]
    if mean_is is not None and mean_is > 0:
        assert wf["efficiency"] == pytest.approx(oos["report"]["annualized_return"] / mean_is)
    else:
        assert wf["efficiency"] is None


def test_a_window_too_short_for_the_indicators_is_reported_and_skipped():
    runner, _ = make_runner()
    windows = split_windows(T0, T0 + 30 * DAY, train=10 * DAY, test=DAY // 2)   # 12 bars < slow + 2
    opts = dict(OPTIONS, slow=20)
    with pytest.raises(WalkForwardError, match="no test window could be run: 12 bars; needs 22"):
        run_walk_forward(runner, opts, windows, initial_equity=1e6, window_error=InputError)
    mixed = split_windows(T0, T0 + 20 * DAY, train=DAY // 2, test=2 * DAY)   # train too short, test fine
    wf = run_walk_forward(runner, opts, mixed, initial_equity=1e6, window_error=InputError)
    assert all("error" in w["in_sample"] for w in wf["windows"])
    assert wf["tested_windows"] == len(mixed) and wf["efficiency"] is None


def test_an_unexpected_runner_error_is_not_swallowed():
    def broken(options, progress=None):
        raise RuntimeError("bug")
    windows = split_windows(T0, T0 + 3 * DAY, train=DAY, test=DAY)
    with pytest.raises(RuntimeError):
        run_walk_forward(broken, OPTIONS, windows, initial_equity=1.0, window_error=InputError)


# -- chart curves ------------------------------------------------------------------------------------------

def test_short_curves_are_kept_whole():
    ts, eq, dd = chart_curves(np.arange(10), np.linspace(1, 2, 10), max_points=50)
    assert len(ts) == 10 and dd.max() == 0.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1_000, 30_000), st.integers(6, 500))
def test_thinned_curves_keep_the_true_max_drawdown_and_the_ends(seed, n, max_points):
    rng = np.random.default_rng(seed)
    equity = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = np.arange(n, dtype=np.int64) * 60
    t, e, d = chart_curves(ts, equity, max_points=max_points)
    assert len(t) <= max_points
    assert np.all(np.diff(t) > 0)
    assert (t[0], e[0], t[-1], e[-1]) == (ts[0], equity[0], ts[-1], equity[-1])
    assert d.min() == pytest.approx(drawdown_pct(equity).min(), abs=1e-12)
    assert e.max() == equity.max() and e.min() == equity.min()
    # thinned again from the thinned equity alone (what a second pass sees): same max drawdown
    assert drawdown_pct(e).min() == pytest.approx(drawdown_pct(equity).min(), abs=1e-12)


def test_a_trough_between_a_peak_and_a_higher_high_in_one_bucket_keeps_its_peak():
    equity = np.array([100.0] * 10 + [150.0, 60.0, 200.0] + [200.0] * 12)
    t, e, d = chart_curves(np.arange(len(equity)), equity, max_points=6)    # one bucket
    assert drawdown_pct(e).min() == pytest.approx(-60.0)
    assert d.min() == pytest.approx(-60.0)


def test_drawdown_pct():
    assert drawdown_pct(np.array([100.0, 120.0, 90.0, 130.0])).tolist() == pytest.approx([0.0, 0.0, -25.0, 0.0])


def test_iso_bounds_are_utc():
    w = split_windows(T0, T0 + 2 * DAY, train=DAY, test=DAY)[0]
    assert datetime.fromisoformat(w.to_dict()["test_start"].replace("Z", "+00:00")) == datetime(2024, 1, 2, tzinfo=UTC)
