"""The pipeline backtest [BT-1], [BT-2]: the vectorised run equals the bar-by-bar run (the live
scan on every bar's window) on simulated and on real data, and the tick core's pure pieces."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from execution.engine.sim import SimConfig, SimMarket
from execution.engine.types import OrderBook, Side
from regime.engine.features import FeatureConfig
from regime.engine.types import RegimeInputs, RegimeLabel, RegimeState
from risk.engine.guard import SLIPPAGE_ANOMALY, VOLATILITY_SPIKE, GuardState, evaluate
from risk.engine.profiles import CRAZY, STANDARD
from strategies.engine.backtest.pipeline import BacktestConfig, MarketData, make_frame, run_backtest
from strategies.engine.backtest.precompute import ScanPrecompute
from strategies.engine.pipeline import scan
from tests.conftest import require_shared_data
from traders.engine.tick import (
    VOL_BASELINE_MIN_TICKS,
    GuardContext,
    GuardFeedState,
    OrderOutcome,
    exit_followup,
    guard_inputs,
    order_timed_out,
    scan_params,
    slippage_observation,
)

#: the leader history a live frame carries (``BacktestConfig.leader_bars``)
LEADER_BARS = FeatureConfig().leader_bars_needed

ACTIVE = replace(CRAZY, entry_threshold=30.0, exit_threshold=15.0)


def sim_data(n_markets: int, bars: int, seed: int = 11) -> MarketData:
    sim = SimMarket(SimConfig(seed=seed, n_markets=n_markets))
    history = sim.generate(bars)
    return MarketData(history.candles, {m.symbol: m for m in sim.market_info()})


def file_data() -> MarketData:
    from execution.adapters.replay import default_market_info, load_candle_files

    root = require_shared_data("upbit_azuremooni")
    paths = [root / f"upbit_KRW-{c}_1m.csv.gz" for c in ("BTC", "ETH", "XRP")]
    replay = load_candle_files(paths)
    c = replay.candles
    return MarketData(c, {s: default_market_info(s, c) for s in c.symbols})


def assert_same_run(a, b) -> None:
    assert [t.to_dict() for t in a.trades] == [t.to_dict() for t in b.trades]
    assert a.final_equity == b.final_equity
    assert np.array_equal(a.equity, b.equity)
    assert (a.fills, a.entries, a.exits, a.fees_paid) == (b.fills, b.entries, b.exits, b.fees_paid)
    assert a.reason_counts == b.reason_counts and a.regime == b.regime and a.trading_state == b.trading_state


def both_modes(data: MarketData, **kwargs):
    runs = {mode: run_backtest(data, BacktestConfig(profile=ACTIVE, mode=mode, **kwargs)) for mode in ("bar", "vector")}
    return runs["bar"], runs["vector"]


def test_vectorised_run_equals_bar_by_bar_on_the_simulator():
    data = sim_data(8, 1600)
    bar, vector = both_modes(data, block_bars=64)
    assert bar.bars == 601
    assert len(bar.trades) >= 1 and bar.fills >= 2          # it traded, so the equality says something
    assert_same_run(bar, vector)


def test_vectorised_run_equals_bar_by_bar_on_real_files():
    data = file_data()
    ts = data.candles.ts
    gap = int(np.flatnonzero(np.isnan(data.candles.close[0]))[0])   # KRW-BTC misses 2025-09-03T19:25
    # Tick across the bar whose window starts at the gap (that window is filled on its own) and
    # the hours around it.
    start, end = gap + 999 - 600, gap + 999 + 300
    bar, vector = both_modes(data, start_index=start, end_index=end)
    assert bar.bars == end - start and int(ts[start]) < int(ts[gap]) + 999 * 60 < int(ts[end - 1])
    assert bar.fills >= 2
    assert_same_run(bar, vector)


def _same(x, y) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        return (np.isnan(x) and np.isnan(y)) or x == y
    if isinstance(x, np.ndarray):
        return x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
    return x == y


def _assert_scan_parts_equal(data: MarketData, bars: list[int]) -> None:
    params = scan_params(STANDARD)
    pre = ScanPrecompute(data.candles, data.markets, params, window_bars=1000, leader_bars=LEADER_BARS, atr_period=14,
                         tickers=data.tickers, block_bars=16, start=min(bars), end=max(bars) + 1)
    config = BacktestConfig(profile=STANDARD)
    for t in bars:
        frame = make_frame(data, t, config)
        live = scan(frame.candles, books=None, tickers=frame.tickers, params=params, markets=frame.markets,
                    leader_history=frame.leader_history)
        part = pre.at(t)
        assert part.regime.label == live.regime.label
        for name in RegimeInputs.__dataclass_fields__:
            assert _same(getattr(part.regime.inputs, name), getattr(live.regime.inputs, name)), name
        assert part.regime.regime_score == live.regime.regime_score
        for name in ("candidate", "indices", "value_24h", "spread_pct", "depth_value", "atr_pct", "rank"):
            assert _same(getattr(part.screen, name), getattr(live.screen, name)), name
        assert part.screen.flags == live.screen.flags
        for mine, theirs in zip(part.outputs, live.modules, strict=True):
            assert mine.module == theirs.module
            assert _same(mine.score, theirs.score) and _same(mine.direction, theirs.direction), mine.module
            assert mine.reasons == theirs.reasons
            assert mine.raw.keys() == theirs.raw.keys()
            for key in mine.raw:
                assert _same(mine.raw[key], theirs.raw[key]), (mine.module, key)


def test_precomputed_scan_parts_equal_the_live_scan_on_simulated_bars():
    data = sim_data(12, 1300)
    _assert_scan_parts_equal(data, list(range(999, 1300, 7)))


def test_precomputed_scan_parts_equal_the_live_scan_around_a_gap_in_real_data():
    data = file_data()
    gap = int(np.flatnonzero(np.isnan(data.candles.close[0]))[0])
    bars = [gap + 999 + k for k in (-3, -1, 0, 1, 2, 5)]
    pre = ScanPrecompute(data.candles, data.markets, scan_params(STANDARD), window_bars=1000, leader_bars=LEADER_BARS,
                         atr_period=14, tickers=data.tickers, start=bars[0], end=bars[-1] + 1)
    assert not pre.clean[gap + 999] and pre.clean[gap + 998]     # both paths are exercised
    _assert_scan_parts_equal(data, bars)


# --------------------------------------------------------------------------- core pieces


def test_order_timeout_is_at_least_one_bar():
    profile = replace(STANDARD, order_timeout_seconds=30)
    assert not order_timed_out(1000, 1059, profile)
    assert order_timed_out(1000, 1060, profile)
    assert not order_timed_out(None, 1060, profile)
    assert order_timed_out(1000, 1300, replace(STANDARD, order_timeout_seconds=300))


def test_exit_followup_dust_retry_or_done():
    assert exit_followup(OrderOutcome("rejected", error="below_min_notional"), Decimal("1")) == "DUST"
    assert exit_followup(OrderOutcome("expired", Decimal("1"), error="book_exhausted"), Decimal("0.5")) == "RETRY"
    assert exit_followup(OrderOutcome("filled", Decimal("1")), Decimal("0")) == ""
    assert exit_followup(OrderOutcome("rejected", error="no_liquidity"), Decimal("1")) == "RETRY"


def _scan_with_atr(atr_pct: float):
    regime = RegimeState(RegimeLabel.TREND, 60.0, 0.8, RegimeInputs(30.0, atr_pct, 0.6, 0.01, 0.5, 0.3))

    class S:
        pass
    s = S()
    s.regime = regime
    return s


class _Market:
    data_ts = 1_000_060

    @staticmethod
    def last_price(symbol: str) -> float:
        return 100.0


def _ctx() -> GuardContext:
    e = Decimal("1000000")
    return GuardContext(e, e, e, 0, False, False, GuardState())


def test_volatility_spike_is_fed_once_the_baseline_has_settled():
    feed = GuardFeedState()
    for _ in range(VOL_BASELINE_MIN_TICKS - 1):
        feed = feed.with_atr(0.5, STANDARD)
    inputs = guard_inputs(now_ts=1_000_060, equity=Decimal("1000000"), ctx=_ctx(), scan=_scan_with_atr(2.0),
                          feed=feed, market=_Market(), held={}, api=None)
    assert inputs.atr_pct is None                       # not settled yet: not judged
    feed = feed.with_atr(0.5, STANDARD)
    inputs = guard_inputs(now_ts=1_000_060, equity=Decimal("1000000"), ctx=_ctx(), scan=_scan_with_atr(2.0),
                          feed=feed, market=_Market(), held={}, api=None)
    assert inputs.atr_pct == 2.0 and inputs.atr_pct_baseline == pytest.approx(0.5)
    decision = evaluate(inputs, STANDARD, GuardState())
    assert VOLATILITY_SPIKE in decision.codes          # 4x the baseline, limit 2.5x
    assert inputs.leverage == 0.0 and inputs.exchange_ok and inputs.model_disagreement is None


def test_slippage_anomaly_from_realised_versus_book_walk():
    book = OrderBook("X", 0, np.array([[99.0, 1.0], [98.0, 10.0]]), np.array([[101.0, 1.0], [102.0, 10.0]]))
    # Sold 2 units: the book walk expects avg 98.5 (0.505 % below the touch); the venue gave 95.
    obs = slippage_observation(book, Side.SELL, OrderOutcome("filled", Decimal("2"), Decimal("95")))
    assert obs[0] == pytest.approx(0.5 / 99) and obs[1] == pytest.approx(4 / 99)
    feed = GuardFeedState()
    for _ in range(3):
        feed = feed.with_slippage(*obs)
    inputs = guard_inputs(now_ts=1_000_060, equity=Decimal("1000000"), ctx=_ctx(), scan=_scan_with_atr(1.0),
                          feed=feed, market=_Market(), held={}, api=None)
    assert SLIPPAGE_ANOMALY in evaluate(inputs, STANDARD, GuardState()).codes
    assert GuardFeedState.from_dict(feed.to_dict()) == feed


def test_stale_market_data_is_an_exchange_outage_for_the_guard():
    class Stale(_Market):
        data_ts = 1_000_060 - 600

    inputs = guard_inputs(now_ts=1_000_060, equity=Decimal("1000000"), ctx=_ctx(), scan=_scan_with_atr(1.0),
                          feed=GuardFeedState(), market=Stale(), held={}, api=(50, 20))
    assert not inputs.exchange_ok and inputs.api_error_rate == 0.4 and inputs.api_calls == 50


def test_monte_carlo_ranks_by_edge_and_refuses_no_edge():
    from execution.engine.types import MarketInfo
    from strategies.engine.types import MarketSignal
    from traders.engine.tick import Derived, _mc_rank

    rng = np.random.default_rng(1)
    n = 199
    returns = np.vstack([rng.normal(0.002, 0.003, n), rng.normal(-0.002, 0.003, n), rng.normal(0.004, 0.003, n),
                         np.full(n, np.nan)])
    symbols = ("A", "B", "C", "D")
    sigs = [MarketSignal(s, 0, {}, 80.0, 80.0, 80.0, 1, ()) for s in symbols]

    class M:
        markets = {s: MarketInfo(s, s, "KRW") for s in symbols}

        class candles:
            @staticmethod
            def index(s):
                return symbols.index(s)

        @staticmethod
        def last_price(s):
            return 100.0

    profile = replace(STANDARD, use_monte_carlo=True, mc_paths=300, mc_horizon_bars=48)
    order, mc = _mc_rank(sigs, profile, M(), Derived(np.full(4, 1.0), returns), seed=9, bar_ts=600)
    assert [s.symbol for s in order][:2] == ["C", "A"]           # best EV per hour first
    assert mc["B"][0].code == "MC_NO_EDGE" and not mc["B"][0].passed
    assert mc["D"][0].code == "MC_NO_DATA" and mc["D"][1] is None
    assert mc["C"][0].passed and mc["C"][1].trade_stats().n_trades == 300
    again, mc2 = _mc_rank(sigs, profile, M(), Derived(np.full(4, 1.0), returns), seed=9, bar_ts=600)
    assert [s.symbol for s in again] == [s.symbol for s in order]
    assert mc2["A"][1].ev_per_hour == mc["A"][1].ev_per_hour      # reproducible per (seed, bar, market)


def test_monte_carlo_profile_runs_reproducibly_in_a_backtest():
    data = sim_data(8, 1400, seed=5)
    profile = replace(ACTIVE, use_monte_carlo=True, mc_paths=200, mc_horizon_bars=24)
    runs = [run_backtest(data, BacktestConfig(profile=profile, seed=3)) for _ in range(2)]
    assert_same_run(runs[0], runs[1])
    assert any(code.startswith("MC_") for code in runs[0].reason_counts) or runs[0].entries > 0


def test_precompute_workers_give_the_same_run():
    data = sim_data(6, 1400, seed=2)
    one = run_backtest(data, BacktestConfig(profile=ACTIVE, block_bars=32))
    two = run_backtest(data, BacktestConfig(profile=ACTIVE, block_bars=32, workers=2))
    assert_same_run(one, two)


def test_config_and_range_are_checked():
    data = sim_data(3, 1100)
    with pytest.raises(ValueError, match="mode"):
        BacktestConfig(profile=STANDARD, mode="fast")
    with pytest.raises(ValueError, match="window_bars"):
        run_backtest(data, BacktestConfig(profile=STANDARD, window_bars=100))
    with pytest.raises(ValueError, match="nothing to tick"):
        run_backtest(data, BacktestConfig(profile=STANDARD, start_index=1099, end_index=1099))
    with pytest.raises(ValueError, match="history"):
        run_backtest(data, BacktestConfig(profile=STANDARD, start_index=10))


def test_costs_fees_spread_and_depth_reach_the_books():
    """[BT-2]: every fill pays the market's fee; a buy at the ask and a sale at the bid pay the
    spread; fills never beat the touch of the synthetic book."""
    data = sim_data(8, 1600)
    result = run_backtest(data, BacktestConfig(profile=ACTIVE))
    closed = [t for t in result.trades if not t.is_open]
    assert closed and result.fees_paid > 0
    fee_rate = float(data.markets[closed[0].symbol].taker_fee)
    for t in closed:
        assert float(t.fees) >= fee_rate * (t.entry_value + t.exit_value) * (1 - 1e-9)
    gross = sum(float(t.pnl) + float(t.fees) for t in result.trades if not t.is_open)
    net = sum(float(t.pnl) for t in result.trades if not t.is_open)
    assert net < gross
    # equity bookkeeping: initial cash + every trade's pnl = final equity
    total = float(result.initial_cash) + sum(float(t.pnl) for t in result.trades)
    assert total == pytest.approx(float(result.final_equity), rel=1e-9)


def test_latency_and_partial_fills_run_through_the_fill_model():
    """With latency an order meets the next bar's book; with a small participation a resting
    entry fills in parts. Both modes still agree and the books still add up."""
    from execution.engine.fillmodel import FillConfig

    data = sim_data(8, 1600)
    fill = FillConfig(latency_ms=1000, participation=0.01)
    bar, vector = both_modes(data, fill=fill)
    assert_same_run(bar, vector)
    base = run_backtest(data, BacktestConfig(profile=ACTIVE))
    assert [t.to_dict() for t in base.trades] != [t.to_dict() for t in vector.trades]
    total = float(vector.initial_cash) + sum(float(t.pnl) for t in vector.trades)
    assert total == pytest.approx(float(vector.final_equity), rel=1e-9)


def test_the_profiles_execution_policy_runs_as_in_the_paper_broker():
    """[EXE-1] legs inside the touch, re-price then market fallback: successors and legs are
    orders of their own; both modes agree and the books add up."""
    data = sim_data(8, 1600)
    profile = replace(ACTIVE, split_legs=2, leg_spacing_bps=10.0, limit_offset_bps=20.0, max_replaces=1,
                      allow_market_fallback=True)
    runs = {mode: run_backtest(data, BacktestConfig(profile=profile, mode=mode)) for mode in ("bar", "vector")}
    assert_same_run(runs["bar"], runs["vector"])
    r = runs["vector"]
    assert r.entries >= 1 and r.orders > r.entries + r.exits           # legs and successors
    off = run_backtest(data, BacktestConfig(profile=profile, execution_policy=False))
    assert [t.to_dict() for t in off.trades] != [t.to_dict() for t in r.trades]
    total = float(r.initial_cash) + sum(float(t.pnl) for t in r.trades)
    assert total == pytest.approx(float(r.final_equity), rel=1e-9)
