"""Position sizing [RK-1]: the formula, each cap, rounding, and the invariant that no size ever
breaks a limit."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from execution.engine.types import MarketInfo, OrderBook
from risk.engine.montecarlo import TradeStats, kelly_with_cvar
from risk.engine.profiles import SAFETY_FIRST, STANDARD
from risk.engine.sizing import (
    BELOW_MIN_ORDER,
    CAP_CASH,
    CAP_KELLY,
    CAP_LIQUIDITY,
    CAP_MAX_POSITION,
    CAP_PORTFOLIO_RISK,
    CAP_SLIPPAGE,
    DRAWDOWN_LIMIT,
    DRAWDOWN_SCALE,
    INVALID_INPUT,
    KELLY_NO_EDGE,
    NO_ORDER_BOOK,
    SIZE_RISK,
    drawdown_scale,
    max_qty_within_slippage,
    size_position,
    slippage_of,
    walk_book,
)
from strategies.engine.types import Direction

KRW_BTC = MarketInfo("KRW-BTC", "BTC", "KRW", min_notional=Decimal("5000"))


def deep_book(mid: float = 100_000_000.0, step: float = 10_000.0, qty: float = 0.5, levels: int = 10) -> OrderBook:
    asks = np.array([[mid + step * (i + 1), qty] for i in range(levels)])
    bids = np.array([[mid - step * (i + 1), qty] for i in range(levels)])
    return OrderBook("KRW-BTC", 0, bids, asks)


def size(**overrides):
    args = dict(profile=STANDARD, equity=10_000_000.0, cash_available=10_000_000.0, entry_price=100_000_000.0,
                atr=1_000_000.0, direction=Direction.LONG, market=KRW_BTC, book=deep_book(),
                remaining_risk_budget=500_000.0, drawdown=0.0)
    args.update(overrides)
    return size_position(**args)


def test_risk_based_size_with_atr_stop_and_fees():
    r = size()
    # stop 100M - 2 x 1M; loss per unit at the stop = 2M + 0.0005 x (100M + 98M) = 2.099M
    assert r.stop_price == Decimal("98000000")
    assert r.risk_per_unit == pytest.approx(2_099_000.0)
    assert r.dollar_risk == pytest.approx(50_000.0)
    assert r.qty == Decimal("0.02382086")          # 50,000 / 2,099,000 rounded down to 8 dp
    assert r.notional == Decimal("0.02382086") * Decimal("100000000")
    assert r.reason_codes == (SIZE_RISK,)
    assert r.risk_amount <= r.dollar_risk
    assert r.to_dict()["qty"] == "0.02382086"


def test_decimal_money_from_the_database_is_accepted():
    assert size(equity=Decimal("10000000"), cash_available=Decimal("10000000"),
                entry_price=Decimal("100000000")).qty == Decimal("0.02382086")


def test_short_stop_is_above_the_entry():
    short_market = replace(KRW_BTC, can_short=True)
    r = size(direction=Direction.SHORT, market=short_market)
    assert r.stop_price == Decimal("102000000")
    assert r.qty > 0


def test_stop_is_put_on_the_krw_tick_grid_towards_the_entry():
    # 1,234 KRW coin: tick 1 KRW; raw stop 1,234 - 2 x 7.3 = 1,219.4 -> SELL rounds up to 1,220
    coin = MarketInfo("KRW-XRP", "XRP", "KRW", min_notional=Decimal("5000"))
    book = OrderBook("KRW-XRP", 0, np.array([[1233.0, 1e6]]), np.array([[1234.0, 1e6], [1235.0, 1e6]]))
    r = size(entry_price=1234.0, atr=7.3, market=coin, book=book)
    assert r.stop_price == Decimal("1220")
    assert r.risk_per_unit == pytest.approx(14 + 0.0005 * (1234 + 1220))


@pytest.mark.parametrize("dd, scale", [(0.0, 1.0), (0.05, 1.0), (0.10, 0.625), (0.1499, 0.25075),
                                       (0.15, 0.0), (0.4, 0.0), (float("nan"), 0.0)])
def test_drawdown_scale_curve(dd, scale):
    # STANDARD: 1 until 5 %, linear to 0.25 at the 15 % limit, 0 at and beyond it
    assert drawdown_scale(dd, STANDARD) == pytest.approx(scale)


def test_drawdown_shrinks_dollar_risk_and_stops_at_the_limit():
    r = size(drawdown=0.10)
    assert r.dollar_risk == pytest.approx(50_000 * 0.625)
    assert DRAWDOWN_SCALE in r.reason_codes
    dead = size(drawdown=0.15)
    assert dead.qty == 0 and dead.reason_codes == (DRAWDOWN_LIMIT,)


def test_portfolio_risk_budget_caps_the_size():
    r = size(remaining_risk_budget=20_990.0)
    assert r.qty == Decimal("0.00999999")           # 20,990 / 2,099,000 = 0.01, kept strictly inside
    assert r.reason_codes == (CAP_PORTFOLIO_RISK,)
    assert r.risk_amount <= 20_990.0


def test_no_budget_means_no_trade():
    r = size(remaining_risk_budget=0.0)
    assert r.qty == 0 and r.skipped
    assert r.reason_codes == (CAP_PORTFOLIO_RISK, BELOW_MIN_ORDER)


def test_liquidity_cap_is_a_share_of_top5_depth():
    thin = deep_book(qty=0.01)      # top-5 depth ~ 5M KRW per side: cap 1.5M KRW < 2.38M
    r = size(book=thin)
    depth = thin.depth_value(5)
    assert float(r.notional) <= 0.3 * depth
    assert r.reason_codes[0] == CAP_LIQUIDITY
    assert r.caps[CAP_LIQUIDITY] == pytest.approx(0.3 * depth / 100_000_000.0)


def test_slippage_cap_shrinks_the_order_to_the_limit():
    # a wide ladder: each level 0.3 % further; four full levels average +0.45 %, then 2/7 of
    # the fifth (at +1.2 %) brings the average to exactly +0.5 %: 4 2/7 x 0.005 BTC
    asks = np.array([[100_000_000.0 * (1 + 0.003 * i), 0.005] for i in range(5)])
    bids = np.array([[99_900_000.0 - 10_000.0 * i, 0.005] for i in range(5)])
    book = OrderBook("KRW-BTC", 0, bids, asks)
    profile = replace(STANDARD, liquidity_min_ratio=1.0)
    r = size(book=book, profile=profile)
    assert CAP_SLIPPAGE in r.reason_codes
    assert r.expected_slippage <= 0.005
    assert r.qty == Decimal("0.02142857")
    assert r.reason_codes == (CAP_SLIPPAGE,)


def test_cash_and_max_position_caps():
    r = size(cash_available=1_000_000.0)
    assert r.reason_codes[0] == CAP_CASH
    assert float(r.notional) * (1 + 0.0005) <= 1_000_000.0
    r = size(atr=100_000.0, cash_available=1e12)
    assert r.reason_codes[0] == CAP_MAX_POSITION
    assert float(r.notional) <= 0.25 * 10_000_000.0


def test_kelly_caps_when_statistics_exist():
    stats = TradeStats(win_rate=0.55, avg_win=0.02, avg_loss=0.015, cvar95=0.03, n_trades=200)
    f = kelly_with_cvar(0.55, 0.02, 0.015, 0.03, STANDARD.kelly_fraction)
    r = size(trade_stats=stats, atr=300_000.0)
    assert r.caps[CAP_KELLY] == pytest.approx(f * 10_000_000.0 / 100_000_000.0)
    assert CAP_KELLY in r.reason_codes
    assert float(r.notional) <= f * 10_000_000.0
    # too few trades: no Kelly cap at all
    assert CAP_KELLY not in size(trade_stats=replace(stats, n_trades=5)).caps


def test_kelly_without_edge_skips_the_trade():
    stats = TradeStats(win_rate=0.3, avg_win=0.01, avg_loss=0.02, cvar95=0.04, n_trades=100)
    r = size(trade_stats=stats)
    assert r.qty == 0
    assert r.reason_codes == (KELLY_NO_EDGE, CAP_KELLY, BELOW_MIN_ORDER)


def test_below_minimum_order_becomes_zero_never_rounded_up():
    r = size(equity=100_000.0, cash_available=100_000.0)    # 500 KRW of risk: 500 / 2.099M = 0.0002382 BTC
    assert r.notional == Decimal("23820.00000000")
    tiny = size(equity=20_000.0, cash_available=20_000.0)   # 100 KRW of risk: a 4.76k order < 5k
    assert tiny.qty == 0 and tiny.reason_codes == (SIZE_RISK, BELOW_MIN_ORDER)
    assert tiny.caps[SIZE_RISK] * 100_000_000.0 == pytest.approx(4764.17, abs=0.01)


@pytest.mark.parametrize("overrides", [{"equity": float("nan")}, {"atr": 0.0}, {"entry_price": -1.0},
                                       {"direction": Direction.NONE}, {"atr": 60_000_000.0}])
def test_bad_inputs_are_a_skip_with_a_reason(overrides):
    r = size(**overrides)
    assert r.qty == 0 and r.reason_codes == (INVALID_INPUT,)


def test_no_book_no_trade():
    r = size(book=None)
    assert r.qty == 0 and r.reason_codes[-1] == NO_ORDER_BOOK


def test_book_walk_helpers():
    asks = np.array([[100.0, 1.0], [101.0, 1.0], [103.0, 2.0]])
    assert walk_book(asks, 2.0) == (100.5, 2.0)
    assert slippage_of(asks, 2.0) == pytest.approx(0.005)
    assert slippage_of(asks, 5.0) == math.inf
    assert max_qty_within_slippage(asks, 0.005, buy=True) == pytest.approx(2.0)
    assert max_qty_within_slippage(asks, 0.5, buy=True) == pytest.approx(4.0)
    bids = np.array([[100.0, 1.0], [99.0, 1.0], [97.0, 2.0]])
    assert max_qty_within_slippage(bids, 0.005, buy=False) == pytest.approx(2.0)


# --- invariants ----------------------------------------------------------------------------

books = st.lists(st.tuples(st.floats(0.0, 0.02), st.floats(0.0001, 50.0)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(
    equity=st.floats(1e3, 1e10), cash_share=st.floats(0, 1.5), entry=st.floats(0.5, 2e8),
    atr_pct=st.floats(1e-4, 0.2), budget_share=st.floats(0, 0.2), dd=st.floats(0, 0.3),
    ladder=books, min_notional=st.sampled_from(["0", "5000", "10"]), long=st.booleans(),
    stats=st.none() | st.tuples(st.floats(0, 1), st.floats(0, 0.1), st.floats(0, 0.1), st.floats(0, 0.2)),
    profile=st.sampled_from([SAFETY_FIRST, STANDARD, replace(STANDARD, kelly_min_trades=1)]),
)
def test_no_size_ever_breaks_a_limit(equity, cash_share, entry, atr_pct, budget_share, dd, ladder, min_notional,
                                     long, stats, profile):
    market = MarketInfo("X-Y", "Y", "X", min_notional=Decimal(min_notional), tick_size=None, can_short=True)
    market = replace(market, quote="USDT", tick_size=None)
    sign = 1 if long else -1
    levels = np.array([[entry * (1 + sign * step), q] for step, q in ladder])
    order = np.argsort(sign * levels[:, 0], kind="stable")
    levels = levels[order]
    assume(np.all(levels[:, 0] > 0))
    other = levels.copy()
    other[:, 0] = entry * (1 - sign * 0.001)
    book = OrderBook("X-Y", 0, other if long else levels, levels if long else other)
    cash, budget = equity * cash_share, equity * budget_share
    trade_stats = TradeStats(*stats, n_trades=50) if stats else None
    r = size_position(profile=profile, equity=equity, cash_available=cash, entry_price=entry, atr=entry * atr_pct,
                      direction=Direction.LONG if long else Direction.SHORT, market=market, book=book,
                      remaining_risk_budget=budget, drawdown=dd, trade_stats=trade_stats)
    assert r.qty >= 0 and r.qty.is_finite()
    assert r.reason_codes, "every result says why"
    if r.qty == 0:
        return
    q, notional, tol = float(r.qty), float(r.notional), 1 + 1e-9
    fee = float(market.taker_fee)
    assert r.notional >= market.min_notional
    assert q * r.risk_per_unit <= equity * profile.risk_per_trade * drawdown_scale(dd, profile) * tol
    assert q * r.risk_per_unit <= budget * tol
    assert notional * (1 + fee) <= cash * tol
    assert notional <= profile.liquidity_min_ratio * book.depth_value(5) * tol
    assert notional <= profile.max_position_pct * equity * tol
    assert slippage_of(levels, q) <= profile.max_slippage + 1e-12
    if trade_stats is not None and trade_stats.n_trades >= profile.kelly_min_trades:
        f = kelly_with_cvar(trade_stats.win_rate, trade_stats.avg_win, trade_stats.avg_loss, trade_stats.cvar95,
                            profile.kelly_fraction)
        assert notional <= f * equity * tol
    assert not any(math.isnan(v) for v in (r.risk_amount, r.dollar_risk, r.expected_slippage))
