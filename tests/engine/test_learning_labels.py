"""Feature-snapshot labels [AI-1]: values, costs, no look-ahead, nothing before the horizon."""

from __future__ import annotations

import numpy as np
import pytest

from strategies.engine.learning.labels import LabelCosts, Labels, SymbolBars, label_snapshot

T0 = 1_700_000_040          # bar-open of the snapshot's bar (a multiple of 60)
P0 = 100.0
COSTS = LabelCosts(fee=0.0005, slippage=0.0010)   # round trip 0.003


def bars(n: int = 300, *, start: int = T0 - 600, seed: int = 1) -> SymbolBars:
    rng = np.random.default_rng(seed)
    ts = start + 60 * np.arange(n)
    close = P0 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    high = close * (1 + rng.uniform(0, 0.002, n))
    low = close * (1 - rng.uniform(0, 0.002, n))
    return SymbolBars.from_arrays(ts, high, low, close)


def known_all(b: SymbolBars) -> int:
    return int(b.ts[-1])


def test_round_trip_cost_is_two_fees_and_two_slippages():
    assert COSTS.round_trip == pytest.approx(2 * 0.0005 + 2 * 0.0010)
    with pytest.raises(ValueError):
        LabelCosts(fee=-0.001, slippage=0.0)


def test_labels_by_hand_on_a_staircase():
    """Close moves 0.1 per bar (highs +0.05, lows -0.05); the window is the 240 bars opening at
    T0 + 1 min .. T0 + 240 min, so ret_240 reads the close 240 bars after the snapshot."""
    k = np.arange(-10, 390)
    ts = T0 + 60 * k
    cost = COSTS.round_trip
    up = P0 + 0.1 * k
    lab = label_snapshot(T0, P0, SymbolBars.from_arrays(ts, up + 0.05, up - 0.05, up), COSTS, int(ts[-1]))
    assert lab.complete
    assert lab.label_ret_60m == pytest.approx(106 / 100 - 1 - cost)
    assert lab.label_ret_240m == pytest.approx(124 / 100 - 1 - cost)
    assert lab.label_mfe_240m == pytest.approx(124.05 / 100 - 1 - cost)
    assert lab.label_mae_240m == pytest.approx(100.05 / 100 - 1 - cost)   # the first bar's low
    assert lab.label_dd_240m == pytest.approx(0.0)      # every low is at or above the peak before it
    down = P0 - 0.1 * k
    lab = label_snapshot(T0, P0, SymbolBars.from_arrays(ts, down + 0.05, down - 0.05, down), COSTS, int(ts[-1]))
    assert lab.label_ret_60m == pytest.approx(94 / 100 - 1 - cost)
    assert lab.label_ret_240m == pytest.approx(76 / 100 - 1 - cost)
    assert lab.label_mfe_240m == pytest.approx(99.95 / 100 - 1 - cost)
    assert lab.label_mae_240m == pytest.approx(75.95 / 100 - 1 - cost)
    assert lab.label_dd_240m == pytest.approx(75.95 / 100 - 1)    # from the entry price, no cost


def test_drawdown_measures_from_the_running_peak():
    ts = T0 + 60 * np.arange(1, 241)
    close = np.full(240, 100.0)
    high, low = close.copy(), close.copy()
    high[9] = 120.0                 # a spike to 120 at bar 10 ...
    low[49] = 90.0                  # ... then a dip to 90 at bar 50: 25 % below the peak
    lab = label_snapshot(T0, P0, SymbolBars.from_arrays(ts, high, low, close), COSTS, int(ts[-1]))
    assert lab.label_dd_240m == pytest.approx(90 / 120 - 1)
    assert lab.label_mfe_240m == pytest.approx(120 / 100 - 1 - COSTS.round_trip)
    assert lab.label_mae_240m == pytest.approx(90 / 100 - 1 - COSTS.round_trip)


def test_no_look_ahead_changing_the_future_beyond_the_horizon_changes_nothing():
    b = bars(600)
    base = label_snapshot(T0, P0, b, COSTS, known_all(b))
    assert base.complete
    horizon_end = T0 + 240 * 60
    beyond = b.ts > horizon_end
    assert beyond.sum() > 100
    for factor in (0.5, 3.0):       # crash or triple every bar after the horizon
        changed = SymbolBars(b.ts, np.where(beyond, b.high * factor, b.high), np.where(beyond, b.low * factor, b.low),
                             np.where(beyond, b.close * factor, b.close))
        assert label_snapshot(T0, P0, changed, COSTS, known_all(changed)) == base
    # shifting the future: drop every bar after the horizon, or add a year of them
    cut = SymbolBars(b.ts[~beyond], b.high[~beyond], b.low[~beyond], b.close[~beyond])
    assert label_snapshot(T0, P0, cut, COSTS, known_all(b)) == base
    # the 60-minute label ignores everything after its own horizon too
    after_60 = b.ts > T0 + 60 * 60
    moved = SymbolBars(b.ts, np.where(after_60, b.high * 2, b.high), np.where(after_60, b.low * 2, b.low),
                       np.where(after_60, b.close * 2, b.close))
    assert label_snapshot(T0, P0, moved, COSTS, known_all(b)).label_ret_60m == base.label_ret_60m


def test_bars_before_the_snapshot_do_not_matter_either():
    b = bars(600)
    base = label_snapshot(T0, P0, b, COSTS, known_all(b))
    past = b.ts <= T0
    changed = SymbolBars(b.ts, np.where(past, b.high * 5, b.high), np.where(past, b.low / 5, b.low),
                         np.where(past, b.close * 5, b.close))
    assert label_snapshot(T0, P0, changed, COSTS, known_all(b)) == base


def test_labels_do_not_exist_before_their_horizon_has_passed():
    b = bars(600)
    for known in (T0, T0 + 59 * 60):
        assert label_snapshot(T0, P0, b, COSTS, known) == Labels()
    at_60 = label_snapshot(T0, P0, b, COSTS, T0 + 60 * 60)
    assert at_60.label_ret_60m is not None and at_60.label_ret_240m is None and not at_60.complete
    before_240 = label_snapshot(T0, P0, b, COSTS, T0 + 239 * 60)
    assert before_240.label_ret_240m is None and before_240.label_mfe_240m is None and not before_240.complete
    at_240 = label_snapshot(T0, P0, b, COSTS, T0 + 240 * 60)
    assert at_240.complete and at_240 == label_snapshot(T0, P0, b, COSTS, known_all(b))


def test_a_passed_window_without_bars_is_final_and_empty():
    b = bars(10, start=T0 - 600)    # data stops before the snapshot
    lab = label_snapshot(T0, P0, b, COSTS, T0 + 300 * 60)
    assert lab.complete and lab.label_ret_240m is None and lab.label_ret_60m is None


def test_gaps_use_the_last_close_inside_the_window():
    ts = T0 + 60 * np.arange(1, 241)
    close = np.linspace(100, 110, 240)
    keep = ts <= T0 + 200 * 60      # the last 40 bars of the window are missing
    b = SymbolBars.from_arrays(ts[keep], close[keep] + 0.1, close[keep] - 0.1, close[keep])
    lab = label_snapshot(T0, P0, b, COSTS, T0 + 240 * 60)
    assert lab.label_ret_240m == pytest.approx(close[keep][-1] / 100 - 1 - COSTS.round_trip)


def test_bad_inputs_are_refused():
    b = bars(50)
    with pytest.raises(ValueError):
        label_snapshot(T0, 0.0, b, COSTS, known_all(b))
    with pytest.raises(ValueError):
        SymbolBars(np.array([2, 1]), np.ones(2), np.ones(2), np.ones(2))
