"""The simulator [EX-2]: determinism, resumability, OHLC integrity, tick grid, regime signatures."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest

from execution.engine.precision import KRW_TICKS_2025_FROM_TS, krw_tick_size
from execution.engine.sim import REGIME_PARAMS, REGIMES, SimConfig, SimMarket
from regime.engine.types import RegimeLabel

FIELDS = ("open", "high", "low", "close", "volume")


def _arrays(hist):
    return [hist.candles.ts] + [getattr(hist.candles, f) for f in FIELDS]


@pytest.fixture(scope="module")
def long_history():
    """60 days of 1m bars for 30 markets (seed 7), shared by the signature tests."""
    return SimMarket(SimConfig(seed=7)).generate(60 * 24 * 60)


def test_regime_labels_are_the_regime_engine_labels():
    assert set(REGIMES) == {label.value for label in RegimeLabel}


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    a = SimMarket(SimConfig(seed=3)).generate(500)
    b = SimMarket(SimConfig(seed=3)).generate(500)
    c = SimMarket(SimConfig(seed=4)).generate(500)
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.true_regime, b.true_regime)
    assert not np.array_equal(a.candles.close, c.candles.close)


def test_generate_equals_successive_steps():
    block = SimMarket(SimConfig(seed=11, n_markets=12))
    stepped = SimMarket(SimConfig(seed=11, n_markets=12))
    hist = block.generate(700)
    steps = [stepped.step() for _ in range(700)]
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(hist.candles, f),
                                      np.hstack([getattr(s.candles, f) for s in steps]))
    np.testing.assert_array_equal(hist.candles.ts, np.concatenate([s.candles.ts for s in steps]))
    np.testing.assert_array_equal(hist.true_regime, np.concatenate([s.true_regime for s in steps]))
    assert block.get_state() == stepped.get_state()


def test_state_is_json_safe_and_resumes_exactly():
    market = SimMarket(SimConfig(seed=5, n_markets=8))
    market.generate(333)
    restored = SimMarket.from_state(json.loads(json.dumps(market.get_state())))
    for x, y in zip(_arrays(market.generate(400)), _arrays(restored.generate(400)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert market.order_book("KRW-ETH").bids.tolist() == restored.order_book("KRW-ETH").bids.tolist()


def test_ohlc_is_consistent_positive_and_on_the_bar_grid(long_history):
    c = long_history.candles
    assert np.all(c.high >= np.maximum(c.open, c.close))
    assert np.all(c.low <= np.minimum(c.open, c.close))
    assert np.all(c.low > 0) and np.all(c.volume > 0)
    assert np.all(np.diff(c.ts) == 60) and c.ts[0] == SimConfig().start_ts
    np.testing.assert_array_equal(c.open[:, 1:], c.close[:, :-1])


def test_prices_sit_on_the_upbit_krw_tick_grid(long_history):
    c = long_history.candles
    rng = np.random.default_rng(0)
    for _ in range(400):
        i, t = int(rng.integers(c.n_markets)), int(rng.integers(c.n_bars))
        for arr in (c.open, c.high, c.low, c.close):
            price = Decimal(repr(float(arr[i, t])))
            assert price % krw_tick_size(price, int(c.ts[t])) == 0, (c.symbols[i], price)


def test_tick_grid_follows_the_2025_table_change():
    start = KRW_TICKS_2025_FROM_TS - 30 * 60
    hist = SimMarket(SimConfig(seed=2, n_markets=40, start_ts=start)).generate(60)
    c = hist.candles
    for t in range(c.n_bars):
        for i in range(c.n_markets):
            price = Decimal(repr(float(c.close[i, t])))
            assert price % krw_tick_size(price, int(c.ts[t])) == 0


def test_symbols_leader_first_real_codes_then_synthetic():
    market = SimMarket(SimConfig(n_markets=50))
    assert market.symbols[:3] == ("KRW-BTC", "KRW-ETH", "KRW-XRP")
    assert market.symbols[-1] == "KRW-S050"
    assert len(set(market.symbols)) == 50


def test_all_regimes_occur_with_realistic_episode_lengths(long_history):
    reg = long_history.true_regime
    assert set(np.unique(reg)) == set(REGIMES)
    change = np.flatnonzero(reg[1:] != reg[:-1]) + 1
    bounds = np.r_[0, change, len(reg)]
    for s, e in zip(bounds[1:-1], bounds[2:], strict=False):     # complete episodes only
        label = reg[s]
        assert e - s >= round(REGIME_PARAMS[REGIMES.index(label)].min_minutes), (label, e - s)
    assert np.all(reg[change] != reg[change - 1])


def _signatures(hist):
    c, reg = hist.candles, hist.true_regime
    lc = np.log(c.close)
    r1h = lc[:, 60:] - lc[:, :-60]
    breadth = (r1h[1:] > 0).mean(axis=0)
    dispersion = r1h.std(axis=0)
    value = np.cumsum(c.close * c.volume, axis=1)
    v1h = value[:, 60:] - value[:, :-60]
    top5 = np.sort(v1h, axis=0)[-5:].sum(axis=0) / v1h.sum(axis=0)
    lead5 = np.log(c.close[0, 4::5])
    moves = np.diff(lead5)
    net = np.abs(np.convolve(moves, np.ones(12), "valid"))
    path = np.convolve(np.abs(moves), np.ones(12), "valid")
    efficiency = net / path                                   # 1h window on 5m bars
    age = np.zeros(len(reg), dtype=int)
    for t in range(1, len(reg)):
        age[t] = age[t - 1] + 1 if reg[t] == reg[t - 1] else 0
    out = {}
    for label in REGIMES:
        in_1h = ((reg == label) & (age >= 60))[60:]
        # efficiency window k ends at 1m bar 5 * (k + 13) - 1
        ends = 5 * (np.arange(len(efficiency)) + 13) - 1
        in_5m = (reg[ends] == label) & (age[ends] >= 60)
        out[label] = {"breadth_dev": float(np.abs(breadth[in_1h] - 0.5).mean()), "breadth": float(breadth[in_1h].mean()),
                      "dispersion": float(dispersion[in_1h].mean()), "top5": float(top5[in_1h].mean()),
                      "efficiency": float(efficiency[in_5m].mean()),
                      "range_1h": float(np.abs(r1h[0][in_1h]).mean())}
    return out


def test_regime_signatures_are_distinguishable(long_history):
    s = _signatures(long_history)
    # PANIC: breadth collapses, the leader falls fast
    assert s["PANIC"]["breadth"] < 0.05
    assert s["PANIC"]["range_1h"] > 2 * s["TREND"]["range_1h"]
    # BREAKOUT_ROTATION: dispersion and value concentration in the top markets
    assert s["BREAKOUT_ROTATION"]["dispersion"] > 2 * max(s[k]["dispersion"] for k in ("TREND", "RANGE", "CHOP"))
    assert s["BREAKOUT_ROTATION"]["top5"] > s["RANGE"]["top5"] + 0.04
    # CHOP whipsaws (low efficiency), TREND is efficient and one-sided
    assert s["CHOP"]["efficiency"] < 0.2 < s["RANGE"]["efficiency"] < s["TREND"]["efficiency"]
    assert s["TREND"]["efficiency"] > 0.45
    assert s["TREND"]["breadth_dev"] > s["RANGE"]["breadth_dev"] + 0.1


def test_fat_tails_and_volatility_clustering(long_history):
    r = np.diff(np.log(long_history.candles.close[0]))
    z = (r - r.mean()) / r.std()
    assert float(np.mean(z**4)) > 5.0                      # normal = 3
    a = np.abs(r) - np.abs(r).mean()
    assert float((a[1:] * a[:-1]).mean() / (a * a).mean()) > 0.15


def test_markets_follow_the_leader_and_value_is_concentrated(long_history):
    c = long_history.candles
    r = np.diff(np.log(c.close[:, ::60]), axis=1)          # hourly returns
    corr = np.corrcoef(r)[0, 1:]
    assert float(corr.mean()) > 0.4
    value = (c.close * c.volume).sum(axis=1)
    share = np.sort(value)[-5:].sum() / value.sum()
    assert 0.45 < share < 0.9
    assert value.argmax() in (0, 1)


def test_order_book_is_on_the_grid_and_scales_with_liquidity():
    market = SimMarket(SimConfig(seed=9))
    market.generate(120)
    for sym in ("KRW-BTC", "KRW-XRP", "KRW-SHIB", market.symbols[-1]):
        book = market.order_book(sym, depth=15)
        assert book.ts == market.now and len(book.bids) == 15 and len(book.asks) == 15
        assert book.best_bid < book.best_ask
        assert np.all(np.diff(book.bids[:, 0]) < 0) and np.all(np.diff(book.asks[:, 0]) > 0)
        for price in np.concatenate([book.bids[:, 0], book.asks[:, 0]]):
            p = Decimal(repr(float(price)))
            assert p % krw_tick_size(p, book.ts) == 0
    assert market.order_book("KRW-BTC").depth_value() > 10 * market.order_book(market.symbols[-1]).depth_value()
    assert market.order_book(0).bids.tolist() == market.order_book(0).bids.tolist()   # no RNG consumed


def test_tickers_report_24h_value_and_change():
    market = SimMarket(SimConfig(seed=1, n_markets=5))
    hist = market.generate(1500)
    tickers = market.tickers()
    c = hist.candles
    assert [t.symbol for t in tickers] == list(market.symbols)
    btc = tickers[0]
    assert btc.last == c.close[0, -1] and btc.bid < btc.ask
    last_day = float((c.close[0, -1440:] * c.volume[0, -1440:]).sum())
    assert 0.9 * last_day < btc.value_24h < 1.1 * last_day


@pytest.mark.parametrize("kwargs", [{"n_markets": 0}, {"bar_seconds": 7}, {"tail_dof": 2.0},
                                    {"garch_alpha": 0.5, "garch_beta": 0.5}, {"initial_regime": "MOON"}])
def test_invalid_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SimConfig(**kwargs)


def test_chunked_generation_equals_one_block_across_regime_changes():
    """Episodes that start inside a block begin from the leader's price at that bar, not the
    price when the block began (the reverting regimes' centre), so any chunking gives the same bars."""
    cfg = SimConfig(seed=3, n_markets=6)
    block = SimMarket(cfg).generate(6000)
    starts = np.flatnonzero(block.true_regime[1:] != block.true_regime[:-1]) + 1
    assert {"RANGE", "CHOP"} <= set(block.true_regime[starts])        # reverting episodes begin mid-block
    chunked = SimMarket(cfg)
    sizes = np.random.default_rng(0).integers(1, 400, size=60)
    parts, done = [], 0
    for k in sizes:
        k = int(min(k, 6000 - done))
        if k:
            parts.append(chunked.generate(k))
            done += k
    if done < 6000:
        parts.append(chunked.generate(6000 - done))
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(block.candles, f), np.hstack([getattr(p.candles, f) for p in parts]))


def _lag1_autocorrelation(r: np.ndarray, keep: np.ndarray) -> float:
    a, b = r[1:][keep], r[:-1][keep]
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))


def _episode_variance_ratio(x: np.ndarray, reg: np.ndarray, label: str, q: int) -> float:
    """Var(q-bar returns) / (q * Var(1-bar returns)), both taken inside episodes of ``label``."""
    r1, rq = [], []
    change = np.flatnonzero(reg[1:] != reg[:-1]) + 1
    bounds = np.r_[0, change, len(reg)]
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        if reg[s] != label or e - s <= 2 * q:
            continue
        seg = x[s:e]
        r1.append(np.diff(seg))
        rq.append(seg[q::q] - seg[:-q:q])
    r1, rq = np.concatenate(r1), np.concatenate(rq)
    return float(rq.var() / (q * r1.var()))


def test_one_minute_returns_have_no_persistence_in_any_regime(long_history):
    """Real 1m crypto returns have lag-1 autocorrelation near 0 (slightly negative from price
    discreteness). RANGE and CHOP revert in price level, which must not show up as persistent
    1m returns (the earlier square-wave anchor gave +0.37 to +0.79 here)."""
    c, reg = long_history.candles, long_history.true_regime
    r = np.diff(np.log(c.close), axis=1)
    same = (reg[2:] == reg[1:-1])
    for label in REGIMES:
        keep = same & (reg[2:] == label)
        lead = _lag1_autocorrelation(r[0], keep)
        assert abs(lead) < 0.1, (label, lead)
        if label in ("RANGE", "CHOP"):
            per_market = [_lag1_autocorrelation(r[i], keep) for i in range(c.n_markets)]
            assert -0.1 < float(np.median(per_market)) < 0.05, (label, per_market)
            assert max(per_market) < 0.1, (label, per_market)


def test_range_and_chop_revert_in_level_and_trend_persists(long_history):
    x, reg = np.log(long_history.candles.close[0]), long_history.true_regime
    vr = {label: _episode_variance_ratio(x, reg, label, 30) for label in ("TREND", "RANGE", "CHOP")}
    assert vr["CHOP"] < 0.5 < vr["RANGE"] < 0.9 < vr["TREND"], vr


def _as_version_1(state):
    """The shape ``get_state`` had before the OU level model (square-wave anchor)."""
    old = json.loads(json.dumps(state))
    reg = old["regime"]
    reg["anchor"] = reg.pop("centre")
    reg.pop("half_life")
    reg["swing_half"], reg["swing_phase"] = 7, 3
    old["rng"].pop("centre")
    old["version"] = 1
    return old


def test_a_version_1_state_still_loads_and_continues_deterministically():
    market = SimMarket(SimConfig(seed=5, n_markets=6))
    market.generate(200)
    v1 = _as_version_1(market.get_state())
    a, b = SimMarket.from_state(v1), SimMarket.from_state(json.loads(json.dumps(v1)))
    for x, y in zip(_arrays(a.generate(300)), _arrays(b.generate(300)), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.get_state()["version"] == 2
    with pytest.raises(ValueError, match="version"):
        SimMarket.from_state({**market.get_state(), "version": 99})
    broken = market.get_state()
    broken["rng"].pop("centre")
    with pytest.raises(ValueError, match="rng"):
        SimMarket.from_state(broken)
