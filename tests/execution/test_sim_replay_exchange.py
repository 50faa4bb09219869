"""SimExchange and ReplayExchange: the Exchange protocol on the simulator / replayed candles."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pytest

from execution.adapters.base import Exchange, InsufficientFundsError, InvalidOrderError, OrderNotFoundError
from execution.adapters.replay import ReplayExchange, load_candle_files
from execution.adapters.sim import SimExchange
from execution.engine.fillmodel import FillConfig
from execution.engine.precision import round_krw_price
from execution.engine.sim import SimConfig
from execution.engine.types import Candles, OrderRequest, OrderStatus, OrderType, Side
from tests.conftest import require_shared_data

D = Decimal


def sim(**kw) -> SimExchange:
    return SimExchange(SimConfig(seed=21, n_markets=6), balances={"KRW": D("10000000")}, warmup_bars=300, **kw)


def test_both_venues_implement_the_exchange_protocol():
    assert isinstance(sim(), Exchange)
    t = np.array([0, 60])
    c = Candles(("KRW-BTC",), "1m", t, *(np.full((1, 2), 100.0),) * 4, np.ones((1, 2)))
    replay = ReplayExchange(c)
    assert isinstance(replay, Exchange) and replay.can_trade and replay.name == "replay"


def test_market_buy_settles_balances_exactly():
    ex = sim()
    state = ex.create_order(OrderRequest("t1-s1-0", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("100000")))
    assert state.status is OrderStatus.FILLED and state.exchange_order_id == "sim-1"
    spent = sum((f.price * f.qty for f in state.fills), D(0))
    bal = ex.balances()
    assert bal["KRW"] == D("10000000") - spent - state.fee
    assert bal["XRP"] == state.filled_qty
    assert ex.locked_balances() == {}
    assert ex.my_trades("KRW-XRP") == state.fills


def test_resting_limit_locks_funds_and_fills_when_price_trades_through():
    ex = sim()
    book = ex.order_book("KRW-BTC")
    price = round_krw_price(D(repr(book.best_bid * 0.999)), Side.BUY, ex.now)
    req = OrderRequest("t1-s2-0", "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D("0.001"), price=price)
    state = ex.create_order(req)
    assert state.status is OrderStatus.OPEN
    assert ex.locked_balances()["KRW"] == price * D("0.001") * D("1.0005")
    assert [o.client_order_id for o in ex.open_orders("KRW-BTC")] == ["t1-s2-0"]
    fills = []
    for _ in range(3000):
        fills += ex.advance()
        if ex.fetch_order("KRW-BTC", "t1-s2-0").status.is_final:
            break
    final = ex.fetch_order("KRW-BTC", "t1-s2-0")
    assert final.status is OrderStatus.FILLED and final.filled_qty == D("0.001")
    assert all(f.price == price and f.liquidity.value == "maker" for f in fills)
    hist = ex.history().candles
    i = hist.index("KRW-BTC")
    first_fill_bar = np.flatnonzero(hist.ts + 60 == fills[0].ts)[0]
    assert hist.low[i, first_fill_bar] < float(price)
    assert ex.locked_balances() == {}
    assert ex.balances()["BTC"] == D("0.001")


def test_cancel_releases_the_lock_and_unknown_orders_raise():
    ex = sim()
    book = ex.order_book("KRW-ETH")
    price = round_krw_price(D(repr(book.best_bid * 0.9)), Side.BUY, ex.now)
    ex.create_order(OrderRequest("c1", "KRW-ETH", Side.BUY, OrderType.LIMIT, qty=D("0.01"), price=price))
    cancelled = ex.cancel_order("KRW-ETH", "c1")
    assert cancelled.status is OrderStatus.CANCELLED
    assert ex.balances() == {"KRW": D("10000000")} and ex.locked_balances() == {}
    with pytest.raises(OrderNotFoundError):
        ex.fetch_order("KRW-ETH", "nope")
    with pytest.raises(OrderNotFoundError):
        ex.cancel_order("KRW-XRP", "c1")


def test_rejections_raise_and_leave_no_trace():
    ex = sim()
    with pytest.raises(InsufficientFundsError):
        ex.create_order(OrderRequest("c1", "KRW-BTC", Side.BUY, OrderType.MARKET, quote_amount=D("20000000")))
    with pytest.raises(InsufficientFundsError):
        ex.create_order(OrderRequest("c2", "KRW-BTC", Side.SELL, OrderType.MARKET, qty=D("1")))
    with pytest.raises(InvalidOrderError, match="below_min_notional"):
        ex.create_order(OrderRequest("c3", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("4000")))
    with pytest.raises(InvalidOrderError, match="unknown market"):
        ex.create_order(OrderRequest("c4", "KRW-NOPE", Side.BUY, OrderType.MARKET, quote_amount=D("10000")))
    ex.create_order(OrderRequest("c5", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("10000")))
    with pytest.raises(InvalidOrderError, match="duplicate"):
        ex.create_order(OrderRequest("c5", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("10000")))
    assert [o.client_order_id for o in ex._orders.values()] == ["c5"]


def test_clock_moves_only_when_advanced_and_candles_are_complete_bars():
    ex = sim()
    start = ex.now
    assert ex.now == start
    ex.advance(5)
    assert ex.now == start + 300
    ex.advance_to(start + 3600)
    assert ex.now == start + 3600
    c1 = ex.candles("KRW-BTC", "1m", limit=10)
    assert c1.n_bars == 10 and c1.ts[-1] + 60 == ex.now
    h1 = ex.candles("KRW-BTC", "1h", limit=5)
    assert np.all(h1.ts + 3600 <= ex.now)


def test_sim_exchange_is_deterministic_and_resumes_from_json_state():
    def run(ex):
        ex.create_order(OrderRequest("a", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("500000")))
        bid = ex.order_book("KRW-XRP").best_bid
        price = round_krw_price(D(repr(bid * 1.003)), Side.SELL, ex.now)
        qty = ex.balances()["XRP"]
        ex.create_order(OrderRequest("b", "KRW-XRP", Side.SELL, OrderType.LIMIT, qty=qty, price=price))
        ex.advance(200)
        return ex

    a, b = run(sim()), run(sim())
    assert a.get_state() == b.get_state()
    resumed = SimExchange.from_state(json.loads(json.dumps(a.get_state())), rebuild_history=True)
    np.testing.assert_array_equal(resumed.history().candles.close, a.history().candles.close)
    a.advance(100)
    resumed.advance(100)
    assert a.get_state() == resumed.get_state()
    assert a.balances() == resumed.balances()


def test_latency_defers_execution_to_the_next_bar():
    ex = sim(fill_config=FillConfig(latency_ms=300))
    state = ex.create_order(OrderRequest("c1", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("100000")))
    assert state.status is OrderStatus.NEW and state.fills == []
    fills = ex.advance()
    assert fills and fills[0].ts == ex.now
    assert ex.fetch_order("KRW-XRP", "c1").status is OrderStatus.FILLED


def test_replay_reveals_bars_without_lookahead_and_fills_limits():
    path = require_shared_data("upbit_azuremooni/upbit_KRW-BTC_1m.csv.gz")
    data = load_candle_files([path])
    ex = ReplayExchange(data, balances={"KRW": D("50000000")}, start_bar=120)
    c = data.candles
    assert ex.now == int(c.ts[119]) + 60
    seen = ex.candles("KRW-BTC", "1m", limit=1000)
    assert seen.n_bars == 120 and seen.ts[-1] == c.ts[119]
    book = ex.order_book("KRW-BTC")
    assert book.best_bid <= float(c.close[0, 119]) <= book.best_ask
    future_low = np.nanmin(c.low[0, 120:180])
    price = round_krw_price(D(repr(float(future_low) + 5000)), Side.BUY, ex.now)
    assert price < D(repr(book.best_ask))                     # it rests (the data dips in the next hour)
    ex.create_order(OrderRequest("r1", "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D("0.01"), price=price))
    fills = ex.advance(60)
    assert fills and all(f.price == price for f in fills)
    j = np.flatnonzero(c.ts + 60 == fills[0].ts)[0]
    assert c.low[0, j] < float(price) and j >= 120
    assert ex.balances()["BTC"] == sum((f.qty for f in fills), D(0))
    state = ex.get_state()
    again = ReplayExchange(data, balances={}, start_bar=1)
    again.restore_state(json.loads(json.dumps(state)))
    assert again.now == ex.now and again.balances() == ex.balances()


def test_replay_usdt_market_uses_an_inferred_fixed_tick():
    path = require_shared_data("binance_selskas_2021/binance_ETH-USDT_1m.csv.gz")
    ex = ReplayExchange(load_candle_files([path]), balances={"USDT": D("10000")}, start_bar=60)
    info = ex.markets()[0]
    assert info.quote == "USDT" and info.tick_size == D("0.01") and info.min_notional == 0
    state = ex.create_order(OrderRequest("u1", "ETH-USDT", Side.BUY, OrderType.MARKET, qty=D("0.5")))
    assert state.status is OrderStatus.FILLED
    assert all(f.price % D("0.01") == 0 for f in state.fills)
    tickers = ex.tickers()
    assert tickers[0].symbol == "ETH-USDT" and tickers[0].value_24h > 0
