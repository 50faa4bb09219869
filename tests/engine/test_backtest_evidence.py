"""Evidence of signal quality (``strategies.engine.backtest.evidence``): hand-computed cases."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from strategies.engine.backtest.evidence import (
    buy_and_hold,
    calibration_table,
    evidence,
    ffill,
    forward_net_returns,
    horizon_bars,
    net_round_trip,
    percentile_of,
    random_baseline,
    trade_arrays,
)

NAN = float("nan")
H = 3600


def test_net_round_trip_charges_the_fee_on_each_side():
    assert net_round_trip(100.0, 110.0, 0.001) == pytest.approx(110 * 0.999 / (100 * 1.001) - 1)
    assert net_round_trip(100.0, 100.0, 0.0) == 0.0
    assert net_round_trip(100.0, 100.0, 0.0005) == pytest.approx(0.9995 / 1.0005 - 1)


def test_ffill_and_forward_returns():
    c = np.array([[NAN, 10.0, NAN, 12.0], [5.0, NAN, 4.0, NAN]])
    f = ffill(c)
    assert np.isnan(f[0, 0]) and f[0].tolist()[1:] == [10.0, 10.0, 12.0]
    assert f[1].tolist() == [5.0, 5.0, 4.0, 4.0]
    r = forward_net_returns(c, 2, 0.0)
    assert np.isnan(r[0, 0]) and r[0, 1] == pytest.approx(0.2) and np.isnan(r[0, 2]) and np.isnan(r[0, 3])
    assert r[1, 0] == pytest.approx(-0.2) and r[1, 1] == pytest.approx(-0.2)
    assert horizon_bars(60, 60) == 60 and horizon_bars(60, 300) == 12 and horizon_bars(240, 900) == 16
    assert horizon_bars(60, 3600) == 1 and horizon_bars(240, 3600) == 4


def test_calibration_table_by_hand():
    close = np.array([[100.0, 110.0, 99.0, 99.0, 120.0, 130.0]])
    scores = np.array([[5.0, 15.0, 12.0, NAN, 95.0, 100.0]])
    rows = calibration_table(scores, close, bar_seconds=H, fee=0.0)
    assert [r["bucket"] for r in rows] == ["0-10", "10-20", "90-100"]
    b0, b1, b9 = rows
    assert b0["count"] == 1 and b0["mean_net_60"] == pytest.approx(0.1) and b0["hit_60"] == 1.0
    assert b0["n_240"] == 1 and b0["mean_net_240"] == pytest.approx(0.2)
    # bars 1 and 2: +1 bar -> 99/110 - 1 and 99/99 - 1 (0 is not a hit); +4 bars only from bar 1
    assert b1["count"] == 2 and b1["n_60"] == 2
    assert b1["mean_net_60"] == pytest.approx(((99 / 110 - 1) + 0.0) / 2) and b1["hit_60"] == 0.0
    assert b1["n_240"] == 1 and b1["mean_net_240"] == pytest.approx(130 / 110 - 1) and b1["hit_240"] == 1.0
    # a score of 100 is in the top bucket; the last bar has no forward close
    assert b9["count"] == 2 and b9["n_60"] == 1 and b9["mean_net_60"] == pytest.approx(130 / 120 - 1)
    assert b9["n_240"] == 0 and b9["mean_net_240"] is None and b9["hit_240"] is None


def test_calibration_table_fee_floor_and_short_scores():
    close = np.array([[100.0, 110.0], [100.0, 90.0]])
    scores = np.array([[55.0, NAN], [-70.0, NAN]])           # SHORT scores are signed negative: left out
    rows = calibration_table(scores, close, bar_seconds=60, fee=0.001, horizons=(1,))
    assert len(rows) == 1 and rows[0]["bucket"] == "50-60" and rows[0]["count"] == 1
    assert rows[0]["mean_net_1"] == pytest.approx(110 * 0.999 / (100 * 1.001) - 1)
    assert calibration_table(scores, close, bar_seconds=60, fee=0.0, floor=60.0, horizons=(1,)) == []
    with pytest.raises(ValueError):
        calibration_table(scores[:, :1], close, bar_seconds=60, fee=0.0)


def test_buy_and_hold_by_hand():
    out = buy_and_hold(np.array([[100.0, 80.0, 90.0], [100.0, 120.0, 60.0]]), fee=0.0)
    assert out["return"] == pytest.approx(-0.25) and out["max_drawdown"] == pytest.approx(0.25) and out["markets"] == 2
    out = buy_and_hold(np.array([[100.0, 50.0, 100.0], [10.0, 20.0, 30.0], [NAN, 1.0, 2.0]]), fee=0.001)
    # the third market has no price at the start: two markets, curve (1, 1.25, 2) / 1.001 after the
    # initial cash 1: the entry fee is the only drawdown
    assert out["markets"] == 2 and out["max_drawdown"] == pytest.approx(1 - 1 / 1.001)
    assert out["return"] == pytest.approx(2.0 * 0.999 / 1.001 - 1)
    # a drawdown after a new peak: curve 1, 1.5, 1.2 -> 20 %
    out = buy_and_hold(np.array([[10.0, 15.0, 12.0]]), fee=0.0)
    assert out["max_drawdown"] == pytest.approx(0.2) and out["return"] == pytest.approx(0.2)


def test_random_baseline_flat_prices_and_full_holds_are_exact():
    fee = 0.0005
    flat = np.full((2, 50), 7.0)
    out = random_baseline(flat, np.array([0, 1, 1]), np.array([3, 10, 0]), np.array([0.1, 0.2, 0.3]), fee=fee,
                          n_draws=100, seed=3)
    r = 0.9995 / 1.0005 - 1
    assert out["total_return_mean"] == pytest.approx(0.6 * r) == out["total_return_p05"] == out["total_return_p95"]
    assert out["trade_return_mean"] == pytest.approx(r) and out["draws"] == 100 and out["trades"] == 3
    # holding for the whole period leaves one possible entry: the first bar
    c = np.array([[100.0, 150.0, 120.0, 130.0]])
    out = random_baseline(c, np.array([0]), np.array([3]), np.array([0.5]), fee=0.0, n_draws=100)
    assert out["total_return_mean"] == pytest.approx(0.5 * 0.3) and out["trade_return_p05"] == pytest.approx(0.3)


def test_random_baseline_draws_every_admissible_entry_and_is_seeded():
    c = np.array([[100.0, 200.0, 100.0]])              # hold 1: entry 0 -> +100 %, entry 1 -> -50 %
    a = random_baseline(c, np.array([0]), np.array([1]), np.array([1.0]), fee=0.0, n_draws=400, seed=11)
    b = random_baseline(c, np.array([0]), np.array([1]), np.array([1.0]), fee=0.0, n_draws=400, seed=11)
    d = random_baseline(c, np.array([0]), np.array([1]), np.array([1.0]), fee=0.0, n_draws=400, seed=12)
    assert set(np.round(a["totals"], 12).tolist()) == {1.0, -0.5}
    assert np.array_equal(a["totals"], b["totals"]) and not np.array_equal(a["totals"], d["totals"])
    share = (a["totals"] > 0).mean()
    assert 0.4 < share < 0.6
    assert a["total_return_mean"] == pytest.approx(share * 1.0 + (1 - share) * -0.5)
    assert a["total_return_p05"] == -0.5 and a["total_return_p95"] == 1.0
    with pytest.raises(ValueError, match="at least 100"):
        random_baseline(c, np.array([0]), np.array([1]), np.array([1.0]), fee=0.0, n_draws=50)


def test_percentile_counts_ties_half():
    assert percentile_of(0.5, np.array([0.0, 1.0])) == 50.0
    assert percentile_of(1.0, np.array([0.0, 1.0, 1.0, 2.0])) == 50.0
    assert percentile_of(3.0, np.array([0.0, 1.0])) == 100.0 and percentile_of(-1.0, np.array([0.0])) == 0.0
    assert percentile_of(1.0, np.zeros(0)) is None


def test_trades_map_to_the_bars_whose_close_stamped_them():
    ts = np.array([0, H, 2 * H, 3 * H])
    trades = [SimpleNamespace(symbol="B", entry_ts=H, exit_ts=3 * H, entry_value=250.0, return_=0.1),
              {"symbol": "A", "entry_ts": 2 * H, "exit_ts": 4 * H, "entry_value": 100.0, "return_": -0.2},
              SimpleNamespace(symbol="ZZZ", entry_ts=H, exit_ts=2 * H, entry_value=1.0, return_=0.0),
              SimpleNamespace(symbol="A", entry_ts=H, exit_ts=2 * H, entry_value=0.0, return_=0.0)]
    ta = trade_arrays(trades, ("A", "B"), ts, cash=1000.0, bar_seconds=H)
    assert ta.market.tolist() == [1, 0] and ta.entry_bar.tolist() == [0, 1] and ta.exit_bar.tolist() == [2, 3]
    assert ta.hold_bars.tolist() == [2, 2] and ta.weight.tolist() == [0.25, 0.1]
    assert ta.return_.tolist() == [0.1, -0.2]


def test_evidence_end_to_end_by_hand():
    ts = np.arange(6) * H
    close = np.array([[100.0, 100.0, 100.0, 100.0, 100.0, 100.0],
                      [100.0, 110.0, 121.0, 133.1, 146.41, 161.051]])     # B: +10 % a bar
    trades = [SimpleNamespace(symbol="B", entry_ts=H, exit_ts=3 * H, entry_value=500.0, return_=0.2)]
    scores = np.array([[10.0] * 6, [80.0] * 6])
    enter = np.zeros((2, 6), bool)
    enter[1, 0] = True
    out = evidence(close, ts, ("A", "B"), trades, cash=1000.0, fee=0.0, bar_seconds=H, scores=scores,
                   enter=enter, n_draws=100, seed=1)
    json.dumps(out, allow_nan=False)
    # every 2-bar hold on B earns 1.1^2 - 1 = 21 %, weight 0.5
    base = out["random_baseline"]
    assert base["total_return_mean"] == pytest.approx(0.5 * 0.21) and base["trade_return_mean"] == pytest.approx(0.21)
    assert out["strategy"] == {"trades": 1, "total_return": pytest.approx(0.1), "trade_return_mean": 0.2}
    assert out["excess"]["total_return"] == pytest.approx(0.1 - 0.105)
    assert out["excess"]["trade_return_mean"] == pytest.approx(0.2 - 0.21)
    assert out["excess"]["percentile"] == 0.0
    assert out["buy_and_hold"]["return"] == pytest.approx((1.0 + 1.61051) / 2 - 1)
    assert out["horizon_bars"] == [1, 4]
    cal = out["calibration"]
    assert [r["bucket"] for r in cal["all"]] == ["10-20", "80-90"]
    assert cal["all"][1]["mean_net_60"] == pytest.approx(0.1) and cal["all"][1]["hit_60"] == 1.0
    assert cal["all"][0]["mean_net_60"] == pytest.approx(0.0) and cal["all"][0]["hit_60"] == 0.0
    (row,) = cal["enter"]           # the one ENTER proposal: B at bar 0
    assert row["bucket"] == "80-90" and row["count"] == row["n_60"] == row["n_240"] == 1
    assert row["mean_net_60"] == pytest.approx(0.1) and row["mean_net_240"] == pytest.approx(1.1 ** 4 - 1)


def test_evidence_without_trades_reports_the_baseline_as_empty():
    out = evidence(np.ones((2, 5)), np.arange(5) * 60, ("A", "B"), [], cash=1.0, fee=0.001, bar_seconds=60,
                   n_draws=100)
    assert out["random_baseline"]["trades"] == 0 and out["random_baseline"]["total_return_mean"] is None
    assert out["excess"]["percentile"] is None and out["strategy"]["total_return"] == 0.0
    assert "calibration" not in out
    json.dumps(out, allow_nan=False)


def test_the_gate_reports_the_baseline_percentile_without_changing_its_decision():
    from strategies.engine.learning.gate import evaluate_gate

    rng = np.random.default_rng(5)
    r, mae = rng.normal(0.004, 0.01, 200), -np.abs(rng.normal(0.005, 0.002, 200))
    close = np.vstack([np.linspace(100, 120, 50), np.linspace(50, 45, 50)])
    trades = [SimpleNamespace(symbol="A", entry_ts=60 * k, exit_ts=60 * (k + 5), entry_value=100.0, return_=0.01)
              for k in range(1, 40, 4)]
    pct = evidence(close, np.arange(50) * 60, ("A", "B"), trades, cash=1000.0, fee=0.0005, bar_seconds=60,
                   n_draws=100)["excess"]["percentile"]
    plain = evaluate_gate(r, mae, days=30)
    with_pct = evaluate_gate(r, mae, days=30, baseline_percentile=pct)
    assert with_pct.metrics["baseline_percentile"] == pct and plain.metrics["baseline_percentile"] is None
    assert (with_pct.decision, with_pct.rule) == (plain.decision, plain.rule)
