"""Upbit (KRW spot) adapter: direct REST over ``HttpClient`` with JWT auth.

Why not pyupbit or ccxt's ``upbit``: see ``docs/adr/0001-upbit-adapter.md``. In short, pyupbit
turns every error (429 included) into ``None`` and has neither ``identifier`` nor the current
tick table; ccxt's ``upbit`` is complete but floats prices, has no KRW tick rounding and hides
whether a failed order call may have reached the venue. The REST surface we need is small.

Order flow: ``apply_precision`` with our KRW tick table (cross-checked with the pair's live tick
from ``/v1/orderbook/instruments``) and the 5,000 KRW minimum, then ``POST /v1/orders`` with
``identifier`` = our client order id. A create or cancel that may have reached Upbit is never
sent again: the order is looked up by ``identifier`` [EX-4].
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import jwt
import numpy as np
import requests

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    TransientExchangeError,
    is_definite_rejection,
    recover_order,
)
from execution.adapters.http import HttpClient, Redactor
from execution.engine.precision import (
    UPBIT_KRW_MIN_ORDER,
    OrderPrecisionError,
    apply_precision,
    format_decimal,
    krw_tick_size,
    lcm_tick,
)
from execution.engine.ratelimit import LimiterRegistry, default_registry
from execution.engine.types import (
    TIMEFRAME_SECONDS,
    Candles,
    Fill,
    Liquidity,
    MarketInfo,
    OrderBook,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
    TimeInForce,
)
from execution.engine.validation import OhlcvSeries

logger = logging.getLogger("quantweb.execution.upbit")

D = Decimal
CANDLE_PAGE = 200
_CANDLE_PATHS = {
    "1m": "/v1/candles/minutes/1",
    "5m": "/v1/candles/minutes/5",
    "15m": "/v1/candles/minutes/15",
    "1h": "/v1/candles/minutes/60",
    "4h": "/v1/candles/minutes/240",
    "1d": "/v1/candles/days",
}
MIN_ORDER_BY_QUOTE = {"KRW": UPBIT_KRW_MIN_ORDER, "BTC": D("0.00005"), "USDT": D("0.5")}
DEFAULT_FEE_BY_QUOTE = {"KRW": D("0.0005"), "BTC": D("0.0025"), "USDT": D("0.0025")}

_AUTH_ERRORS = {"invalid_access_key", "jwt_verification", "expired_access_key", "nonce_used",
                "no_authorization_ip", "no_authorization_i_p", "out_of_scope", "invalid_query_payload",
                "thirdparty_agreement_required"}
_FUNDS_ERRORS = {"insufficient_funds_bid", "insufficient_funds_ask", "insufficient_funds"}
_NOT_FOUND_ERRORS = {"order_not_found", "order_not_found_error"}
_INVALID_ORDER_ERRORS = {"under_min_total_bid", "under_min_total_ask", "invalid_price_bid", "invalid_price_ask",
                         "invalid_volume_bid", "invalid_volume_ask", "invalid_price", "invalid_volume",
                         "validation_error", "invalid_parameter", "market_offline", "create_bid_error",
                         "create_ask_error", "invalid_funds", "invalid_side", "invalid_ord_type",
                         "over_max_total_bid", "over_max_total_ask", "invalid_market"}
#: The identifier is taken: an earlier request with it may have been placed. Looked up, never a rejection.
_DUPLICATE_ID_ERRORS = {"duplicate_identifier", "identifier_already_used"}


class UpbitExchange:
    """The ``Exchange`` interface for Upbit. Keys are optional: without them only market data
    works (``can_trade`` is False). Every knob that touches time, randomness or the network is
    injectable for tests."""

    name = "upbit"

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        base_url: str = "https://api.upbit.com",
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        limiter_registry: LimiterRegistry | None = None,
        rng: random.Random | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_retries: int = 3,
        max_wait: float = 10.0,
        lookup_attempts: int = 3,
        lookup_delay: float = 0.5,
        instrument_ttl: float = 60.0,
    ) -> None:
        if bool(access_key) != bool(secret_key):
            raise AuthenticationError("upbit: both access key and secret key are required to trade")
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self.can_trade = self._access_key is not None
        self._clock = clock
        self._sleep = sleep
        self._registry = limiter_registry or default_registry()
        self._lookup_attempts = lookup_attempts
        self._lookup_delay = lookup_delay
        self._instrument_ttl = instrument_ttl
        self._redactor = Redactor([access_key, secret_key])
        self._http = HttpClient(base_url, venue="upbit", session=session, timeout=timeout,
                                max_retries=max_retries, clock=clock, sleep=sleep, rng=rng, max_wait=max_wait,
                                error_mapper=self._map_error, redactor=self._redactor)
        fingerprint = hashlib.sha256(access_key.encode()).hexdigest()[:16] if access_key else "anonymous"
        self._account_id = f"upbit:{fingerprint}"
        self._public_id = "upbit:public"
        self._markets: dict[str, MarketInfo] = {}
        self._instrument_ticks: dict[str, tuple[Decimal, float]] = {}
        self._fees: dict[str, tuple[Decimal, Decimal]] = {}

    def __repr__(self) -> str:
        return f"UpbitExchange(base_url={self._http.base_url!r}, can_trade={self.can_trade})"

    # ------------------------------------------------------------------ transport

    def _group(self, method: str, path: str) -> tuple[str, str]:
        """(account id, rate-limit group) of an endpoint; quotation limits are per IP."""
        for prefix, group in (("/v1/market/", "market"), ("/v1/candles", "candle"), ("/v1/trades", "trade"),
                              ("/v1/ticker", "ticker"), ("/v1/orderbook", "orderbook")):
            if path.startswith(prefix):
                return self._public_id, group
        if method == "POST" and path == "/v1/orders":
            return self._account_id, "order"
        if method == "POST" and path == "/v1/orders/test":
            return self._account_id, "order-test"
        if method == "DELETE" and path == "/v1/orders/open":
            return self._account_id, "order-cancel-all"
        return self._account_id, "default"

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Mapping[str, Any] | None = None, private: bool = False,
              idempotent: bool | None = None) -> Any:
        if private and not self.can_trade:
            raise AuthenticationError(f"upbit {method} {path}: needs API keys (read-only client)")
        account, group = self._group(method, path)
        limiter = self._registry.get(account, group)
        signer = self._sign if private else None
        return self._http.request(method, path, params=params, body=body, signer=signer, limiter=limiter,
                                  idempotent=idempotent).data

    def _sign(self, hash_source: str) -> dict[str, str]:
        """Upbit JWT: access key + nonce, plus a SHA-512 hash of the parameters when there are any."""
        assert self._access_key is not None and self._secret_key is not None
        payload: dict[str, str] = {"access_key": self._access_key, "nonce": str(uuid.uuid4())}
        if hash_source:
            payload["query_hash"] = hashlib.sha512(hash_source.encode("utf-8")).hexdigest()
            payload["query_hash_alg"] = "SHA512"
        # HS256: Upbit accepts HS256/HS512; its 40-character secrets are below HS512's 64-byte
        # recommended key length but above HS256's 32.
        token = jwt.encode(payload, self._secret_key, algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    def _map_error(self, status: int, payload: Any, context: str) -> ExchangeError | None:
        error = payload.get("error") if isinstance(payload, dict) else None
        if not isinstance(error, dict):
            return None
        name = str(error.get("name", ""))
        message = self._redactor(f"{context}: HTTP {status} {name}: {error.get('message', '')}")
        if status >= 500:
            return None          # a server error is never a definite answer: HttpClient decides (ambiguous)
        if name in _DUPLICATE_ID_ERRORS:
            return AmbiguousOrderError(f"{message}; an earlier request with this identifier may have been placed")
        if name in _AUTH_ERRORS or status == 401:
            return AuthenticationError(message)
        if name in _FUNDS_ERRORS:
            return InsufficientFundsError(message)
        if name in _NOT_FOUND_ERRORS or status == 404:
            return OrderNotFoundError(message)
        if name in _INVALID_ORDER_ERRORS or (status == 400 and name):
            return InvalidOrderError(message)
        return None

    # ------------------------------------------------------------------ market data

    def markets(self) -> list[MarketInfo]:
        rows = self._call("GET", "/v1/market/all", params={"isDetails": "true"})
        result = []
        for row in _as_list(rows, "market/all"):
            symbol = str(row["market"])
            quote, base = symbol.split("-", 1)
            event = row.get("market_event") or {}
            caution_flags = event.get("caution") or {}
            caution = (row.get("market_warning") == "CAUTION" or bool(event.get("warning"))
                       or any(bool(v) for v in caution_flags.values()))
            fee = DEFAULT_FEE_BY_QUOTE.get(quote, D("0.0025"))
            info = MarketInfo(symbol=symbol, base=base, quote=quote,
                              min_notional=MIN_ORDER_BY_QUOTE.get(quote, D("0")), qty_decimals=8,
                              tick_size=D("0.00000001") if quote == "BTC" else None,
                              maker_fee=fee, taker_fee=fee, caution=caution, can_short=False)
            result.append(info)
        self._markets = {m.symbol: m for m in result}
        return result

    def market_info(self, symbol: str) -> MarketInfo:
        """One market's rules; with keys, fees come from ``/v1/orders/chance``."""
        if symbol not in self._markets:
            self.markets()
        if symbol not in self._markets:
            raise InvalidOrderError(f"upbit: unknown market {symbol}")
        info = self._markets[symbol]
        if self.can_trade:
            maker, taker = self.fees(symbol)
            info = MarketInfo(**{**_fields(info), "maker_fee": maker, "taker_fee": taker})
        return info

    def fees(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(maker, taker) fee rates for the account on ``symbol`` (cached per process)."""
        if symbol not in self._fees:
            chance = self._call("GET", "/v1/orders/chance", params={"market": symbol}, private=True)
            taker = _dec(chance.get("bid_fee"), "bid_fee")
            maker = _dec(chance.get("maker_bid_fee", chance.get("bid_fee")), "maker_bid_fee")
            self._fees[symbol] = (maker, taker)
        return self._fees[symbol]

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        if symbols is None:
            rows = self._call("GET", "/v1/ticker/all", params={"quote_currencies": "KRW"})
        else:
            rows = []
            for chunk in _chunks(symbols, 100):
                rows.extend(_as_list(self._call("GET", "/v1/ticker", params={"markets": ",".join(chunk)}),
                                     "ticker"))
        rows = _as_list(rows, "ticker")
        books: dict[str, tuple[float, float]] = {}
        for chunk in _chunks([r["market"] for r in rows], 50):
            for book in _as_list(self._call("GET", "/v1/orderbook", params={"markets": ",".join(chunk)}),
                                 "orderbook"):
                units = book.get("orderbook_units") or []
                if units:
                    books[book["market"]] = (float(units[0]["bid_price"]), float(units[0]["ask_price"]))
        result = []
        for r in rows:
            bid, ask = books.get(r["market"], (math.nan, math.nan))
            result.append(Ticker(symbol=r["market"], ts=int(r["timestamp"]) // 1000, last=float(r["trade_price"]),
                                 bid=bid, ask=ask, value_24h=float(r["acc_trade_price_24h"]),
                                 change_24h_pct=float(r["signed_change_rate"]) * 100.0))
        return result

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        """Candles on the timeframe grid, oldest first, NaN where Upbit has no candle (no trade).

        The grid ends at the bar open now (the current bar is in progress) or, with ``since``,
        spans ``limit`` bars from ``since`` rounded up to the grid. Pages of 200 walk backwards
        with ``to`` until the grid start is covered.
        """
        if timeframe not in _CANDLE_PATHS:
            raise ValueError(f"upbit has no {timeframe!r} candles")
        if limit <= 0:
            raise ValueError("limit must be positive")
        tf = TIMEFRAME_SECONDS[timeframe]
        current_open = int(self._clock()) // tf * tf
        if since is None:
            end_open = current_open
            start = end_open - (limit - 1) * tf
        else:
            start = -(-int(since) // tf) * tf
            end_open = min(start + (limit - 1) * tf, current_open)
        n_bars = max(0, (end_open - start) // tf + 1)
        grid = np.arange(start, start + n_bars * tf, tf, dtype=np.int64)
        rows: dict[int, dict[str, Any]] = {}
        to_ts = end_open + tf
        misaligned = 0
        while n_bars and to_ts > start:
            count = min(CANDLE_PAGE, (to_ts - start) // tf)
            page = _as_list(self._call("GET", _CANDLE_PATHS[timeframe],
                                       params={"market": symbol, "to": _iso_utc(to_ts), "count": count}),
                            "candles")
            if not page:
                break
            oldest = to_ts
            for row in page:
                ts = _parse_utc(row["candle_date_time_utc"])
                oldest = min(oldest, ts)
                if (ts - start) % tf:
                    misaligned += 1
                elif start <= ts <= end_open:
                    rows[ts] = row
            if len(page) < count or oldest >= to_ts:
                break
            to_ts = oldest
        if misaligned:
            logger.warning("upbit %s %s: dropped %d candles off the %s grid", symbol, timeframe, misaligned,
                           timeframe)
        arrays = {k: np.full((1, n_bars), np.nan) for k in ("open", "high", "low", "close", "volume")}
        for i, ts in enumerate(grid.tolist()):
            row = rows.get(ts)
            if row is None:
                continue
            arrays["open"][0, i] = float(row["opening_price"])
            arrays["high"][0, i] = float(row["high_price"])
            arrays["low"][0, i] = float(row["low_price"])
            arrays["close"][0, i] = float(row["trade_price"])
            arrays["volume"][0, i] = float(row["candle_acc_trade_volume"])
        return Candles(symbols=(symbol,), timeframe=timeframe, ts=grid, **arrays)

    # ------------------------------------------------------------------ collection helpers
    # Used by the market data service (execution.collectors): raw rows as Upbit sent them, so
    # execution.engine.validation can count every problem instead of this adapter hiding it.

    def candle_window(self, symbol: str, timeframe: str, start: int, end: int) -> tuple[OhlcvSeries, int]:
        """One request: every candle Upbit returns whose bar opens in ``[start, end]`` (epoch
        seconds on the timeframe grid, at most ``CANDLE_PAGE`` bars), oldest first (Upbit sends
        newest first) but otherwise as received: duplicates, off-grid and out-of-order rows kept. A market without trades in the window returns
        nothing for it (gaps are normal). Returns ``(rows, malformed)``, ``malformed`` = rows
        whose time could not be read (values that cannot be read become NaN)."""
        if timeframe not in _CANDLE_PATHS:
            raise ValueError(f"upbit has no {timeframe!r} candles")
        tf = TIMEFRAME_SECONDS[timeframe]
        if start % tf or end % tf or end < start:
            raise ValueError(f"window [{start}, {end}] is not on the {timeframe} grid")
        count = (end - start) // tf + 1
        if count > CANDLE_PAGE:
            raise ValueError(f"at most {CANDLE_PAGE} bars per request, asked for {count}")
        page = _as_list(self._call("GET", _CANDLE_PATHS[timeframe],
                                   params={"market": symbol, "to": _iso_utc(end + tf), "count": count}), "candles")
        ts, values, malformed = [], [], 0
        for row in reversed(page):            # Upbit sends newest first; validation wants time order
            try:
                t = _parse_utc(str(row["candle_date_time_utc"]))
            except (KeyError, TypeError, ValueError):
                malformed += 1
                continue
            if not start <= t < end + tf:
                continue                      # older than the window: no trade inside it
            ts.append(t)
            values.append([_num(row.get(k)) for k in ("opening_price", "high_price", "low_price", "trade_price",
                                                       "candle_acc_trade_volume")])
        arr = np.array(values, dtype=np.float64).reshape(-1, 5)
        return OhlcvSeries(symbol, timeframe, np.array(ts, dtype=np.int64), *arr.T), malformed

    def ticker_snapshot(self, quote: str = "KRW") -> tuple[list[Ticker], int]:
        """Every ticker of one quote currency in one request, without books (bid / ask NaN).
        Returns ``(tickers, malformed rows skipped)``."""
        rows = _as_list(self._call("GET", "/v1/ticker/all", params={"quote_currencies": quote}), "ticker/all")
        out, malformed = [], 0
        for r in rows:
            try:
                out.append(Ticker(symbol=str(r["market"]), ts=int(r["timestamp"]) // 1000,
                                  last=_num(r.get("trade_price")), bid=math.nan, ask=math.nan,
                                  value_24h=_num(r.get("acc_trade_price_24h")),
                                  change_24h_pct=_num(r.get("signed_change_rate")) * 100.0))
            except (KeyError, TypeError, ValueError):
                malformed += 1
        return out, malformed

    def order_books(self, symbols: list[str], depth: int = 15) -> tuple[dict[str, OrderBook], int]:
        """Books of many markets (50 per request). Unreadable numbers become NaN (validation
        drops those levels); entries without a market or time are skipped and counted.
        Returns ``(books by market, malformed entries)``."""
        books: dict[str, OrderBook] = {}
        malformed = 0
        for chunk in _chunks(list(symbols), 50):
            for book in _as_list(self._call("GET", "/v1/orderbook", params={"markets": ",".join(chunk)}),
                                 "orderbook"):
                try:
                    symbol, ts = str(book["market"]), int(book["timestamp"]) // 1000
                    units = list(book.get("orderbook_units") or [])[:depth]
                except (KeyError, TypeError, ValueError):
                    malformed += 1
                    continue
                bids = [[_num(u.get("bid_price")), _num(u.get("bid_size"))] for u in units if isinstance(u, dict)]
                asks = [[_num(u.get("ask_price")), _num(u.get("ask_size"))] for u in units if isinstance(u, dict)]
                books[symbol] = OrderBook(symbol, ts, np.array(bids, dtype=np.float64).reshape(-1, 2),
                                          np.array(asks, dtype=np.float64).reshape(-1, 2))
        return books, malformed

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook:
        books = _as_list(self._call("GET", "/v1/orderbook", params={"markets": symbol}), "orderbook")
        if not books:
            raise ExchangeError(f"upbit: empty order book response for {symbol}")
        book = books[0]
        units = (book.get("orderbook_units") or [])[:depth]
        bids = np.array([[float(u["bid_price"]), float(u["bid_size"])] for u in units], dtype=np.float64)
        asks = np.array([[float(u["ask_price"]), float(u["ask_size"])] for u in units], dtype=np.float64)
        return OrderBook(symbol=symbol, ts=int(book["timestamp"]) // 1000, bids=bids.reshape(-1, 2),
                         asks=asks.reshape(-1, 2))

    def instruments(self, symbols: list[str]) -> dict[str, Decimal]:
        """Per-pair tick size served by ``GET /v1/orderbook/instruments`` (cached ``instrument_ttl``)."""
        rows = _as_list(self._call("GET", "/v1/orderbook/instruments", params={"markets": ",".join(symbols)}),
                        "orderbook/instruments")
        now = self._clock()
        result = {}
        for row in rows:
            tick = _dec(row["tick_size"], "tick_size")
            result[row["market"]] = tick
            self._instrument_ticks[row["market"]] = (tick, now)
        return result

    def _instrument_tick(self, symbol: str) -> Decimal | None:
        cached = self._instrument_ticks.get(symbol)
        if cached is not None and self._clock() - cached[1] < self._instrument_ttl:
            return cached[0]
        try:
            return self.instruments([symbol]).get(symbol)
        except TransientExchangeError as exc:
            logger.warning("upbit: tick size of %s unavailable (%s); using the KRW table", symbol, exc)
            return None

    # ------------------------------------------------------------------ account

    def balances(self) -> dict[str, Decimal]:
        """Available (free) balance per currency; ``balances_detail`` also gives the locked part."""
        return {c: free for c, (free, _locked) in self.balances_detail().items()}

    def balances_detail(self) -> dict[str, tuple[Decimal, Decimal]]:
        rows = _as_list(self._call("GET", "/v1/accounts", private=True), "accounts")
        return {str(r["currency"]): (_dec(r.get("balance", "0"), "balance"), _dec(r.get("locked", "0"), "locked"))
                for r in rows}

    # ------------------------------------------------------------------ orders

    def prepare_order(self, request: OrderRequest) -> OrderRequest:
        """The request with Upbit precision applied (tick grid, 8 decimals, minimum value)."""
        market = self._markets.get(request.symbol) or MarketInfo(
            symbol=request.symbol, base=request.symbol.split("-")[-1], quote=request.symbol.split("-")[0],
            min_notional=MIN_ORDER_BY_QUOTE.get(request.symbol.split("-")[0], D("0")))
        tick = None
        if request.type is OrderType.LIMIT and request.price is not None:
            live = self._instrument_tick(request.symbol)
            table = krw_tick_size(request.price) if market.quote == "KRW" else market.tick_size
            if live is not None and table is not None and live != table:
                logger.info("upbit %s: live tick %s differs from table tick %s; using a grid valid for both",
                            request.symbol, live, table)
            ticks = [t for t in (live, table) if t is not None]
            if ticks:
                tick = ticks[0] if len(ticks) == 1 else lcm_tick(ticks[0], ticks[1])
        try:
            return apply_precision(request, market, tick=tick)
        except OrderPrecisionError as exc:
            raise InvalidOrderError(f"upbit {request.symbol}: {exc}") from None

    def _order_body(self, request: OrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"market": request.symbol, "side": "bid" if request.side is Side.BUY else "ask",
                                "identifier": request.client_order_id}
        tif = request.tif
        if request.type is OrderType.LIMIT:
            body.update(ord_type="limit", price=format_decimal(request.price), volume=format_decimal(request.qty))
            if tif is not TimeInForce.GTC:
                body["time_in_force"] = tif.value
            return body
        if tif is TimeInForce.POST_ONLY:
            raise InvalidOrderError("upbit: post_only applies to limit orders only")
        best = tif in (TimeInForce.IOC, TimeInForce.FOK)
        if request.side is Side.BUY:
            if request.quote_amount is None:
                raise InvalidOrderError("upbit: a market buy is sized by quote_amount (KRW to spend)")
            body.update(ord_type="best" if best else "price", price=format_decimal(request.quote_amount))
        else:
            if request.qty is None:
                raise InvalidOrderError("upbit: a market sell is sized by qty")
            body.update(ord_type="best" if best else "market", volume=format_decimal(request.qty))
        if best:
            body["time_in_force"] = tif.value
        return body

    def create_order(self, request: OrderRequest) -> OrderState:
        """Place an order with ``identifier`` = client order id; never re-sent if it may have
        reached Upbit: an ambiguous outcome is resolved by looking the identifier up."""
        prepared = self.prepare_order(request)
        body = self._order_body(prepared)
        try:
            data = self._call("POST", "/v1/orders", body=body, private=True, idempotent=False)
            return self._order_state(data, prepared.client_order_id)
        except ExchangeError as exc:
            if is_definite_rejection(exc):
                raise                      # Upbit answered no (4xx with a known error name, 429, 418)
            # Timeout, reset, 5xx, an unreadable 2xx, no uuid, an unknown state: it may be placed.
            logger.warning("upbit create %s: %s; looking it up by identifier", prepared.client_order_id, exc)
            return self._recover(prepared.symbol, prepared.client_order_id, str(exc))

    def test_order(self, request: OrderRequest) -> OrderState:
        """Validate an order with ``POST /v1/orders/test`` (nothing is placed; Upbit has no sandbox)."""
        prepared = self.prepare_order(request)
        data = self._call("POST", "/v1/orders/test", body=self._order_body(prepared), private=True,
                          idempotent=True)
        return self._order_state(data, prepared.client_order_id)

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Request cancellation. The returned state is Upbit's view when the cancel was accepted
        (usually still ``wait``); ``fetch_order`` confirms the final state."""
        try:
            data = self._call("DELETE", "/v1/order", params={"identifier": client_order_id}, private=True,
                              idempotent=False)
            return self._order_state(data, client_order_id)
        except ExchangeError as exc:
            if is_definite_rejection(exc) or isinstance(exc, OrderNotFoundError):
                raise
            logger.warning("upbit cancel %s: %s; looking it up by identifier", client_order_id, exc)
            return self._recover(symbol, client_order_id, str(exc))

    def fetch_order(self, symbol: str, client_order_id: str) -> OrderState:
        data = self._call("GET", "/v1/order", params={"identifier": client_order_id}, private=True)
        state = self._order_state(data, client_order_id)
        if state.symbol != symbol:
            raise OrderNotFoundError(f"upbit: order {client_order_id} is on {state.symbol}, not {symbol}")
        return state

    def _recover(self, symbol: str, client_order_id: str, cause: str) -> OrderState:
        return recover_order(self, symbol, client_order_id, cause, attempts=self._lookup_attempts,
                             delay=self._lookup_delay, sleep=self._sleep, log=logger)

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        result: list[OrderState] = []
        page = 1
        while True:
            params: dict[str, Any] = {"states[]": ["wait", "watch"], "limit": 100, "page": page}
            if symbol is not None:
                params["market"] = symbol
            rows = _as_list(self._call("GET", "/v1/orders/open", params=params, private=True), "orders/open")
            result.extend(self._order_state(r) for r in rows)
            if len(rows) < 100 or page >= 50:
                return result
            page += 1

    def my_trades(self, symbol: str, since: int | None = None) -> list[Fill]:
        """Fills of closed and open orders since ``since`` (default: the last 7 days).

        Upbit serves fills per order: closed orders are listed in windows of at most 7 days and
        each order with an execution is fetched with its trades.
        """
        now = int(self._clock())
        start = int(since) if since is not None else now - 7 * 86400
        uuids: list[str] = []
        window = 7 * 86400
        lo = start
        while lo < now:
            hi = min(lo + window, now)
            rows = _as_list(self._call("GET", "/v1/orders/closed", params={
                "market": symbol, "states[]": ["done", "cancel"], "start_time": _iso_utc(lo),
                "end_time": _iso_utc(hi), "limit": 1000, "order_by": "asc"}, private=True), "orders/closed")
            uuids.extend(r["uuid"] for r in rows if _dec(r.get("executed_volume") or "0", "executed_volume") > 0)
            lo = hi
        uuids.extend(o.exchange_order_id for o in self.open_orders(symbol) if o.filled_qty > 0)
        fills: list[Fill] = []
        for order_uuid in dict.fromkeys(uuids):
            data = self._call("GET", "/v1/order", params={"uuid": order_uuid}, private=True)
            fills.extend(f for f in self._order_state(data).fills if f.ts >= start)
        fills.sort(key=lambda f: (f.ts, f.trade_id))
        return fills

    # ------------------------------------------------------------------ parsing

    def _order_state(self, o: Any, client_order_id: str | None = None) -> OrderState:
        if not isinstance(o, dict) or "uuid" not in o:
            raise ExchangeError(f"upbit: unexpected order payload: {self._redactor(str(o)[:200])}")
        ord_type = o.get("ord_type")
        side = Side.BUY if o.get("side") == "bid" else Side.SELL
        cid = o.get("identifier") or client_order_id or ""
        executed = _dec(o.get("executed_volume") or "0", "executed_volume")
        fee = _dec(o.get("paid_fee") or "0", "paid_fee")
        created = _parse_iso(o.get("created_at"))
        symbol = str(o.get("market"))
        trades = o.get("trades") or []
        fills = self._fills(trades, cid, symbol, side, fee, created, o)
        state = o.get("state")
        if state in ("wait", "watch"):
            status = OrderStatus.PARTIALLY_FILLED if executed > 0 else OrderStatus.OPEN
        elif state == "done":
            status = OrderStatus.FILLED
        elif state == "cancel":
            # A market buy by KRW total ends as "cancel" when dust KRW is left: it is complete.
            status = OrderStatus.FILLED if ord_type == "price" and executed > 0 else OrderStatus.CANCELLED
        else:
            raise ExchangeError(f"upbit: unknown order state {state!r} for {cid}")
        avg = None
        funds = o.get("executed_funds")
        if executed > 0:
            if funds is not None:
                avg = _dec(funds, "executed_funds") / executed
            elif fills:
                avg = sum((f.price * f.qty for f in fills), D(0)) / sum((f.qty for f in fills), D(0))
        price = _dec(o["price"], "price") if ord_type == "limit" and o.get("price") else None
        quote_amount = (_dec(o["price"], "price") if ord_type in ("price", "best") and side is Side.BUY
                        and o.get("price") else None)
        qty = _dec(o["volume"], "volume") if o.get("volume") else None
        return OrderState(client_order_id=cid, symbol=symbol, side=side,
                          type=OrderType.LIMIT if ord_type == "limit" else OrderType.MARKET, status=status,
                          qty=qty, price=price, quote_amount=quote_amount, exchange_order_id=str(o["uuid"]),
                          filled_qty=executed, avg_price=avg, fee=fee, ts=created, fills=fills)

    @staticmethod
    def _fills(trades: list[dict[str, Any]], cid: str, symbol: str, side: Side, paid_fee: Decimal,
               created: int, order: dict[str, Any]) -> list[Fill]:
        """Upbit reports the fee per order; it is split over the trades by traded value."""
        if not trades:
            return []
        funds = [_dec(t.get("funds") or D(t["price"]) * D(t["volume"]), "funds") for t in trades]
        total = sum(funds, D(0))
        resting = order.get("ord_type") == "limit"
        post_only = order.get("time_in_force") == "post_only"
        fills = []
        allocated = D(0)
        for i, (t, value) in enumerate(zip(trades, funds, strict=True)):
            if i == len(trades) - 1:
                fee = paid_fee - allocated
            else:
                fee = (paid_fee * value / total).quantize(D("1e-8"), rounding=ROUND_HALF_UP) if total else D(0)
                allocated += fee
            ts = _parse_iso(t.get("created_at")) or created
            # Upbit does not label maker/taker per trade: a limit order that traded after it was
            # placed is taken as resting (maker); market-type orders are always taker.
            maker = post_only or (resting and ts > created)
            fills.append(Fill(client_order_id=cid, symbol=symbol, side=side, price=_dec(t["price"], "price"),
                              qty=_dec(t["volume"], "volume"), fee=max(fee, D(0)), ts=ts,
                              liquidity=Liquidity.MAKER if maker else Liquidity.TAKER, trade_id=str(t["uuid"])))
        return fills


# ---------------------------------------------------------------------- helpers

def _fields(info: MarketInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in MarketInfo.__dataclass_fields__}


def _as_list(data: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise ExchangeError(f"upbit {what}: expected a JSON list, got {type(data).__name__}")
    return data


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _num(value: Any) -> float:
    """A number from a JSON field; NaN when it is missing or unreadable (validation counts it)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _dec(value: Any, name: str) -> Decimal:
    try:
        result = D(str(value))
    except ArithmeticError:
        raise ExchangeError(f"upbit: field {name} is not a number: {value!r}") from None
    if not result.is_finite():
        raise ExchangeError(f"upbit: field {name} is not finite: {value!r}")
    return result


def _iso_utc(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_utc(text: str) -> int:
    """``candle_date_time_utc`` ("2024-06-01T00:00:00", no zone) as epoch seconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def _parse_iso(text: str | None) -> int:
    """An ISO time with zone ("2025-08-09T16:44:00+09:00") as epoch seconds; 0 when absent."""
    if not text:
        return 0
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
