"""Regime inputs [RG-1]: known values on constructed markets, per-bar == whole-history."""

from __future__ import annotations

import numpy as np
import pytest

from execution.engine.types import Candles, MarketDataError
from regime.engine.features import (
    INPUT_NAMES,
    FeatureConfig,
    compute_input_series,
    compute_inputs,
    filled_bars,
    resample_end_aligned,
)
from tests.engine.test_strat_support import random_walk_candles


def _candles(close: np.ndarray, volume: np.ndarray | None = None) -> Candles:
    c = np.asarray(close, dtype=float)
    o = np.concatenate([c[:, :1], c[:, :-1]], axis=1)
    v = np.ones_like(c) if volume is None else volume
    ts = 60 * np.arange(c.shape[1], dtype=np.int64)
    return Candles(tuple(f"M{i}" for i in range(len(c))), "1m", ts, o, np.fmax(o, c), np.fmin(o, c), c, v)


def test_breadth_dispersion_and_value_share_known_values():
    n = 121
    ups = [1.01, 1.02, 0.99, 1.0, 1.03, 0.98]        # 1 h returns: +1%, +2%, -1%, 0, +3%, -2%
    close = np.vstack([np.r_[np.full(n - 61, 100.0), np.linspace(100, 100 * u, 61)] for u in ups])
    vol = np.vstack([np.full(n, float(k + 1)) for k in range(6)])
    x = compute_inputs(_candles(close, vol))
    assert x.breadth_up_1h == pytest.approx(3 / 6)
    assert x.dispersion_1h == pytest.approx(np.std(np.array(ups) - 1.0), rel=1e-12)
    value = np.array([(close[i, -60:] * vol[i, -60:]).sum() for i in range(6)])
    assert x.top5_value_share_1h == pytest.approx(np.sort(value)[-5:].sum() / value.sum(), rel=1e-12)


def test_whipsaw_straight_line_is_zero_and_zigzag_is_one():
    t = np.arange(200, dtype=float)
    line = 100 + 0.01 * t
    zig = 100 + np.where((t // 5) % 2 == 0, 0.0, 1.0)   # every 5 m bar reverses, goes nowhere
    zig[-1] = zig[-61]
    assert compute_inputs(_candles(np.vstack([line, line]))).whipsaw_5m == pytest.approx(0.0)
    assert compute_inputs(_candles(np.vstack([zig, line]))).whipsaw_5m == pytest.approx(1.0)


def test_leader_adx_high_in_a_clean_trend_and_low_in_a_flat_market():
    cfg = FeatureConfig()
    n = cfg.leader_bars_needed
    rng = np.random.default_rng(0)
    trend = 100 * np.exp(np.cumsum(np.full(n, 2e-4) + rng.normal(0, 2e-4, n)))
    flat = 100 * np.exp(rng.normal(0, 1e-3, n))
    x_t = compute_inputs(_candles(np.vstack([trend, flat])))
    x_f = compute_inputs(_candles(np.vstack([flat, trend])))
    assert x_t.btc_adx_4h > 60
    assert x_f.btc_adx_4h < 25
    assert 0 < x_t.btc_atr_pct_4h < 2


def test_resample_end_aligned_buckets():
    c = _candles(np.arange(1.0, 12.0)[None, :], np.ones((1, 11)))
    b = resample_end_aligned(filled_bars(c)[0], 5)
    assert b.close.tolist() == [[6.0, 11.0]]              # buckets 2-6 and 7-11, the oldest minute dropped
    assert b.open.tolist() == [[1.0, 6.0]]                # open = previous close (builder) of minute 2 / 7
    assert b.high.tolist() == [[6.0, 11.0]]
    assert b.volume.tolist() == [[5.0, 5.0]]


def test_per_bar_equals_series_at_every_checked_bar_with_gaps_and_late_listing():
    c = random_walk_candles(8, 3000, seed=5)
    close = c.close.copy()
    close[3, 1000] = np.nan                               # a missing bar
    close[5, :400] = np.nan                               # listed later
    c = Candles(c.symbols, "1m", c.ts, np.where(np.isnan(close), np.nan, c.open), c.high, c.low, close, c.volume)
    s = compute_input_series(c)
    for t in (60, 61, 399, 400, 1000, 1484, 1500, 2222, 2999):
        head = Candles(c.symbols, "1m", c.ts[:t + 1], c.open[:, :t + 1], c.high[:, :t + 1], c.low[:, :t + 1],
                       c.close[:, :t + 1], c.volume[:, :t + 1])
        one = compute_inputs(head)
        for name in INPUT_NAMES:
            a, b = getattr(one, name), getattr(s, name)[t]
            assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), (t, name)


def test_leader_history_is_used_and_must_end_at_the_same_bar():
    c = random_walk_candles(4, 2000, seed=2)
    lead = c.select(("M000",))
    full = compute_inputs(c)
    short = c.tail(200)
    with_hist = compute_inputs(short, leader_history=lead)
    assert with_hist.btc_adx_4h == pytest.approx(full.btc_adx_4h, rel=1e-12)
    assert np.isnan(compute_inputs(short).btc_adx_4h)
    with pytest.raises(MarketDataError, match="same bar"):
        compute_inputs(short, leader_history=Candles(lead.symbols, "1m", lead.ts[:-1], lead.open[:, :-1], lead.high[:, :-1],
                                                     lead.low[:, :-1], lead.close[:, :-1], lead.volume[:, :-1]))


def test_rejects_wrong_timeframe_and_unknown_leader():
    c = random_walk_candles(3, 100)
    with pytest.raises(MarketDataError):
        compute_inputs(c, leader="NOPE")
    c5 = Candles(c.symbols, "5m", c.ts * 5, c.open, c.high, c.low, c.close, c.volume)
    with pytest.raises(MarketDataError):
        compute_input_series(c5)


# --------------------------------------------------------------------------- relative ATR


def _vol_candles(sigmas: np.ndarray, seed: int = 0, markets: int = 3) -> Candles:
    """Random walks whose 1-minute volatility follows ``sigmas`` (one per bar)."""
    rng = np.random.default_rng(seed)
    n = len(sigmas)
    r = rng.normal(0.0, 1.0, (markets, n)) * sigmas[None, :]
    close = 100.0 * np.exp(np.cumsum(r, axis=1))
    o = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    wick = np.abs(rng.normal(0.0, 1.0, (markets, n))) * sigmas[None, :] * 100.0
    ts = 60 * np.arange(n, dtype=np.int64)
    return Candles(tuple(f"M{i}" for i in range(markets)), "1m", ts, o, np.fmax(o, close) + wick,
                   np.fmin(o, close) - wick, close, np.ones_like(close))


def test_relative_atr_is_one_at_steady_volatility_and_tracks_a_jump():
    cfg = FeatureConfig()
    n = cfg.leader_bars_needed
    steady = compute_inputs(_vol_candles(np.full(n, 1e-3)))
    assert steady.btc_atr_rel == pytest.approx(1.0, abs=0.15)
    jump = np.r_[np.full(n, 1e-3), np.full(240, 3e-3)]           # the last 4 hours three times as volatile
    x = compute_inputs(_vol_candles(jump))
    assert 2.2 < x.btc_atr_rel < 3.5
    # scale-free: the same path at a tenth of the volatility gives the same ratio
    assert compute_inputs(_vol_candles(jump / 10)).btc_atr_rel == pytest.approx(x.btc_atr_rel, rel=0.02)


def test_relative_atr_needs_half_a_baseline():
    cfg = FeatureConfig()
    need = (cfg.atr_period + cfg.baseline_min_values) * cfg.leader_tf     # first ATR + half the baseline
    assert np.isnan(compute_inputs(_vol_candles(np.full(need - 2 * cfg.leader_tf, 1e-3))).btc_atr_rel)
    assert np.isfinite(compute_inputs(_vol_candles(np.full(need + cfg.leader_tf, 1e-3))).btc_atr_rel)
    assert cfg.leader_bars_needed == 2160       # 36 h: settled ATR (48 x 15 m) + 24 h of baseline


def test_relative_atr_per_bar_equals_series_with_a_regime_change():
    sig = np.r_[np.full(2000, 1e-3), np.full(600, 4e-3), np.full(900, 5e-4)]
    c = _vol_candles(sig, seed=3, markets=4)
    s = compute_input_series(c)
    for t in (900, 1500, 2100, 2599, 2600, 3000, 3499):
        one = compute_inputs(Candles(c.symbols, "1m", c.ts[:t + 1], c.open[:, :t + 1], c.high[:, :t + 1],
                                     c.low[:, :t + 1], c.close[:, :t + 1], c.volume[:, :t + 1]))
        a, b = one.btc_atr_rel, s.btc_atr_rel[t]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9), t


def test_batched_leader_stats_equal_compute_inputs():
    """The backtest precompute's batched leader statistics (``leader_stats`` on stacked leader
    histories) give what ``compute_inputs`` gives with each history as ``leader_history``."""
    from regime.engine.features import leader_stats

    cfg = FeatureConfig()
    c = _vol_candles(np.r_[np.full(2400, 1e-3), np.full(400, 3e-3)], seed=4, markets=2)
    ends = (2300, 2500, 2799)
    h = c.select(("M0",))
    rows = []
    for t in ends:
        lo = t + 1 - cfg.leader_bars_needed
        rows.append(Candles(h.symbols, "1m", h.ts[lo:t + 1], h.open[:, lo:t + 1], h.high[:, lo:t + 1],
                            h.low[:, lo:t + 1], h.close[:, lo:t + 1], h.volume[:, lo:t + 1]))
    stacked = Candles(tuple(f"L{k}" for k in range(len(rows))), "1m", rows[0].ts,
                      *(np.concatenate([getattr(r, n) for r in rows]) for n in ("open", "high", "low", "close", "volume")))
    adx, pct, rel = leader_stats(resample_end_aligned(filled_bars(stacked)[0], cfg.leader_tf), cfg)
    for k, (t, row) in enumerate(zip(ends, rows, strict=True)):
        window = Candles(c.symbols, "1m", c.ts[t - 99:t + 1], c.open[:, t - 99:t + 1], c.high[:, t - 99:t + 1],
                         c.low[:, t - 99:t + 1], c.close[:, t - 99:t + 1], c.volume[:, t - 99:t + 1])
        one = compute_inputs(window, leader_history=row)
        assert (adx[k], pct[k], rel[k]) == pytest.approx((one.btc_adx_4h, one.btc_atr_pct_4h, one.btc_atr_rel), rel=1e-12)
