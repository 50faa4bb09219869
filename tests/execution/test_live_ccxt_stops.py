"""Resting stops and capabilities on a ccxt venue [RK-5], [EXE-1]: a real ccxt ``binance``
client against the local fake server (no network)."""

from __future__ import annotations

import copy
from decimal import Decimal as D

import pytest

from execution.adapters.base import InvalidOrderError, StopOrders, supports_stop_orders
from execution.adapters.ccxt_adapter import CcxtExchange
from execution.engine.types import OrderRequest, OrderStatus, OrderType, Side
from tests.execution.fake_http import Reply
from tests.execution.test_ccxt_adapter import bn, clock, make, server  # noqa: F401  (fixtures)

STOP_NEW = {"symbol": "BTCUSDT", "orderId": 31, "orderListId": -1, "clientOrderId": "qw1-p2-t1",
            "transactTime": 1717200630000, "price": "0.00000000", "origQty": "0.01234000", "executedQty": "0.00000000",
            "cummulativeQuoteQty": "0.00000000", "status": "NEW", "timeInForce": "GTC", "type": "STOP_LOSS",
            "side": "SELL", "stopPrice": "60000.01000000", "workingTime": -1, "fills": [],
            "selfTradePreventionMode": "NONE"}


def info_with_stop_loss():
    info = copy.deepcopy(bn("exchange_info_spot"))
    for s in info["symbols"]:
        s["orderTypes"] = sorted(set(s["orderTypes"]) | {"STOP_LOSS"})
    return info


def stop_request(qty: str = "0.012345678") -> OrderRequest:
    return OrderRequest("qw1-p2-t1", "BTC/USDT", Side.SELL, OrderType.MARKET, qty=D(qty))


def test_a_stop_loss_rests_on_the_venue_with_its_client_id(server, clock):  # noqa: F811
    server.add("GET", "/public/exchangeInfo", Reply(info_with_stop_loss()))
    server.add("POST", "/private/order", Reply(STOP_NEW))
    ex = make(server, clock)
    assert isinstance(ex, StopOrders) and supports_stop_orders(ex)
    state = ex.create_stop_order(stop_request(), D("60000.004"))
    sent = server.calls("POST", "/private/order")[0]
    params = dict(p.split("=", 1) for p in sent.body.split("&")) if isinstance(sent.body, str) else \
        {k: v[0] for k, v in sent.query.items()}
    assert params["type"] == "STOP_LOSS" and params["side"] == "SELL"
    assert params["stopPrice"] == "60000.01"                 # a long's stop rounds up, never looser
    assert params["quantity"] == "0.01234" and params["newClientOrderId"] == "qw1-p2-t1"
    assert state.status is OrderStatus.OPEN and state.exchange_order_id == "31"


def test_stop_refused_before_sending_where_the_market_has_no_stop_loss(server, clock):  # noqa: F811
    server.add("GET", "/public/exchangeInfo", Reply(bn("exchange_info_spot")))   # LIMIT, MARKET, STOP_LOSS_LIMIT...
    ex = make(server, clock)
    with pytest.raises(InvalidOrderError, match="no stop-loss market orders"):
        ex.create_stop_order(stop_request(), D("60000"))
    assert server.calls("POST", "/private/order") == []


def test_stop_lookup_uses_the_trigger_book_where_the_venue_keeps_one(server, clock):  # noqa: F811
    server.add("GET", "/public/exchangeInfo", Reply(info_with_stop_loss()))
    server.add("GET", "/private/order", Reply(STOP_NEW))
    ex = make(server, clock)
    assert ex.fetch_stop_order("BTC/USDT", "qw1-p2-t1").status is OrderStatus.OPEN
    assert server.calls("GET", "/private/order")[0].query["origClientOrderId"] == ["qw1-p2-t1"]
    assert not ex._trigger_book()                                 # Binance spot: stops are plain orders
    assert CcxtExchange("bybit", "k", "s")._trigger_book() and CcxtExchange("okx", "k", "s", password="p")._trigger_book()
