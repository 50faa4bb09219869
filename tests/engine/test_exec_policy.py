"""Execution policy [EXE-1] (execution.engine.policy): legs, offsets, cancel/replace, fallback,
client order ids. No database."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal as D

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.engine.policy import (
    ExecutionPolicy,
    PolicyError,
    Step,
    VenueCapabilities,
    WorkingOrder,
    check_client_order_id,
    leg_client_order_id,
    limit_price,
    on_timeout,
    plan_entry,
    root_client_order_id,
    split_qty,
    stop_trigger_price,
    successor_client_order_id,
)
from execution.engine.precision import is_on_grid, krw_tick_size
from execution.engine.types import MarketInfo, OrderBook, OrderRequest, OrderType, Side, TimeInForce
from risk.engine.profiles import CRAZY, PROFIT_FIRST, SAFETY_FIRST, STANDARD

TS = 1_790_000_000
KRW = MarketInfo("KRW-XRP", "XRP", "KRW", min_notional=D("5000"), qty_decimals=8)
USDT = MarketInfo("BTC/USDT", "BTC", "USDT", min_notional=D("5"), lot_size=D("0.00001"), qty_decimals=5,
                  tick_size=D("0.01"))
ALL = VenueCapabilities(post_only=True, ioc=True, fok=True, market_buy_by_qty=True, market_buy_by_quote=True)
UPBIT_LIKE = VenueCapabilities(post_only=True, ioc=False, market_buy_by_qty=False, market_buy_by_quote=True)


def book(bid: float, ask: float, symbol: str = "KRW-XRP") -> OrderBook:
    return OrderBook(symbol, TS, np.array([[bid, 1e6], [bid * 0.99, 1e6]]), np.array([[ask, 1e6], [ask * 1.01, 1e6]]))


def entry(qty="100", price="3005", cid="qw7-s42-0", symbol="KRW-XRP") -> OrderRequest:
    return OrderRequest(cid, symbol, Side.BUY, OrderType.LIMIT, qty=D(qty), price=D(price))


def working(**kw) -> WorkingOrder:
    base = dict(client_order_id="qw7-s42-0", symbol="KRW-XRP", side=Side.BUY, qty=D("100"), filled_qty=D("0"),
                price=D("3000"), age_seconds=60, successors=0, decision_price=D("3005"))
    return WorkingOrder(**(base | kw))


# -- client order ids [EXE-2] ---------------------------------------------------------------------

def test_client_ids_derive_from_trader_signal_leg_and_attempt():
    assert leg_client_order_id("qw7-s42-0", 2) == "qw7-s42-2"
    assert successor_client_order_id("qw7-s42-2", 1) == "qw7-s42-2r1"
    assert successor_client_order_id("qw7-s42-2r1", 2) == "qw7-s42-2r2"
    assert root_client_order_id("qw7-s42-2r2") == "qw7-s42-2"
    assert successor_client_order_id("qw7-x9-1790000000-0", 1) == "qw7-x9-1790000000-0r1"
    with pytest.raises(ValueError):
        successor_client_order_id("qw7-s42-0", 0)


def test_longest_realistic_ids_fit_binance_bybit_and_upbit():
    """Trader and signal/position ids up to a million and ten billion, the exit id with its bar
    time and a successor suffix all stay within 36 characters of [A-Za-z0-9_-]."""
    caps = VenueCapabilities()
    entry_id = successor_client_order_id(leg_client_order_id("qw999999-s9999999999-0", 9), 9)
    exit_id = successor_client_order_id("qw999999-x99999999-1790000000-9", 9)
    stop_id = "qw999999-p99999999-t999"
    for cid in (entry_id, exit_id, stop_id):
        assert check_client_order_id(cid, caps) == "", cid
    assert check_client_order_id("x" * 37, caps).startswith("client_id_too_long")
    assert check_client_order_id("qw1 s2", caps) == "client_id_characters"
    okx = VenueCapabilities(client_id_max_len=32, client_id_alnum_only=True)
    assert check_client_order_id("qw7-s42-0", okx) == "client_id_characters"


# -- prices and legs ---------------------------------------------------------------------------------

def test_limit_price_sits_offset_inside_the_far_touch_on_the_krw_grid():
    b = book(3000, 3010)
    assert limit_price(Side.BUY, b, KRW, 0, TS) == D("3010")                      # at the touch
    p = limit_price(Side.BUY, b, KRW, 20, TS)                                     # 3010 * 0.998 = 3003.98
    assert p == D("3003") and is_on_grid(p, krw_tick_size(p, TS))                 # BUY rounds down
    assert limit_price(Side.SELL, b, KRW, 20, TS) == D("3006")                    # 3000 * 1.002
    assert limit_price(Side.SELL, b, KRW, 21, TS) == D("3007")                    # 3006.3, rounded up
    assert limit_price(Side.BUY, b, KRW, 0, TS, cap=D("3005")) == D("3005")       # never beyond the decision


def test_post_only_stays_strictly_inside_the_far_touch():
    b = book(3000, 3001)
    assert limit_price(Side.BUY, b, KRW, 0, TS, post_only=True) == D("3000")
    assert limit_price(Side.SELL, b, KRW, 0, TS, post_only=True) == D("3001")


def test_split_respects_lot_grid_and_minimum():
    parts = split_qty(D("0.00103"), 3, D("67000"), USDT)
    assert parts == [D("0.00034"), D("0.00034"), D("0.00035")] and sum(parts) == D("0.00103")
    # 3 legs of 0.0001 BTC would be 6.7 USDT each: two fit the 5 USDT minimum at most
    assert split_qty(D("0.00015"), 3, D("67000"), USDT) == [D("0.00015")]
    assert split_qty(D("0.0002"), 3, D("67000"), USDT) == [D("0.0001"), D("0.0001")]


@settings(max_examples=200, deadline=None)
@given(qty=st.decimals("0.00001", "50", places=5), legs=st.integers(1, 10), price=st.decimals("1", "100000", places=2))
def test_split_never_loses_or_creates_quantity(qty, legs, price):
    parts = split_qty(qty, legs, price, USDT)
    assert sum(parts) == qty and all(p > 0 for p in parts) and len(parts) <= legs
    if len(parts) > 1:
        assert all(p * price >= USDT.min_notional for p in parts)
        assert all(p % USDT.lot_size == 0 for p in parts)


def test_plan_entry_ladders_legs_with_derived_ids():
    policy = ExecutionPolicy(limit_offset_bps=10, split_legs=3, leg_spacing_bps=20)
    legs = plan_entry(entry(qty="90"), book(3000, 3010), KRW, policy, ALL, TS)
    assert [r.client_order_id for r in legs] == ["qw7-s42-0", "qw7-s42-1", "qw7-s42-2"]
    assert [r.qty for r in legs] == [D("30"), D("30"), D("30")]
    prices = [r.price for r in legs]
    assert prices == sorted(prices, reverse=True) and prices[0] <= D("3005")      # deeper and capped
    assert all(r.tif is TimeInForce.GTC for r in legs)


def test_plan_entry_post_only_only_where_the_venue_has_it():
    policy = ExecutionPolicy(post_only=True)
    assert plan_entry(entry(), book(3000, 3010), KRW, policy, ALL, TS)[0].tif is TimeInForce.POST_ONLY
    assert plan_entry(entry(), book(3000, 3010), KRW, policy, VenueCapabilities(), TS)[0].tif is TimeInForce.GTC


def test_market_requests_and_empty_books_pass_through():
    mkt = OrderRequest("qw7-x9-1-0", "KRW-XRP", Side.SELL, OrderType.MARKET, qty=D("5"))
    assert plan_entry(mkt, book(3000, 3010), KRW, ExecutionPolicy(split_legs=3), ALL, TS) == [mkt]
    empty = OrderBook("KRW-XRP", TS, np.zeros((0, 2)), np.zeros((0, 2)))
    assert plan_entry(entry(), empty, KRW, ExecutionPolicy(), ALL, TS) == [entry()]


# -- timeouts ----------------------------------------------------------------------------------------

def test_waits_until_the_timeout():
    d = on_timeout(working(age_seconds=29), book(3000, 3010), KRW, ExecutionPolicy(timeout_seconds=30), ALL, TS)
    assert d.step is Step.WAIT
    d = on_timeout(working(age_seconds=45), book(3000, 3010), KRW, ExecutionPolicy(timeout_seconds=30), ALL, TS,
                   min_age_seconds=60)
    assert d.step is Step.WAIT


def test_replaces_get_nearer_the_touch_then_fall_back_to_protected_market():
    policy = ExecutionPolicy(limit_offset_bps=20, max_replaces=2, max_slippage=0.005)
    b = book(3000, 3010)
    first = on_timeout(working(filled_qty=D("40")), b, KRW, policy, ALL, TS)
    assert first.step is Step.REPLACE and first.request.client_order_id == "qw7-s42-0r1"
    assert first.request.qty == D("60") and first.request.price == D("3006")    # offset 10 bp: 3006.99, down
    second = on_timeout(working(successors=1), b, KRW, policy, ALL, TS)
    assert second.step is Step.REPLACE and second.request.price == D("3010")    # last replace at the touch
    fallback = on_timeout(working(successors=2), b, KRW, policy, ALL, TS)
    assert fallback.step is Step.FALLBACK and fallback.request.tif is TimeInForce.IOC
    assert fallback.request.price == D("3020")                                  # 3005 * 1.005 on the grid
    assert fallback.request.client_order_id == "qw7-s42-0r3"


def test_no_market_fallback_unless_the_profile_allows_it():
    policy = ExecutionPolicy(max_replaces=0, allow_market_fallback=False)
    d = on_timeout(working(), book(3000, 3010), KRW, policy, ALL, TS)
    assert (d.step, d.reason) == (Step.CANCEL, "TIMEOUT")


def test_fallback_without_ioc_uses_the_venues_market_order():
    policy = ExecutionPolicy(max_replaces=0)
    d = on_timeout(working(), book(3000, 3010), KRW, policy, UPBIT_LIKE, TS)
    assert d.step is Step.FALLBACK and d.request.type is OrderType.MARKET
    assert d.request.qty is None and d.request.quote_amount == D("301000")     # Upbit buys by KRW total
    sell = on_timeout(working(side=Side.SELL, decision_price=D("3000")), book(3000, 3010), KRW, policy,
                      UPBIT_LIKE, TS)
    assert sell.request.type is OrderType.MARKET and sell.request.qty == D("100")


def test_never_chases_beyond_max_slippage():
    policy = ExecutionPolicy(limit_offset_bps=0, max_replaces=1, max_slippage=0.005)
    ran_away = book(3050, 3060)                     # 1.8 % above the decision price of 3005
    assert on_timeout(working(), ran_away, KRW, policy, ALL, TS).reason == "CHASE_LIMIT"
    assert on_timeout(working(successors=1), ran_away, KRW, policy, ALL, TS).reason == "CHASE_LIMIT"


def test_remainder_below_the_minimum_is_given_up():
    d = on_timeout(working(filled_qty=D("99")), book(3000, 3010), KRW, ExecutionPolicy(), ALL, TS)
    assert (d.step, d.reason) == (Step.CANCEL, "REMAINDER_BELOW_MIN")


def test_a_fallback_order_is_never_continued():
    d = on_timeout(working(fallback=True, successors=3), book(3000, 3010), KRW, ExecutionPolicy(), ALL, TS)
    assert d.step is Step.CANCEL


@settings(max_examples=200, deadline=None)
@given(bid=st.integers(1000, 9000), spread=st.integers(1, 30), offset=st.floats(0, 100),
       successors=st.integers(0, 4), filled=st.integers(0, 99))
def test_a_continuation_never_pays_more_than_the_chase_limit(bid, spread, offset, successors, filled):
    policy = ExecutionPolicy(limit_offset_bps=offset, max_replaces=3, max_slippage=0.005)
    decision = D(bid + spread)
    w = working(filled_qty=D(filled), successors=successors, decision_price=decision)
    d = on_timeout(w, book(bid, bid + spread), KRW, policy, ALL, TS)
    if d.request is not None:
        assert d.request.qty == D(100 - filled)
        assert d.request.price is None or d.request.price <= decision * D("1.005")
        assert d.request.client_order_id == f"qw7-s42-0r{successors + 1}"


# -- profiles ----------------------------------------------------------------------------------------

def test_profiles_carry_their_execution_policy():
    safe, std, profit, crazy = (ExecutionPolicy.from_profile(p) for p in (SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY))
    assert safe.allow_market_fallback is False and safe.post_only and safe.split_legs == 2
    assert std.allow_market_fallback and std.split_legs == 1 and std.timeout_seconds == STANDARD.order_timeout_seconds
    assert profit.split_legs == 2
    assert crazy.limit_offset_bps == 0 and crazy.max_replaces == 1
    assert ExecutionPolicy.from_profile(object()) == ExecutionPolicy()


def test_invalid_policy_is_refused():
    with pytest.raises(PolicyError, match="split_legs"):
        ExecutionPolicy(split_legs=0)
    with pytest.raises(PolicyError, match="max_slippage"):
        replace(ExecutionPolicy(), max_slippage=0.0)


def test_resting_stop_trigger_never_looser_than_the_stop():
    assert stop_trigger_price(Side.SELL, D("3003.4"), KRW, TS) == D("3004")     # a long's stop rounds up
    assert stop_trigger_price(Side.BUY, D("3003.4"), KRW, TS) == D("3003")      # a short's stop rounds down
