"""The fill model: book walking, trade-through limits, partial fills, latency, fees, precision."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.engine.fillmodel import Bar, FillConfig, FillModel
from execution.engine.precision import krw_tick_size, round_krw_price
from execution.engine.sim import PriceGrid, build_ladder_book
from execution.engine.types import (
    MarketDataError,
    MarketInfo,
    OrderBook,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

TS = 1_767_225_600
MARKET = MarketInfo("KRW-XRP", "XRP", "KRW", min_notional=Decimal("5000"))
D = Decimal


def make_book(mid: float, level_value: float = 2_000_000.0, spread_frac: float = 0.001, depth: int = 10,
              ts: int = TS, symbol: str = "KRW-XRP") -> OrderBook:
    levels = level_value * (1 + 0.2 * np.arange(depth))
    return build_ladder_book(symbol, ts, mid, spread_frac, levels, PriceGrid.krw())


def dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def on_grid(price: Decimal, ts: int = TS) -> bool:
    return price % krw_tick_size(price, ts) == 0


def check_invariants(state, ts: int = TS) -> None:
    assert sum((f.qty for f in state.fills), D(0)) == state.filled_qty
    assert all(f.fee > 0 for f in state.fills)
    assert state.fee == sum((f.fee for f in state.fills), D(0))
    assert all(on_grid(f.price, ts) for f in state.fills)
    if state.qty is not None:
        assert state.filled_qty <= state.qty
    if state.fills:
        spent = sum((f.price * f.qty for f in state.fills), D(0))
        assert state.avg_price == spent / state.filled_qty


mids = st.floats(min_value=50.0, max_value=200_000_000.0, allow_nan=False)
qty_values = st.floats(min_value=6_000.0, max_value=60_000_000.0)   # order value in KRW


@settings(max_examples=150, deadline=None)
@given(mid=mids, value=qty_values, side=st.sampled_from([Side.BUY, Side.SELL]))
def test_taker_never_fills_better_than_the_touch(mid, value, side):
    book = make_book(mid)
    qty = (D(value) / dec(mid)).quantize(D("1e-8"))
    state = FillModel().submit(OrderRequest("c1", "KRW-XRP", side, OrderType.MARKET, qty=qty), book, TS, MARKET)
    check_invariants(state)
    assert state.fills
    for f in state.fills:
        if side is Side.BUY:
            assert f.price >= dec(book.best_ask)
        else:
            assert f.price <= dec(book.best_bid)
    assert state.status in (OrderStatus.FILLED, OrderStatus.EXPIRED)
    if state.status is OrderStatus.EXPIRED:
        assert state.error == "book_exhausted" and state.filled_qty < qty


@settings(max_examples=150, deadline=None)
@given(mid=mids, value=qty_values, offset=st.floats(min_value=-0.02, max_value=0.02),
       side=st.sampled_from([Side.BUY, Side.SELL]),
       lows=st.lists(st.floats(min_value=-0.03, max_value=0.03), min_size=1, max_size=6),
       volumes=st.lists(st.floats(min_value=0.0, max_value=1e7), min_size=6, max_size=6))
def test_limit_fills_never_worse_than_the_limit_and_never_overfill(mid, value, offset, side, lows, volumes):
    book = make_book(mid)
    price = round_krw_price(dec(mid * (1 + offset)), side, TS)
    qty = (D(value) / price).quantize(D("1e-8"))
    model = FillModel(FillConfig(participation=0.5))
    state = model.submit(OrderRequest("c1", "KRW-XRP", side, OrderType.LIMIT, qty=qty, price=price), book, TS, MARKET)
    check_invariants(state)
    for f in state.fills:                                  # taker part at submission
        assert f.liquidity.value == "taker"
        assert (f.price >= dec(book.best_ask)) if side is Side.BUY else (f.price <= dec(book.best_bid))
    for k, move in enumerate(lows):
        p = float(price)
        lo, hi = p * (1 + min(move, 0)), p * (1 + max(move, 0))
        bar = Bar(TS + 60 * k, 60, p, hi, lo, p, volumes[k] / p)
        fills = model.on_bar(state, bar, None, MARKET)
        for f in fills:
            assert f.price == price and f.ts == bar.ts + 60
            assert (bar.low < p) if side is Side.BUY else (bar.high > p)
        check_invariants(state)
    for f in state.fills:
        assert (f.price <= price) if side is Side.BUY else (f.price >= price)
    if state.filled_qty == qty:
        assert state.status is OrderStatus.FILLED


@settings(max_examples=100, deadline=None)
@given(mid=mids, amount=st.integers(min_value=5_000, max_value=50_000_000))
def test_market_buy_by_quote_amount_never_spends_more_than_asked(mid, amount):
    book = make_book(mid)
    state = FillModel().submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D(amount)),
                               book, TS, MARKET)
    check_invariants(state)
    spent = sum((f.price * f.qty for f in state.fills), D(0))
    assert spent <= D(amount)
    assert all(f.price >= dec(book.best_ask) for f in state.fills)


@settings(max_examples=100, deadline=None)
@given(mid=mids, value=st.floats(min_value=1.0, max_value=4_999.0))
def test_orders_below_the_minimum_are_rejected(mid, value):
    book = make_book(mid)
    price = round_krw_price(dec(mid), Side.BUY, TS)
    qty = (D(value) / price).quantize(D("1e-8"))
    if qty <= 0 or price * qty >= 5000:
        return
    state = FillModel().submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=qty, price=price),
                               book, TS, MARKET)
    assert state.status is OrderStatus.REJECTED and state.error == "below_min_notional"
    assert state.fills == [] and state.filled_qty == 0


def test_market_buy_walks_the_book_level_by_level():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 5.0], [1001.0, 5.0], [1003.0, 100.0]]))
    state = FillModel().submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, qty=D("12")), book, TS, MARKET)
    assert [(f.price, f.qty) for f in state.fills] == [(D("1000"), D("5")), (D("1001"), D("5")), (D("1003"), D("2"))]
    assert state.status is OrderStatus.FILLED and state.filled_qty == D("12")
    assert state.avg_price == D("12011") / D("12")
    assert state.fee == D("2.5") + D("2.5025") + D("1.003")     # 0.05% taker fee of each level


def test_market_order_larger_than_the_book_fills_partially_and_expires():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 3.0]]), np.array([[1000.0, 5.0], [1001.0, 5.0]]))
    state = FillModel().submit(OrderRequest("c1", "KRW-XRP", Side.SELL, OrderType.MARKET, qty=D("8")), book, TS, MARKET)
    assert state.filled_qty == D("3") and state.status is OrderStatus.EXPIRED and state.error == "book_exhausted"


def test_marketable_limit_takes_only_levels_within_the_limit_then_rests():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 5.0], [1001.0, 5.0], [1002.0, 5.0]]))
    model = FillModel()
    state = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("20"), price=D("1001")),
                         book, TS, MARKET)
    assert [f.price for f in state.fills] == [D("1000"), D("1001")]
    assert state.status is OrderStatus.PARTIALLY_FILLED and state.filled_qty == D("10")
    # the rest fills as maker only when a later bar trades through 1001
    touch = Bar(TS, 60, 1005.0, 1006.0, 1001.0, 1004.0, 1000.0)
    assert model.on_bar(state, touch, None, MARKET) == []
    through = Bar(TS + 60, 60, 1004.0, 1004.0, 1000.0, 1002.0, 1000.0)
    fills = model.on_bar(state, through, None, MARKET)
    assert [(f.price, f.qty, f.liquidity.value, f.ts) for f in fills] == [(D("1001"), D("10"), "maker", TS + 120)]
    assert state.status is OrderStatus.FILLED


def test_participation_caps_each_bar():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 10.0]]))
    model = FillModel(FillConfig(participation=0.1))
    state = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("50"), price=D("990")),
                         book, TS, MARKET)
    assert state.status is OrderStatus.OPEN
    bars = [Bar(TS + 60 * k, 60, 995.0, 996.0, 985.0, 992.0, 200.0) for k in range(3)]
    got = [model.on_bar(state, b, None, MARKET)[0].qty for b in bars]
    assert got == [D("20"), D("20"), D("10")] and state.status is OrderStatus.FILLED


def test_bars_before_the_order_was_active_do_not_fill_it():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 10.0]]))
    model = FillModel()
    state = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("990")),
                         book, TS, MARKET)
    assert model.on_bar(state, Bar(TS - 60, 60, 995.0, 996.0, 900.0, 992.0, 1e6), None, MARKET) == []
    missing = Bar(TS, 60, *(float("nan"),) * 5)
    assert model.on_bar(state, missing, None, MARKET) == []


def test_post_only_is_rejected_when_it_would_cross_and_rests_otherwise():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 10.0]]))
    model = FillModel()
    crossing = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1000"),
                                         tif=TimeInForce.POST_ONLY), book, TS, MARKET)
    assert crossing.status is OrderStatus.REJECTED and crossing.error == "post_only_would_cross"
    resting = model.submit(OrderRequest("c2", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("999"),
                                        tif=TimeInForce.POST_ONLY), book, TS, MARKET)
    assert resting.status is OrderStatus.OPEN and resting.fills == []


def test_ioc_expires_the_remainder_and_fok_needs_the_whole_quantity():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 6.0], [1005.0, 100.0]]))
    model = FillModel()
    ioc = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1000"),
                                    tif=TimeInForce.IOC), book, TS, MARKET)
    assert ioc.filled_qty == D("6") and ioc.status is OrderStatus.EXPIRED
    fok = model.submit(OrderRequest("c2", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1000"),
                                    tif=TimeInForce.FOK), book, TS, MARKET)
    assert fok.fills == [] and fok.status is OrderStatus.EXPIRED and fok.error == "fok_not_fillable"
    fok_ok = model.submit(OrderRequest("c3", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1005"),
                                       tif=TimeInForce.FOK), book, TS, MARKET)
    assert fok_ok.status is OrderStatus.FILLED and fok_ok.filled_qty == D("10")


def test_latency_delays_activation_to_the_first_book_after_it():
    model = FillModel(FillConfig(latency_ms=250))
    book0 = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 10.0]]))
    state = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, qty=D("6")), book0, TS, MARKET)
    assert state.status is OrderStatus.NEW and state.fills == []
    bar = Bar(TS, 60, 1000.0, 1010.0, 990.0, 1008.0, 100.0)
    assert model.on_bar(state, bar, book0, MARKET) == []                       # book not newer than latency
    book1 = OrderBook("KRW-XRP", TS + 60, np.array([[1007.0, 10.0]]), np.array([[1008.0, 10.0]]))
    fills = model.on_bar(state, bar, book1, MARKET)
    assert [(f.price, f.qty, f.ts) for f in fills] == [(D("1008"), D("6"), TS + 60)]
    assert state.status is OrderStatus.FILLED and state.ts == TS + 60


def test_precision_and_other_rejections():
    book = make_book(1000.0)
    model = FillModel()

    def submit(**kw):
        base = {"client_order_id": "c", "symbol": "KRW-XRP", "side": Side.BUY, "type": OrderType.LIMIT}
        return model.submit(OrderRequest(**(base | kw)), book, TS, MARKET)

    assert submit(qty=D("10"), price=D("1000.5")).error == "price_not_on_tick"
    assert submit(qty=D("10.000000001"), price=D("1000")).error == "qty_precision"
    assert submit(type=OrderType.MARKET, side=Side.SELL, quote_amount=D("10000")).error == "sell_by_quote_amount"
    assert submit(type=OrderType.MARKET, qty=D("10"), tif=TimeInForce.POST_ONLY).error == "post_only_needs_limit"
    assert submit(type=OrderType.MARKET, quote_amount=D("4999")).error == "below_min_notional"
    other = MarketInfo("KRW-ETH", "ETH", "KRW", min_notional=D("5000"))
    assert model.submit(OrderRequest("c", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1000")),
                        book, TS, other).error == "market_mismatch"


def test_cancel_keeps_the_partial_fill():
    book = OrderBook("KRW-XRP", TS, np.array([[999.0, 10.0]]), np.array([[1000.0, 6.0], [1010.0, 6.0]]))
    model = FillModel()
    state = model.submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("10"), price=D("1000")),
                         book, TS, MARKET)
    model.cancel(state, TS + 5)
    assert state.status is OrderStatus.CANCELLED and state.filled_qty == D("6")
    assert model.on_bar(state, Bar(TS + 60, 60, 990.0, 990.0, 900.0, 950.0, 1e6), None, MARKET) == []


def test_corrupt_books_fail_fast():
    model = FillModel()
    req = OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, qty=D("10"))
    crossed = OrderBook("KRW-XRP", TS, np.array([[1001.0, 1.0]]), np.array([[1000.0, 1.0]]))
    with pytest.raises(MarketDataError):
        model.submit(req, crossed, TS, MARKET)
    off_grid = OrderBook("KRW-XRP", TS, np.array([[999.0, 1.0]]), np.array([[1000.5, 100.0]]))
    with pytest.raises(MarketDataError):
        model.submit(req, off_grid, TS, MARKET)
    with pytest.raises(MarketDataError):
        model.submit(req, make_book(1000.0, symbol="KRW-ETH"), TS, MARKET)


def test_zero_fee_markets_are_refused():
    free = MarketInfo("KRW-XRP", "XRP", "KRW", min_notional=D("5000"), maker_fee=D("0"))
    with pytest.raises(ValueError):
        FillModel().submit(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, qty=D("10")),
                           make_book(1000.0), TS, free)
