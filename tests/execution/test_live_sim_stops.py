"""Resting stop orders on the simulated venue [RK-5] (execution.adapters.sim): locked quantity,
trigger on a bar trading through the stop, execution against the book, persistence."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from execution.adapters.base import (
    InsufficientFundsError,
    InvalidOrderError,
    StopOrders,
    supports_stop_orders,
)
from execution.adapters.sim import SimExchange
from execution.engine.precision import round_krw_price
from execution.engine.sim import SimConfig
from execution.engine.types import OrderRequest, OrderStatus, OrderType, Side

SYMBOL = "KRW-SOL"


def bought() -> SimExchange:
    ex = SimExchange(SimConfig(seed=21, n_markets=4), balances={"KRW": D("50000000")}, warmup_bars=300)
    ex.create_order(OrderRequest("buy-0", SYMBOL, Side.BUY, OrderType.MARKET, qty=D("2")))
    return ex


def stop(qty="2", cid="stop-1") -> OrderRequest:
    return OrderRequest(cid, SYMBOL, Side.SELL, OrderType.MARKET, qty=D(qty))


def test_stop_locks_its_quantity_until_triggered():
    ex = bought()
    assert isinstance(ex, StopOrders) and supports_stop_orders(ex)
    trigger = round_krw_price(D(repr(ex.order_book(SYMBOL).best_bid)) * D("0.5"), Side.SELL, ex.now)
    state = ex.create_stop_order(stop(), trigger)
    assert state.status is OrderStatus.OPEN and ex.locked_balances() == {"SOL": D("2")}
    assert ex.stop_price("stop-1") == trigger and ex.advance(5) == []          # far below: not triggered
    with pytest.raises(InsufficientFundsError):
        ex.create_stop_order(stop("1", "stop-2"), trigger)
    with pytest.raises(InvalidOrderError, match="only sell stops"):
        ex.create_stop_order(OrderRequest("s3", SYMBOL, Side.BUY, OrderType.MARKET, qty=D("1")), trigger)
    cancelled = ex.cancel_stop_order(SYMBOL, "stop-1")
    assert cancelled.status is OrderStatus.CANCELLED and ex.locked_balances() == {}
    assert ex.stop_price("stop-1") is None


def test_stop_triggers_when_a_bar_trades_through_and_sells_into_the_book():
    ex = bought()
    trigger = round_krw_price(D(repr(ex.order_book(SYMBOL).best_bid)) * D("0.9995"), Side.SELL, ex.now)
    ex.create_stop_order(stop(), trigger)
    clone = SimExchange.from_state(ex.get_state())                              # persistence keeps the stop
    assert clone.stop_price("stop-1") == trigger
    fills = []
    for _ in range(2000):
        fills += ex.advance(1)
        if ex.fetch_stop_order(SYMBOL, "stop-1").status.is_final:
            break
    state = ex.fetch_stop_order(SYMBOL, "stop-1")
    assert state.status is OrderStatus.FILLED and state.filled_qty == D("2")
    assert [f.client_order_id for f in fills] == ["stop-1"] * len(fills) and all(f.side is Side.SELL for f in fills)
    low = min(float(c) for c in ex.history().candles.low[ex.market.symbols.index(SYMBOL), -1:])
    assert low <= float(trigger)
    assert ex.balances().get("SOL") is None and ex.locked_balances() == {}
