"""What follows a label (``regime.engine.forward``): known values on constructed paths."""

from __future__ import annotations

import numpy as np
import pytest

from regime.engine.forward import forward_metrics, label_outcomes


def test_straight_line_is_fully_efficient_without_drawdown():
    close = 100.0 * np.exp(0.001 * np.arange(600))[None, :]
    f = forward_metrics(close, 240)
    assert f.efficiency[:360] == pytest.approx(1.0)
    assert f.drawdown[:360] == pytest.approx(0.0, abs=1e-12)
    assert f.vol[:360] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(f.drawdown[360:]).all()          # the window runs past the data


def test_known_drawdown_efficiency_and_volatility():
    # up 10 % over 60 bars, down to 90 % of the peak over 120 bars, flat after
    up = np.linspace(0, np.log(1.1), 61)
    down = np.linspace(np.log(1.1), np.log(1.1 * 0.9), 121)[1:]
    path = np.r_[up, down, np.full(300, down[-1])]
    close = 100 * np.exp(path)[None, :]
    f = forward_metrics(close, 240)
    assert f.drawdown[0] == pytest.approx(10.0, rel=1e-9)
    net = abs(path[240] - path[0])
    moves = np.abs(np.diff(path[0:241:15])).sum()
    assert f.efficiency[0] == pytest.approx(net / moves, rel=1e-9)
    r = np.diff(path[:241])
    assert f.vol[0] == pytest.approx(np.std(r, ddof=1) * 100 * np.sqrt(60), rel=1e-9)


def test_universe_mean_skips_unlisted_markets_and_scales_to_the_bar_length():
    rng = np.random.default_rng(1)
    a = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 500)))
    b = a.copy()
    b[:100] = np.nan                                   # listed at bar 100
    f2 = forward_metrics(np.vstack([a, b]), 60)
    f1 = forward_metrics(a[None, :], 60)
    assert f2.drawdown[:100] == pytest.approx(f1.drawdown[:100])
    five = forward_metrics(a[None, :], 48, bar_minutes=5)     # 4 h of 5 m bars
    assert five.vol[0] == pytest.approx(np.std(np.diff(np.log(a[:49])), ddof=1) * 100 * np.sqrt(12))


def test_label_outcomes_share_and_medians():
    labels = np.array(["PANIC", "RANGE", "RANGE", "TREND"])
    from regime.engine.forward import ForwardMetrics

    f = ForwardMetrics(np.array([4.0, 1.0, 3.0, 2.0]), np.array([0.1, 0.2, 0.4, np.nan]), np.array([5.0, 1.0, 2.0, 1.0]))
    out = label_outcomes(labels, f)
    assert out["RANGE"]["share"] == 0.5 and out["RANGE"]["bars"] == 2
    assert out["RANGE"]["vol_median"] == 2.0 and out["RANGE"]["efficiency_mean"] == pytest.approx(0.3)
    assert out["TREND"]["efficiency_median"] is None
    assert out["CHOP"] == {"bars": 0, "share": 0.0, **{f"{m}_{s}": None for m in ("vol", "efficiency", "drawdown")
                                                        for s in ("median", "mean")}}
