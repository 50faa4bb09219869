"""Upbit adapter against a local fake server with recorded Upbit responses (no network)."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from decimal import Decimal as D
from urllib.parse import unquote

import jwt
import numpy as np
import pytest

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    BannedError,
    Exchange,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitedError,
)
from execution.adapters.upbit import UpbitExchange
from execution.engine.ratelimit import LimiterRegistry
from execution.engine.types import Liquidity, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Recorded, Reply, fixture

ACCESS = "AKupbitACCESSkey0123456789abcdefghijklmn"
SECRET = "SKupbitSECRETkey9876543210zyxwvutsrqponm"
NOW = 1717200630.5   # 2024-06-01T00:10:30.5Z


def upbit_fixture(name: str):
    return fixture(f"upbit/{name}.json")


@pytest.fixture
def server():
    with FakeExchangeServer() as srv:
        yield srv


@pytest.fixture
def clock():
    return FakeClock(NOW)


def make(server, clock, keys: bool = True, **kwargs) -> UpbitExchange:
    return UpbitExchange(ACCESS if keys else None, SECRET if keys else None, base_url=server.url, clock=clock,
                         sleep=clock.sleep, limiter_registry=LimiterRegistry(rng=random.Random(3)),
                         rng=random.Random(5), timeout=(1.0, 0.3), lookup_delay=0.01, **kwargs)


def verify_jwt(rec: Recorded) -> dict:
    """What Upbit checks: HS256 signature with the secret, and the query hash of the parameters."""
    token = rec.headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["access_key"] == ACCESS
    if rec.method == "POST":
        source = "&".join(f"{k}={v}" for k, v in rec.body.items())
    else:
        source = unquote(rec.raw_query)
    if source:
        assert claims["query_hash"] == hashlib.sha512(source.encode()).hexdigest()
        assert claims["query_hash_alg"] == "SHA512"
    return claims


def limit_buy(cid: str = "t7-s42-0", price: str = "95000000", qty: str = "0.0001", **kw) -> OrderRequest:
    return OrderRequest(cid, "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D(qty), price=D(price), **kw)


# ---------------------------------------------------------------------------- market data

def test_satisfies_the_exchange_protocol(server, clock):
    ex = make(server, clock)
    assert isinstance(ex, Exchange)
    assert ex.name == "upbit" and ex.can_trade
    assert not make(server, clock, keys=False).can_trade


def test_markets_with_caution_flags(server, clock):
    server.add("GET", "/v1/market/all", Reply(upbit_fixture("market_all")))
    markets = {m.symbol: m for m in make(server, clock, keys=False).markets()}
    assert server.requests[0].query == {"isDetails": ["true"]}
    btc = markets["KRW-BTC"]
    assert (btc.base, btc.quote, btc.min_notional, btc.tick_size, btc.caution) == ("BTC", "KRW", D("5000"), None,
                                                                                  False)
    assert markets["KRW-XRP"].caution          # market_event.caution.PRICE_FLUCTUATIONS
    assert markets["KRW-LOOM"].caution         # market_warning CAUTION
    assert markets["BTC-ETH"].min_notional == D("0.00005")
    assert markets["BTC-ETH"].tick_size == D("0.00000001")
    assert not any(m.can_short for m in markets.values())


def test_tickers_join_ticker_and_top_of_book(server, clock):
    server.add("GET", "/v1/ticker", Reply(upbit_fixture("ticker")))
    server.add("GET", "/v1/orderbook", Reply(upbit_fixture("orderbook")))
    tickers = {t.symbol: t for t in make(server, clock, keys=False).tickers(["KRW-BTC", "KRW-XRP"])}
    assert server.calls("GET", "/v1/ticker")[0].query == {"markets": ["KRW-BTC,KRW-XRP"]}
    btc = tickers["KRW-BTC"]
    assert (btc.last, btc.bid, btc.ask, btc.ts) == (95000000.0, 95000000.0, 95001000.0, 1717200630)
    assert btc.value_24h == pytest.approx(182345678901.25)
    assert tickers["KRW-XRP"].change_24h_pct == pytest.approx(-0.69348128)


def test_candles_put_gaps_on_the_grid_as_nan(server, clock):
    server.add("GET", "/v1/candles/minutes/1", Reply(upbit_fixture("candles_minutes_1")))
    candles = make(server, clock, keys=False).candles("KRW-BTC", "1m", limit=5)
    req = server.requests[0]
    assert req.query == {"market": ["KRW-BTC"], "to": ["2024-06-01T00:11:00Z"], "count": ["5"]}
    assert candles.ts.tolist() == [1717200360 + 60 * i for i in range(5)]   # 00:06 .. 00:10
    close = candles.close[0]
    assert math.isnan(close[0]) and math.isnan(close[2])                   # 00:06, 00:08: no trade
    assert close[1] == 94980000.0 and close[3] == 95000000.0 and close[4] == 95005000.0
    assert candles.volume[0].tolist()[3:] == [2.0, 1.0]


def synthetic_candles(rec: Recorded) -> Reply:
    """Upbit semantics: the `count` most recent candles strictly before `to`; none at minutes % 7 == 3."""
    from datetime import UTC, datetime

    to = int(datetime.fromisoformat(rec.query["to"][0].replace("Z", "+00:00")).timestamp())
    count = int(rec.query["count"][0])
    rows, ts = [], to - 60
    earliest = 1717200600 - 1000 * 60
    while len(rows) < count and ts >= earliest:
        if (ts // 60) % 7 != 3:
            iso = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
            rows.append({"market": "KRW-BTC", "candle_date_time_utc": iso, "opening_price": ts,
                         "high_price": ts + 2, "low_price": ts - 2, "trade_price": ts + 1,
                         "timestamp": ts * 1000, "candle_acc_trade_price": 1.0,
                         "candle_acc_trade_volume": 0.5, "unit": 1})
        ts -= 60
    return Reply(rows)


def test_candles_page_backwards_in_pages_of_200(server, clock):
    server.add("GET", "/v1/candles/minutes/1", synthetic_candles)
    candles = make(server, clock, keys=False).candles("KRW-BTC", "1m", limit=450)
    counts = [int(r.query["count"][0]) for r in server.requests]
    assert counts[0] == 200 and all(c <= 200 for c in counts)
    assert candles.n_bars == 450
    assert np.all(np.diff(candles.ts) == 60)
    missing = np.isnan(candles.close[0])
    assert np.array_equal(missing, (candles.ts // 60) % 7 == 3)
    assert np.array_equal(candles.open[0][~missing], candles.ts[~missing].astype(float))


def test_candles_since_spans_forward_from_since(server, clock):
    server.add("GET", "/v1/candles/minutes/1", synthetic_candles)
    since = 1717200600 - 300 - 17        # rounds up to the grid
    candles = make(server, clock, keys=False).candles("KRW-BTC", "1m", since=since, limit=3)
    assert candles.ts.tolist() == [1717200300, 1717200360, 1717200420]
    assert server.requests[0].query["to"] == ["2024-06-01T00:08:00Z"]   # exclusive end


def test_order_book_and_instruments(server, clock):
    server.add("GET", "/v1/orderbook", Reply(upbit_fixture("orderbook")[:1]))
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    ex = make(server, clock, keys=False)
    book = ex.order_book("KRW-BTC", depth=2)
    assert book.bids.tolist() == [[95000000.0, 0.3], [94999000.0, 1.1]]
    assert book.asks.tolist() == [[95001000.0, 0.12], [95002000.0, 0.5]]
    assert book.best_bid == 95000000.0
    assert ex.instruments(["KRW-BTC"]) == {"KRW-BTC": D("1000")}


# ---------------------------------------------------------------------------- account and orders

def test_balances_are_signed_and_free(server, clock):
    server.add("GET", "/v1/accounts", Reply(upbit_fixture("accounts")))
    ex = make(server, clock)
    assert ex.balances() == {"KRW": D("1000000.5"), "BTC": D("0.01234567")}
    assert ex.balances_detail()["KRW"] == (D("1000000.5"), D("20000"))
    verify_jwt(server.requests[0])


def test_read_only_client_refuses_private_calls_without_network(server, clock):
    ex = make(server, clock, keys=False)
    with pytest.raises(AuthenticationError, match="needs API keys"):
        ex.balances()
    with pytest.raises(AuthenticationError):
        UpbitExchange(ACCESS, None)
    assert server.requests == []


def test_create_limit_order_rounds_to_tick_and_sends_identifier(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply(upbit_fixture("order_created"), 201))
    ex = make(server, clock)
    state = ex.create_order(limit_buy(price="95000999.5", qty="0.000123456789", tif=TimeInForce.POST_ONLY))
    post = server.calls("POST", "/v1/orders")[0]
    assert post.body == {"market": "KRW-BTC", "side": "bid", "identifier": "t7-s42-0", "ord_type": "limit",
                         "price": "95000000", "volume": "0.00012345", "time_in_force": "post_only"}
    verify_jwt(post)
    assert state.status is OrderStatus.OPEN
    assert state.client_order_id == "t7-s42-0"
    assert state.exchange_order_id == "cdd92199-2897-4e14-9448-f923320408ad"
    assert state.price == D("95000000")


def test_live_instrument_tick_coarser_than_table_wins(server, clock):
    """If Upbit serves a coarser tick than our table, the price goes on a grid valid for both."""
    server.add("GET", "/v1/orderbook/instruments",
               Reply([{"market": "KRW-XRP", "quote_currency": "KRW", "tick_size": "1"}]))
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_created")))
    server.add("POST", "/v1/orders/test", Reply(upbit_fixture("order_created")))
    ex = make(server, clock)
    ex.test_order(OrderRequest("c1", "KRW-XRP", Side.SELL, OrderType.LIMIT, qty=D("10"), price=D("716.3")))
    assert server.calls("POST", "/v1/orders/test")[0].body["price"] == "717"


@pytest.mark.parametrize(("request_", "body"), [
    (OrderRequest("c", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("10000")),
     {"ord_type": "price", "price": "10000"}),
    (OrderRequest("c", "KRW-XRP", Side.SELL, OrderType.MARKET, qty=D("20")),
     {"ord_type": "market", "volume": "20"}),
    (OrderRequest("c", "KRW-XRP", Side.BUY, OrderType.MARKET, quote_amount=D("10000"), tif=TimeInForce.IOC),
     {"ord_type": "best", "price": "10000", "time_in_force": "ioc"}),
    (OrderRequest("c", "KRW-XRP", Side.SELL, OrderType.MARKET, qty=D("20"), tif=TimeInForce.FOK),
     {"ord_type": "best", "volume": "20", "time_in_force": "fok"}),
    (OrderRequest("c", "KRW-XRP", Side.BUY, OrderType.LIMIT, qty=D("20"), price=D("716"), tif=TimeInForce.IOC),
     {"ord_type": "limit", "price": "716", "volume": "20", "time_in_force": "ioc"}),
])
def test_order_types_map_to_upbit_ord_type(server, clock, request_, body):
    server.add("GET", "/v1/orderbook/instruments",
               Reply([{"market": "KRW-XRP", "quote_currency": "KRW", "tick_size": "1"}]))
    server.add("POST", "/v1/orders/test", Reply(upbit_fixture("order_created")))
    make(server, clock).test_order(request_)
    sent = server.calls("POST", "/v1/orders/test")[0].body
    assert sent == {"market": "KRW-XRP", "side": "bid" if request_.side is Side.BUY else "ask",
                    "identifier": "c", **body}


def test_below_minimum_order_is_refused_before_sending(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    with pytest.raises(InvalidOrderError, match="below the minimum 5000"):
        make(server, clock).create_order(limit_buy(qty="0.00005", price="95000000"))
    assert server.calls("POST", "/v1/orders") == []


def test_post_timeout_is_not_retried_and_is_resolved_by_identifier(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply(upbit_fixture("order_created"), 201, delay=0.8))
    server.add("GET", "/v1/order",
               Reply({"error": {"name": "order_not_found", "message": "주문을 찾지 못했습니다."}}, 404),
               Reply(upbit_fixture("order_created")))
    state = make(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/v1/orders")) == 1
    lookups = server.calls("GET", "/v1/order")
    assert [r.query for r in lookups] == [{"identifier": ["t7-s42-0"]}] * 2
    verify_jwt(lookups[1])
    assert state.status is OrderStatus.OPEN and state.client_order_id == "t7-s42-0"


def test_post_timeout_unresolved_stays_ambiguous(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply(upbit_fixture("order_created"), 201, delay=0.8))
    server.add("GET", "/v1/order", Reply({"error": {"name": "order_not_found", "message": "not found"}}, 404))
    with pytest.raises(AmbiguousOrderError, match="t7-s42-0 not found after 3 lookups"):
        make(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/v1/orders")) == 1
    assert len(server.calls("GET", "/v1/order")) == 3


def test_post_5xx_is_ambiguous_and_looked_up(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply({"error": {"name": "server_error", "message": "oops"}}, 502))
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_created")))
    assert make(server, clock).create_order(limit_buy()).exchange_order_id.startswith("cdd92199")
    assert len(server.calls("POST", "/v1/orders")) == 1


def test_get_timeout_is_retried(server, clock):
    server.add("GET", "/v1/ticker", Reply([], delay=0.8), Reply(upbit_fixture("ticker")[:1]))
    server.add("GET", "/v1/orderbook", Reply(upbit_fixture("orderbook")[:1]))
    tickers = make(server, clock, keys=False).tickers(["KRW-BTC"])
    assert [t.symbol for t in tickers] == ["KRW-BTC"]
    assert len(server.calls("GET", "/v1/ticker")) == 2
    assert clock.sleeps and clock.sleeps[0] > 0          # jittered backoff before the retry


def test_429_is_backed_off_and_retried_for_reads(server, clock):
    server.add("GET", "/v1/orderbook",
               Reply({"error": {"name": "too_many_requests"}}, 429, {"Remaining-Req": "group=orderbook; min=0; sec=0"}),
               Reply(upbit_fixture("orderbook")[:1], 200, {"Remaining-Req": "group=orderbook; min=599; sec=9"}))
    ex = make(server, clock, keys=False)
    assert ex.order_book("KRW-BTC").best_ask == 95001000.0
    assert len(server.requests) == 2
    assert sum(clock.sleeps) > 0


def test_429_on_order_post_is_raised_not_retried(server, clock):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply({"error": {"name": "too_many_requests"}}, 429, {"Retry-After": "2"}))
    with pytest.raises(RateLimitedError) as exc:
        make(server, clock).create_order(limit_buy())
    assert exc.value.retry_after >= 2.0
    assert len(server.calls("POST", "/v1/orders")) == 1


def test_429_exhausting_retries_raises_rate_limited(server, clock):
    server.add("GET", "/v1/ticker", Reply({"error": {"name": "too_many_requests"}}, 429))
    with pytest.raises(RateLimitedError):
        make(server, clock, keys=False, max_wait=1000.0).tickers(["KRW-BTC"])
    assert len(server.requests) == 4                      # 1 + 3 retries


def test_418_stops_every_further_call(server, clock):
    server.add("GET", "/v1/accounts", Reply({"error": {"name": "banned"}}, 418, {"Retry-After": "120"}))
    ex = make(server, clock)
    with pytest.raises(BannedError) as exc:
        ex.balances()
    assert exc.value.until_ts == pytest.approx(NOW + 120)
    with pytest.raises(BannedError, match="not sent"):
        ex.balances()
    with pytest.raises(BannedError, match="not sent"):
        ex.fetch_order("KRW-BTC", "x")
    assert len(server.requests) == 1
    clock.now += 121
    server.add("GET", "/v1/accounts", Reply(upbit_fixture("accounts")))
    assert ex.balances()["KRW"] == D("1000000.5")


def test_remaining_req_is_honoured(server, clock):
    server.add("GET", "/v1/ticker", Reply(upbit_fixture("ticker")[:1], 200,
                                          {"Remaining-Req": "group=ticker; min=100; sec=0"}))
    server.add("GET", "/v1/orderbook", Reply(upbit_fixture("orderbook")[:1]))
    ex = make(server, clock, keys=False)
    ex.tickers(["KRW-BTC"])
    assert clock.sleeps == []
    ex.tickers(["KRW-BTC"])
    assert clock.sleeps == [pytest.approx(0.5)]           # waited for the next second (NOW = x.5)


def test_malformed_json_is_a_clear_exchange_error(server, clock):
    server.add("GET", "/v1/market/all", Reply(raw="<html>502 Bad Gateway</html>"))
    with pytest.raises(ExchangeError, match=r"upbit GET /v1/market/all: malformed JSON in HTTP 200"):
        make(server, clock, keys=False).markets()


def test_unexpected_json_shape_is_an_exchange_error(server, clock):
    server.add("GET", "/v1/market/all", Reply({"market": "KRW-BTC"}))
    with pytest.raises(ExchangeError, match="expected a JSON list"):
        make(server, clock, keys=False).markets()


def test_partial_fill_then_cancel(server, clock):
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_partial_cancelled")))
    state = make(server, clock).fetch_order("KRW-BTC", "t7-s42-0")
    assert state.status is OrderStatus.CANCELLED
    assert state.filled_qty == D("0.0002") and state.qty == D("0.0003")
    assert state.avg_price == D("95000000")
    assert state.fee == D("9.5")
    assert [f.qty for f in state.fills] == [D("0.00015"), D("0.00005")]
    assert sum(f.fee for f in state.fills) == D("9.5")
    assert [f.liquidity for f in state.fills] == [Liquidity.TAKER, Liquidity.MAKER]
    assert state.ts == 1717200630


def test_market_buy_ending_in_cancel_with_fills_is_filled(server, clock):
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_market_buy_done")))
    state = make(server, clock).fetch_order("KRW-XRP", "t7-s43-0")
    assert state.status is OrderStatus.FILLED
    assert state.type is OrderType.MARKET and state.quote_amount == D("10000") and state.qty is None
    assert state.avg_price == D("9999.72") / D("13.96648044")


def test_fetch_unknown_order_raises_not_found(server, clock):
    server.add("GET", "/v1/order", Reply({"error": {"name": "order_not_found", "message": "x"}}, 404))
    with pytest.raises(OrderNotFoundError):
        make(server, clock).fetch_order("KRW-BTC", "nope")


def test_cancel_by_identifier(server, clock):
    server.add("DELETE", "/v1/order", Reply(upbit_fixture("order_created")))
    state = make(server, clock).cancel_order("KRW-BTC", "t7-s42-0")
    req = server.calls("DELETE", "/v1/order")[0]
    assert req.query == {"identifier": ["t7-s42-0"]}
    verify_jwt(req)
    assert state.client_order_id == "t7-s42-0"


def test_cancel_timeout_is_resolved_by_lookup(server, clock):
    server.add("DELETE", "/v1/order", Reply(upbit_fixture("order_created"), delay=0.8))
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_partial_cancelled")))
    state = make(server, clock).cancel_order("KRW-BTC", "t7-s42-0")
    assert state.status is OrderStatus.CANCELLED
    assert len(server.calls("DELETE", "/v1/order")) == 1


def test_open_orders_query_and_partial_state(server, clock):
    server.add("GET", "/v1/orders/open", Reply(upbit_fixture("orders_open")))
    orders = make(server, clock).open_orders("KRW-BTC")
    req = server.requests[0]
    assert req.query == {"states[]": ["wait", "watch"], "limit": ["100"], "page": ["1"], "market": ["KRW-BTC"]}
    verify_jwt(req)
    assert [o.status for o in orders] == [OrderStatus.PARTIALLY_FILLED]


def test_my_trades_from_closed_orders(server, clock):
    server.add("GET", "/v1/orders/closed", Reply([upbit_fixture("order_partial_cancelled")]))
    server.add("GET", "/v1/orders/open", Reply([]))
    server.add("GET", "/v1/order", Reply(upbit_fixture("order_partial_cancelled")))
    fills = make(server, clock).my_trades("KRW-BTC", since=1717200000)
    assert [f.trade_id for f in fills] == ["795dff29-bba6-49b2-baab-63473ab7931c",
                                           "895dff29-bba6-49b2-baab-63473ab7931d"]
    closed = server.calls("GET", "/v1/orders/closed")[0].query
    assert closed["states[]"] == ["done", "cancel"]
    assert closed["start_time"] == ["2024-06-01T00:00:00Z"]
    assert server.calls("GET", "/v1/order")[0].query == {"uuid": ["cdd92199-2897-4e14-9448-f923320408ad"]}


def test_fees_from_order_chance(server, clock):
    server.add("GET", "/v1/orders/chance", Reply(upbit_fixture("chance")))
    server.add("GET", "/v1/market/all", Reply(upbit_fixture("market_all")))
    info = make(server, clock).market_info("KRW-BTC")
    assert (info.maker_fee, info.taker_fee) == (D("0.0005"), D("0.0005"))


@pytest.mark.parametrize(("status", "name", "exc_type"), [
    (401, "jwt_verification", AuthenticationError),
    (401, "invalid_access_key", AuthenticationError),
    (400, "insufficient_funds_bid", InsufficientFundsError),
    (400, "invalid_price_bid", InvalidOrderError),
    (400, "under_min_total_bid", InvalidOrderError),
])
def test_upbit_error_names_map_to_exceptions(server, clock, status, name, exc_type):
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply({"error": {"name": name, "message": "msg"}}, status))
    with pytest.raises(exc_type, match=name):
        make(server, clock).create_order(limit_buy())
    assert len(server.calls("POST", "/v1/orders")) == 1


def test_secrets_never_in_messages_logs_or_repr(server, clock, caplog):
    """Even when the venue echoes the key and our bearer token back, neither leaks."""
    def echo(rec: Recorded) -> Reply:
        return Reply({"error": {"name": "jwt_verification",
                                "message": f"bad {rec.headers['Authorization']} for {ACCESS} / {SECRET}"}}, 401)

    server.add("GET", "/v1/accounts", echo)
    server.add("GET", "/v1/orders/open", Reply(raw=f"not json {ACCESS} {SECRET}", status=500))
    server.add("GET", "/v1/orderbook/instruments", Reply(upbit_fixture("instruments")))
    server.add("POST", "/v1/orders", Reply(upbit_fixture("order_created"), delay=0.8))
    server.add("GET", "/v1/order", Reply({"error": {"name": "order_not_found", "message": ACCESS}}, 404))
    ex = make(server, clock)
    messages = [repr(ex)]
    with caplog.at_level(logging.DEBUG):
        for call in (ex.balances, lambda: ex.open_orders(), lambda: ex.create_order(limit_buy())):
            with pytest.raises(ExchangeError) as exc:
                call()
            messages.append(str(exc.value))
            messages.append(repr(exc.value))
    text = "\n".join(messages) + "\n" + caplog.text
    assert "Bearer ***" in messages[1]
    for secret in (ACCESS, SECRET):
        assert secret not in text
    assert "eyJ" not in text                             # no JWT fragment anywhere
