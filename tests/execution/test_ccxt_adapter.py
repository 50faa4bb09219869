"""ccxt adapter: a real ccxt ``binance`` client whose ``urls['api']`` point at a local fake
server replaying recorded Binance responses (no network)."""

from __future__ import annotations

import logging
import math
import random
from decimal import Decimal as D

import ccxt
import pytest

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    BannedError,
    Exchange,
    ExchangeError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitedError,
)
from execution.adapters.ccxt_adapter import CcxtExchange
from execution.engine.ratelimit import LimiterRegistry
from execution.engine.types import Liquidity, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Recorded, Reply, fixture

API_KEY = "BNkey" + "A1b2C3d4" * 7
SECRET = "BNsecret" + "Z9y8X7w6" * 7
NOW = 1717200630.5


def bn(name: str):
    return fixture(f"binance/{name}.json")


@pytest.fixture
def server():
    with FakeExchangeServer() as srv:
        yield srv


@pytest.fixture
def clock():
    return FakeClock(NOW)


def make(server, clock, market_type: str = "spot", keys: bool = True) -> CcxtExchange:
    types = ["spot"] if market_type == "spot" else ["linear"]
    ex = CcxtExchange("binance", API_KEY if keys else None, SECRET if keys else None, market_type=market_type,
                      options={"fetchMarkets": {"types": types}, "fetchCurrencies": False},
                      clock=clock, sleep=clock.sleep, limiter_registry=LimiterRegistry(rng=random.Random(1)),
                      timeout_ms=300, lookup_delay=0.01)
    ex.client.enableRateLimit = False           # the fake clock paces; ccxt's real-time throttle is not needed
    for key in list(ex.client.urls["api"]):
        ex.client.urls["api"][key] = f"{server.url}/{key}"
    return ex


def spot(server, clock, **kw) -> CcxtExchange:
    server.add("GET", "/public/exchangeInfo", Reply(bn("exchange_info_spot")))
    return make(server, clock, **kw)


def limit_buy(**kw) -> OrderRequest:
    fields = {"qty": D("0.012345678"), "price": D("67000.005")} | kw
    return OrderRequest("t1-s1-0", "BTC/USDT", Side.BUY, OrderType.LIMIT, **fields)


def test_protocol_and_unknown_exchange():
    ex = CcxtExchange("binance")
    assert isinstance(ex, Exchange)
    assert ex.name == "ccxt:binance" and not ex.can_trade
    with pytest.raises(ValueError, match="unknown ccxt exchange"):
        CcxtExchange("no-such-exchange")
    with pytest.raises(ValueError, match="market_type"):
        CcxtExchange("binance", market_type="option")


def test_sandbox_mode_switches_to_testnet_urls():
    ex = CcxtExchange("binance", sandbox=True)
    assert "testnet" in ex.client.urls["api"]["public"]
    bybit = CcxtExchange("bybit", sandbox=True, market_type="swap")
    assert "testnet" in str(bybit.client.urls["api"])


def test_sandbox_refused_where_ccxt_has_none():
    with pytest.raises(ExchangeError, match="no sandbox"):
        CcxtExchange("upbit", sandbox=True)


def test_spot_markets_precision_and_flags(server, clock):
    markets = {m.symbol: m for m in spot(server, clock).markets()}
    btc = markets["BTC/USDT"]
    assert (btc.tick_size, btc.lot_size, btc.qty_decimals, btc.min_notional) == (D("0.01"), D("0.00001"), 5, D("5"))
    assert not btc.can_short and not btc.caution
    assert markets["LUNA/USDT"].caution          # status BREAK: inactive


def test_swap_markets_allow_shorts(server, clock):
    server.add("GET", "/fapiPublic/exchangeInfo", Reply(bn("exchange_info_fapi")))
    markets = make(server, clock, market_type="swap").markets()
    assert [m.symbol for m in markets] == ["BTC/USDT:USDT"]
    perp = markets[0]
    assert perp.can_short and perp.tick_size == D("0.1") and perp.lot_size == D("0.001")
    assert perp.min_notional == D("100")


def test_swap_short_with_reduce_only_passes_through(server, clock):
    server.add("GET", "/fapiPublic/exchangeInfo", Reply(bn("exchange_info_fapi")))
    server.add("POST", "/fapiPrivate/order", Reply({**bn("order_new"), "symbol": "BTCUSDT", "side": "SELL",
                                                   "clientOrderId": "t1-s2-0", "reduceOnly": True,
                                                   "price": "67000.1", "origQty": "0.002"}))
    ex = make(server, clock, market_type="swap")
    state = ex.create_order(OrderRequest("t1-s2-0", "BTC/USDT:USDT", Side.SELL, OrderType.LIMIT, qty=D("0.0025"),
                                         price=D("67000.05"), reduce_only=True))
    sent = server.calls("POST", "/fapiPrivate/order")[0]
    body = sent.body if isinstance(sent.body, dict) else {}
    params = {**{k: v[0] for k, v in sent.query.items()}, **body}
    if isinstance(sent.body, str):
        params.update(dict(p.split("=", 1) for p in sent.body.split("&")))
    assert params["side"] == "SELL" and params["reduceOnly"] == "true"
    assert params["quantity"] == "0.002" and params["price"] == "67000.1"       # sell rounds up
    assert params["newClientOrderId"] == "t1-s2-0"
    assert state.side is Side.SELL and state.client_order_id == "t1-s2-0"


def test_tickers_and_order_book(server, clock):
    server.add("GET", "/public/ticker/24hr", Reply(bn("ticker_24hr")))
    server.add("GET", "/public/depth", Reply(bn("depth")))
    ex = spot(server, clock, keys=False)
    (t,) = ex.tickers(["BTC/USDT"])
    assert (t.symbol, t.last, t.bid, t.ask) == ("BTC/USDT", 67500.01, 67500.0, 67500.01)
    assert t.value_24h == pytest.approx(1350000000.12) and t.change_24h_pct == pytest.approx(-0.096)
    book = ex.order_book("BTC/USDT", depth=2)
    assert book.bids.tolist() == [[67500.0, 1.2], [67499.99, 0.3]]
    assert book.asks[0].tolist() == [67500.01, 0.5]


def klines(rec: Recorded) -> Reply:
    """Binance semantics: bars from startTime, `limit` of them; no bar at minutes % 5 == 2."""
    start = int(rec.query["startTime"][0])
    limit = int(rec.query["limit"][0])
    rows, ts = [], start
    while len(rows) < limit and ts <= int(NOW) * 1000:
        if (ts // 60000) % 5 != 2:
            rows.append([ts, "1.0", "2.0", "0.5", str(ts / 1000), "3.0", ts + 59999, "3.0", 5, "1", "1", "0"])
        ts += 60000
    return Reply(rows)


def test_candles_are_paged_forward_with_nan_gaps(server, clock):
    server.add("GET", "/public/klines", klines)
    ex = spot(server, clock, keys=False)
    ex._ohlcv_page = 40
    candles = ex.candles("BTC/USDT", "1m", limit=100)
    assert candles.n_bars == 100 and candles.ts[-1] == int(NOW) // 60 * 60
    pages = server.calls("GET", "/public/klines")
    assert len(pages) >= 2 and all(int(p.query["limit"][0]) <= 40 for p in pages)
    gaps = (candles.ts // 60) % 5 == 2
    assert all(math.isnan(c) for c in candles.close[0][gaps])
    assert candles.close[0][~gaps].tolist() == candles.ts[~gaps].astype(float).tolist()


def test_create_order_applies_precision_and_client_id(server, clock):
    server.add("POST", "/private/order", Reply(bn("order_new")))
    ex = spot(server, clock)
    state = ex.create_order(limit_buy(tif=TimeInForce.IOC))
    sent = server.calls("POST", "/private/order")[0]
    params = dict(p.split("=", 1) for p in sent.body.split("&")) if isinstance(sent.body, str) else \
        {k: v[0] for k, v in sent.query.items()}
    assert params["newClientOrderId"] == "t1-s1-0"
    assert params["quantity"] == "0.01234" and params["price"] == "67000"
    assert params["timeInForce"] == "IOC"
    assert sent.headers["X-MBX-APIKEY"] == API_KEY
    assert state.status is OrderStatus.OPEN and state.exchange_order_id == "28"
    assert state.qty == D("0.01234") and state.price == D("67000")


def test_below_min_notional_refused_before_sending(server, clock):
    ex = spot(server, clock)
    with pytest.raises(InvalidOrderError, match="below the minimum 5"):
        ex.create_order(limit_buy(qty=D("0.00005"), price=D("67000")))
    assert server.calls("POST", "/private/order") == []


def test_fetch_order_by_client_id_with_partial_fill(server, clock):
    server.add("GET", "/private/order", Reply(bn("order_partial")))
    state = spot(server, clock).fetch_order("BTC/USDT", "t1-s1-0")
    assert server.calls("GET", "/private/order")[0].query["origClientOrderId"] == ["t1-s1-0"]
    assert state.status is OrderStatus.PARTIALLY_FILLED
    assert state.filled_qty == D("0.005") and state.avg_price == D("67000")


def test_cancel_by_client_id(server, clock):
    server.add("GET", "/private/order", Reply(bn("order_partial")))
    server.add("DELETE", "/private/order", Reply(bn("order_canceled")))
    state = spot(server, clock).cancel_order("BTC/USDT", "t1-s1-0")
    assert server.calls("DELETE", "/private/order")[0].query["orderId"] == ["28"]
    assert state.status is OrderStatus.CANCELLED and state.client_order_id == "t1-s1-0"
    assert state.filled_qty == D("0.005")


def test_unknown_order_is_not_found(server, clock):
    server.add("GET", "/private/order", Reply({"code": -2013, "msg": "Order does not exist."}, 400))
    with pytest.raises(OrderNotFoundError):
        spot(server, clock).fetch_order("BTC/USDT", "nope")


def test_create_timeout_is_not_resent_and_resolved_by_client_id(server, clock):
    server.add("POST", "/private/order", Reply(bn("order_new"), delay=0.8))
    server.add("GET", "/private/order", Reply({"code": -2013, "msg": "Order does not exist."}, 400),
               Reply(bn("order_partial")))
    state = spot(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/private/order")) == 1
    assert len(server.calls("GET", "/private/order")) == 2
    assert state.status is OrderStatus.PARTIALLY_FILLED


def test_create_timeout_unresolved_raises_ambiguous(server, clock):
    server.add("POST", "/private/order", Reply(bn("order_new"), delay=0.8))
    server.add("GET", "/private/order", Reply({"code": -2013, "msg": "Order does not exist."}, 400))
    with pytest.raises(AmbiguousOrderError, match="t1-s1-0 not found after 3 lookups"):
        spot(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/private/order")) == 1


def test_read_timeout_is_retried(server, clock):
    server.add("GET", "/public/depth", Reply(bn("depth"), delay=0.8), Reply(bn("depth")))
    book = spot(server, clock, keys=False).order_book("BTC/USDT")
    assert book.best_bid == 67500.0
    assert len(server.calls("GET", "/public/depth")) == 2


def test_429_backs_off_and_retries_reads(server, clock):
    server.add("GET", "/public/depth", Reply({"code": -1003, "msg": "Too many requests."}, 429), Reply(bn("depth")))
    ex = spot(server, clock, keys=False)
    assert ex.order_book("BTC/USDT").best_ask == 67500.01
    assert len(server.calls("GET", "/public/depth")) == 2
    assert sum(clock.sleeps) > 0


def test_429_on_create_is_raised_not_retried(server, clock):
    server.add("POST", "/private/order", Reply({"code": -1003, "msg": "Too many requests."}, 429))
    with pytest.raises(RateLimitedError):
        spot(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/private/order")) == 1


def test_418_ban_stops_further_calls(server, clock):
    server.add("GET", "/private/account", Reply(raw="", status=418))
    ex = spot(server, clock)
    with pytest.raises(BannedError):
        ex.balances()
    with pytest.raises(BannedError, match="not sent"):
        ex.fetch_order("BTC/USDT", "t1-s1-0")
    assert len(server.calls("GET", "/private/account")) == 1
    assert server.calls("GET", "/private/order") == []


def test_malformed_json_is_an_exchange_error(server, clock):
    server.add("GET", "/public/depth", Reply(raw="{not json"))
    with pytest.raises(ExchangeError, match="ccxt:binance fetch_order_book"):
        spot(server, clock, keys=False).order_book("BTC/USDT")


def test_balances_and_my_trades(server, clock):
    server.add("GET", "/private/account", Reply(bn("account")))
    server.add("GET", "/private/myTrades", Reply(bn("my_trades")))
    ex = spot(server, clock)
    assert ex.balances() == {"BTC": D("0.5"), "USDT": D("1000")}
    (fill,) = ex.my_trades("BTC/USDT", since=1717200000)
    assert server.calls("GET", "/private/myTrades")[0].query["startTime"] == ["1717200000000"]
    assert (fill.price, fill.qty, fill.liquidity) == (D("67000"), D("0.005"), Liquidity.MAKER)
    assert fill.fee == D("0.000005") * D("67000")          # BTC commission converted to USDT


def test_read_only_client_refuses_private_calls(server, clock):
    ex = spot(server, clock, keys=False)
    with pytest.raises(AuthenticationError, match="needs API keys"):
        ex.balances()
    assert server.requests == []


def test_auth_error_maps_and_never_leaks_keys(server, clock, caplog):
    def echo(rec: Recorded) -> Reply:
        return Reply({"code": -2015, "msg": f"Invalid API-key {rec.headers.get('X-MBX-APIKEY')} {SECRET}"}, 401)

    server.add("GET", "/private/account", echo)
    ex = spot(server, clock)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(AuthenticationError) as exc:
            ex.balances()
    text = f"{exc.value}\n{exc.value!r}\n{ex!r}\n{caplog.text}"
    assert "***" in str(exc.value)
    assert API_KEY not in text and SECRET not in text


def test_ccxt_exception_mapping_is_exhaustive_for_order_errors(server, clock):
    """The ccxt hierarchy has OrderNotFound under InvalidOrder; the specific class must win."""
    ex = spot(server, clock)
    limiter = ex._registry.get(ex._account_id, "order")
    assert isinstance(ex._map(ccxt.OrderNotFound("x"), "c", True, limiter), OrderNotFoundError)
    assert isinstance(ex._map(ccxt.InvalidOrder("x"), "c", True, limiter), InvalidOrderError)
    assert isinstance(ex._map(ccxt.RequestTimeout("x"), "c", True, limiter), AmbiguousOrderError)
    assert not isinstance(ex._map(ccxt.RequestTimeout("x"), "c", False, limiter), AmbiguousOrderError)
    # Maintenance during a create is not a definite rejection (issue 21): the order is looked up.
    assert isinstance(ex._map(ccxt.OnMaintenance("x"), "c", True, limiter), AmbiguousOrderError)
    assert not isinstance(ex._map(ccxt.OnMaintenance("x"), "c", False, limiter), AmbiguousOrderError)
