"""The execution policy in PAPER [EXE-1], [EXE-3]: ``PaperBroker`` with a policy splits and
re-prices like the LIVE broker, against the fill model."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.db.models import Sum

from execution.adapters.sim import SimExchange
from execution.engine.policy import ExecutionPolicy
from execution.engine.precision import round_krw_price
from execution.engine.sim import SimConfig
from execution.engine.types import OrderRequest, OrderType, Side
from execution.marketdata import MarketView
from execution.models import ExecutionFailure, MarketBlacklist, Order, Position
from execution.paper import PaperBroker, order_from_request
from tests.factories import make_trader, staff_user
from traders.models import Event

SYMBOL = "KRW-SOL"


def view_of(ex: SimExchange) -> MarketView:
    candles = ex.history().candles.tail(120)
    return MarketView("sim", int(candles.ts[-1]), candles, None, {s: ex.order_book(s) for s in ex.market.symbols},
                      {t.symbol: t for t in ex.tickers()}, {m.symbol: m for m in ex.markets()}, ex.now)


@pytest.fixture
def market():
    return SimExchange(SimConfig(seed=21, n_markets=4), balances={"KRW": D("1")}, warmup_bars=300)


@pytest.fixture
def trader(db):
    return make_trader(staff_user(username="boss"), name="paper-one", seed=D("50000000"))


def entry(trader, view, n: int, qty: D, price: D):
    position = Position.objects.create(trader=trader, symbol=SYMBOL, opened_ts=view.bar_ts + 60)
    request = OrderRequest(f"qw{trader.pk}-s{n}-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=qty, price=price)
    return order_from_request(trader, request, purpose="entry", bar_ts=view.bar_ts, position=position), request


def test_without_a_policy_the_order_is_sent_as_given(trader, market):
    view = view_of(market)
    ask = D(repr(view.books[SYMBOL].best_ask))
    order, request = entry(trader, view, 1, D("2"), ask)
    fills = PaperBroker(trader, view).submit(order, request)
    assert order.price == ask and Order.objects.count() == 1 and sum(f.qty for f in fills) == D("2")


def test_an_entry_is_split_into_laddered_legs_on_one_position(trader, market):
    view = view_of(market)
    ask = D(repr(view.books[SYMBOL].best_ask))
    policy = ExecutionPolicy(limit_offset_bps=0, split_legs=3, leg_spacing_bps=50)
    order, request = entry(trader, view, 1, D("3"), ask)
    fills = PaperBroker(trader, view, policy=policy).submit(order, request)
    legs = list(Order.objects.order_by("id"))
    assert [o.client_order_id for o in legs] == [f"qw{trader.pk}-s1-{k}" for k in range(3)]
    assert [o.qty for o in legs] == [D("1")] * 3 and {o.position_id for o in legs} == {order.position_id}
    assert legs[0].price == ask and legs[0].status == Order.Status.FILLED            # at the touch: taken
    assert legs[1].price < ask and legs[2].price < legs[1].price                     # deeper rungs rest
    assert all(o.status == Order.Status.OPEN for o in legs[1:])
    assert sum(f.qty for f in fills) == D("1") and legs[2].execution["leg"] == 2


def test_a_timed_out_leg_is_re_priced_and_siblings_advance_together(trader, market):
    view = view_of(market)
    ask = D(repr(view.books[SYMBOL].best_ask))
    policy = ExecutionPolicy(limit_offset_bps=200, split_legs=2, leg_spacing_bps=100, max_replaces=1,
                             timeout_seconds=30)
    order, request = entry(trader, view, 1, D("2"), ask)
    PaperBroker(trader, view, policy=policy).submit(order, request)
    assert Order.objects.filter(status=Order.Status.OPEN).count() == 2               # 2 % and 3 % inside: resting
    market.advance(1)
    later = view_of(market)
    broker = PaperBroker(trader, later, policy=policy)
    stale_copy = Order.objects.get(client_order_id=f"qw{trader.pk}-s1-1")
    fills = broker.advance(Order.objects.get(pk=order.pk))                           # both legs, once
    assert broker.advance(stale_copy) == [] and stale_copy.status == Order.Status.CANCELLED   # refreshed
    parents = list(Order.objects.filter(parent__isnull=True).order_by("id"))
    children = list(Order.objects.filter(parent__isnull=False).order_by("id"))
    assert [c.client_order_id for c in children] == [f"qw{trader.pk}-s1-0r1", f"qw{trader.pk}-s1-1r1"]
    for parent, child in zip(parents, children, strict=True):
        assert parent.status == Order.Status.CANCELLED
        assert parent.error == f"REPLACE_1: continued by {child.client_order_id}"
        assert child.qty == parent.qty - parent.filled_qty and child.price > parent.price
        assert child.bar_ts == later.bar_ts and child.execution["successors"] == 1
    booked = Order.objects.aggregate(q=Sum("filled_qty"))["q"]
    assert sum(f.qty for f in fills) == booked


def test_the_policy_leaves_a_final_cancel_to_the_caller_with_its_reason(trader, market):
    view = view_of(market)
    ask = D(repr(view.books[SYMBOL].best_ask))
    policy = ExecutionPolicy(limit_offset_bps=200, max_replaces=0, allow_market_fallback=False)
    order, request = entry(trader, view, 1, D("2"), ask)
    PaperBroker(trader, view, policy=policy).submit(order, request)
    market.advance(1)
    broker = PaperBroker(trader, view_of(market), policy=policy)
    broker.advance(order)
    assert order.status == Order.Status.OPEN and order.execution["cancel_reason"] == "TIMEOUT"
    broker.cancel(order, "timeout: remainder cancelled")
    assert order.status == Order.Status.CANCELLED and order.error == "timeout: remainder cancelled (TIMEOUT)"


def test_market_fallback_only_where_the_profile_allows_it(trader, market):
    view = view_of(market)
    ask = D(repr(view.books[SYMBOL].best_ask))
    policy = ExecutionPolicy(limit_offset_bps=200, max_replaces=0, allow_market_fallback=True, max_slippage=0.05)
    order, request = entry(trader, view, 1, D("2"), ask)
    PaperBroker(trader, view, policy=policy).submit(order, request)
    market.advance(1)
    PaperBroker(trader, view_of(market), policy=policy).advance(order)
    child = Order.objects.get(parent=order)
    assert child.tif == "ioc" and child.execution["fallback"] is True
    assert child.status in (Order.Status.FILLED, Order.Status.EXPIRED, Order.Status.CANCELLED)


def test_rejections_are_failures_and_the_third_blacklists(trader, market):
    view = view_of(market)
    off_grid = D(repr(view.books[SYMBOL].best_bid)) + D("1")
    broker = PaperBroker(trader, view)
    for n in (1, 2, 3):
        order, request = entry(trader, view, n, D("1"), off_grid)
        broker.submit(order, request)
        assert order.status == Order.Status.REJECTED and order.error == "price_not_on_tick"
        Position.objects.filter(pk=order.position_id).update(status=Position.Status.CLOSED)   # as the tick does
    assert ExecutionFailure.objects.filter(trader=trader, code="VENUE_REJECTED", mode="PAPER").count() == 3
    assert MarketBlacklist.objects.get(trader=trader, symbol=SYMBOL).until == view.bar_ts + 60 + 600   # bar clock
    assert Event.objects.filter(trader=trader, kind="MARKET_BLACKLISTED").count() == 1
    ok = round_krw_price(D(repr(view.books[SYMBOL].best_ask)), Side.BUY, market.now)
    order, request = entry(trader, view, 4, D("1"), ok)
    assert broker.submit(order, request) == [] and order.status == Order.Status.REJECTED
    assert order.error == "MARKET_BLACKLISTED"
