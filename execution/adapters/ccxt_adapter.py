"""Any ccxt exchange behind the ``Exchange`` interface: spot, and perpetual swaps for shorts.

* Sandbox/testnet through ccxt's ``set_sandbox_mode`` (Binance, Bybit, ...); an exchange
  without one is refused rather than silently trading live.
* Client order ids go through ccxt's unified ``clientOrderId`` param (ccxt maps it to
  ``newClientOrderId`` on Binance, ``orderLinkId`` on Bybit, ...); orders are looked up and
  cancelled by it.
* Precision comes from ccxt's market precision and limits and is applied by our own
  ``apply_precision`` in ``Decimal`` before ccxt sees the order.
* ccxt exceptions map to ours. A create/cancel that may have reached the venue (timeout,
  network error, 5xx, an unparseable answer) is never re-sent: it is resolved by looking the
  client order id up, or surfaces as ``AmbiguousOrderError``.
* ccxt paces requests itself (``enableRateLimit``); 429 and 418 also feed our shared
  ``LimiterRegistry`` so every trader on the account backs off together.
* ccxt's own debug logging (which prints request headers, i.e. API keys) is routed through a
  redacting logger.
* ``capabilities()`` reads ccxt's ``features[market type]["createOrder"]`` (IOC / FOK / post-only,
  market buys by cost, stop-loss orders) and the venue's client order id rule.
* Resting stops [RK-5] (``StopOrders``): a market sell (or buy) with ccxt's unified
  ``stopLossPrice`` param, where ``features`` says the venue has stop-loss orders; venues that
  keep trigger orders in a separate book (Bybit, OKX: ``features[...]["fetchOrder"]["trigger"]``)
  are looked up and cancelled with ``trigger=True``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt
import numpy as np

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    BannedError,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    TransientExchangeError,
    is_definite_rejection,
    recover_order,
)
from execution.adapters.http import Redactor
from execution.engine.policy import VenueCapabilities
from execution.engine.precision import OrderPrecisionError, apply_precision, round_price_to_tick
from execution.engine.ratelimit import BanActive, LimiterRegistry, default_registry
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

logger = logging.getLogger("quantweb.execution.ccxt")

D = Decimal
#: Client order id rules (max length, letters and digits only) where they differ from 36 / [A-Za-z0-9_-].
CLIENT_ID_RULES: dict[str, tuple[int, bool]] = {"okx": (32, True), "binance": (36, False), "bybit": (36, False)}
#: Venue error codes that mean "the outcome is unknown" (the order may have been placed). ccxt maps
#: some of them to classes we already treat as unknown (``OperationFailed``, ``BadResponse``,
#: ``NetworkError``...), others to a plain ``ExchangeError``: a create failing with one of these is
#: looked up by client order id, never booked as rejected. See docs/execution.md section 7.
AMBIGUOUS_CODES: dict[str, frozenset[str]] = {
    # -1000 UNKNOWN, -1001 DISCONNECTED, -1006 UNEXPECTED_RESP ("execution status unknown"),
    # -1007 TIMEOUT ("send status unknown; execution status unknown"), -1008 SERVER_BUSY.
    "binance": frozenset({"-1000", "-1001", "-1006", "-1007", "-1008"}),
    # 10000 server timeout, 10016 internal/system error.
    "bybit": frozenset({"10000", "10016"}),
    # 50001 service unavailable / upgrading, 50004 endpoint timeout ("does not indicate success or failure
    # of order"), 50013 system busy, 50026 system error, 51149 order timed out.
    "okx": frozenset({"50001", "50004", "50013", "50026", "51149"}),
}
_STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELLED,
           "cancelled": OrderStatus.CANCELLED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}


class _RedactingLogger:
    """Stands in for ccxt's per-instance logger: formats, redacts, forwards at the same level."""

    def __init__(self, redactor: Redactor, target: logging.Logger) -> None:
        self._redact = redactor
        self._target = target

    def _log(self, level: int, msg: str, *args: Any) -> None:
        if self._target.isEnabledFor(level):
            text = msg % args if args else str(msg)
            self._target.log(level, "%s", self._redact(text))

    def debug(self, msg: str, *args: Any, **_: Any) -> None:
        self._log(logging.DEBUG, msg, *args)

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        self._log(logging.INFO, msg, *args)

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        self._log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: Any, **_: Any) -> None:
        self._log(logging.ERROR, msg, *args)


class CcxtExchange:
    """The ``Exchange`` interface over a ccxt client (created here, or injected for tests)."""

    def __init__(
        self,
        exchange_id: str,
        api_key: str | None = None,
        secret: str | None = None,
        *,
        password: str | None = None,
        sandbox: bool = False,
        market_type: str = "spot",
        options: dict[str, Any] | None = None,
        ccxt_client: Any | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        limiter_registry: LimiterRegistry | None = None,
        timeout_ms: int = 10_000,
        max_retries: int = 3,
        lookup_attempts: int = 3,
        lookup_delay: float = 0.5,
        ohlcv_page: int = 500,
    ) -> None:
        if market_type not in ("spot", "swap"):
            raise ValueError(f"market_type must be 'spot' or 'swap', got {market_type!r}")
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.market_type = market_type
        self.can_trade = bool(api_key and secret)
        self._redactor = Redactor([api_key, secret, password])
        self._clock = clock
        self._sleep = sleep
        self._max_retries = max_retries
        self._lookup_attempts = lookup_attempts
        self._lookup_delay = lookup_delay
        self._ohlcv_page = ohlcv_page
        self._registry = limiter_registry or default_registry()
        fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else "public"
        self._account_id = f"ccxt:{exchange_id}:{fingerprint}"
        if ccxt_client is None:
            if exchange_id not in ccxt.exchanges:
                raise ValueError(f"unknown ccxt exchange id {exchange_id!r}")
            config: dict[str, Any] = {
                "enableRateLimit": True,
                "timeout": timeout_ms,
                # fetchMargins: Binance would load margin pairs (a private call) with every market load.
                "options": {"defaultType": market_type, "fetchMargins": False, **(options or {})},
                "logger": _RedactingLogger(self._redactor, logging.getLogger("quantweb.execution.ccxt.wire")),
            }
            if api_key:
                config.update(apiKey=api_key, secret=secret)
            if password:
                config["password"] = password
            ccxt_client = getattr(ccxt, exchange_id)(config)
        self._client = ccxt_client
        # Needed to tell an unparseable answer (ccxt yields None) from a real empty one.
        self._client.enableLastHttpResponse = True
        self._client.enableLastJsonResponse = True
        # Reconciliation lists every open order of the account (orphans); Binance refuses that
        # without a symbol unless its higher request weight is acknowledged.
        if isinstance(getattr(self._client, "options", None), dict):
            self._client.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        if sandbox:
            if not (self._client.urls or {}).get("test"):
                raise ExchangeError(f"{self.name}: ccxt offers no sandbox/testnet for this exchange")
            self._client.set_sandbox_mode(True)
        self._markets: dict[str, MarketInfo] = {}

    def __repr__(self) -> str:
        return f"CcxtExchange({self.exchange_id!r}, market_type={self.market_type!r}, can_trade={self.can_trade})"

    @property
    def client(self) -> Any:
        return self._client

    # ------------------------------------------------------------------ call guard

    def _call(self, context: str, fn: Callable[..., Any], *args: Any, write: bool = False, **kwargs: Any) -> Any:
        """Run one ccxt call under the shared limiter, mapping its exceptions to ours.

        Reads are retried on transient errors (with the limiter's jittered backoff); writes never.
        """
        limiter = self._registry.get(self._account_id, "order" if write else "default")
        attempt = 0
        while True:
            try:
                wait = limiter.reserve(self._clock())
            except BanActive as exc:
                raise BannedError(f"{self.name} {context}: not sent, venue ban active until epoch "
                                  f"{exc.until:.0f}", until_ts=exc.until) from None
            if wait > 0:
                self._sleep(wait)
            self._client.last_http_response = None
            self._client.last_json_response = None
            try:
                result = fn(*args, **kwargs)
                body = self._client.last_http_response
                if body and body.strip() and self._client.last_json_response is None:
                    raise ValueError(f"body is not JSON: {body[:80]!r}")
            except ccxt.BaseError as exc:
                error = self._map(exc, context, write, limiter)
                if not write and error.retryable and attempt < self._max_retries:
                    attempt += 1
                    if not isinstance(error, RateLimitedError):   # 429 waits come from the limiter
                        self._sleep(self._backoff(attempt))
                    logger.warning("%s %s: %s; retry %d/%d", self.name, context, error, attempt, self._max_retries)
                    continue
                raise error from None
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                # ccxt could not make sense of the answer (malformed JSON, unexpected shape).
                message = f"{self.name} {context}: malformed response ({type(exc).__name__}: " \
                          f"{self._redactor(str(exc))[:200]})"
                if write:
                    raise AmbiguousOrderError(message + "; the venue may have accepted it") from None
                raise ExchangeError(message) from None
            limiter.on_response(self._clock(), None)
            return result

    def _backoff(self, attempt: int) -> float:
        return min(30.0, 0.5 * 2 ** (attempt - 1))

    def _map(self, exc: ccxt.BaseError, context: str, write: bool, limiter: Any) -> ExchangeError:
        detail = self._redactor(str(exc))[:300]
        message = f"{self.name} {context}: {type(exc).__name__}: {detail}"
        now = self._clock()
        text = f" {exc} "
        if isinstance(exc, ccxt.DDoSProtection | ccxt.RateLimitExceeded) and (" 418 " in text
                                                                               or "banned until" in text):
            return BannedError(message, until_ts=limiter.on_banned(now))
        if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
            return RateLimitedError(message, retry_after=limiter.on_rate_limited(now))
        if isinstance(exc, ccxt.AuthenticationError):         # incl. PermissionDenied, AccountSuspended
            return AuthenticationError(message)
        if isinstance(exc, ccxt.InsufficientFunds):
            return InsufficientFundsError(message)
        if write and isinstance(exc, ccxt.DuplicateOrderId):
            # The client id is taken: an earlier request with it may be on the venue. Look it up.
            return AmbiguousOrderError(message + "; an order with this client id may exist")
        if isinstance(exc, ccxt.OrderNotFound):
            return OrderNotFoundError(message)
        if isinstance(exc, ccxt.InvalidOrder):
            return InvalidOrderError(message)
        if isinstance(exc, ccxt.OperationFailed):
            # NetworkError (RequestTimeout, ExchangeNotAvailable, OnMaintenance, InvalidNonce), BadResponse,
            # NullResponse, CancelPending: the venue did not give a definite answer.
            if write:
                return AmbiguousOrderError(message + "; the venue may have accepted it")
            return TransientExchangeError(message)
        if write and self._ambiguous_code(text):
            return AmbiguousOrderError(message + "; the venue reports the outcome as unknown")
        if write and isinstance(exc, ccxt.BadRequest | ccxt.ArgumentsRequired):
            return InvalidOrderError(message)
        if write and isinstance(exc, ccxt.ExchangeError):
            return OrderRejectedError(message)              # answered with a refusal code of its own
        return ExchangeError(message)

    def _ambiguous_code(self, text: str) -> str | None:
        """The venue's "status unknown" code (``AMBIGUOUS_CODES``) named in an error text."""
        for code in AMBIGUOUS_CODES.get(self.exchange_id, ()):
            if re.search(rf"(?<![\w.-]){re.escape(code)}(?![\w.])", text):
                return code
        return None

    # ------------------------------------------------------------------ market data

    def markets(self) -> list[MarketInfo]:
        raw = self._call("load_markets", self._client.load_markets, True)
        result = []
        for m in raw.values():
            if not m.get(self.market_type):
                continue
            result.append(self._market_info(m))
        self._markets = {m.symbol: m for m in result}
        return result

    def _market_info(self, m: dict[str, Any]) -> MarketInfo:
        precision = m.get("precision") or {}
        mode = getattr(self._client, "precisionMode", ccxt.TICK_SIZE)
        tick = _precision_step(precision.get("price"), mode)
        lot = _precision_step(precision.get("amount"), mode)
        if mode == ccxt.DECIMAL_PLACES and precision.get("amount") is not None:
            qty_decimals, lot = int(precision["amount"]), D(0)
        elif lot is not None:
            qty_decimals = max(0, -lot.normalize().as_tuple().exponent)
        else:
            qty_decimals, lot = 8, D(0)
        cost_min = ((m.get("limits") or {}).get("cost") or {}).get("min")
        return MarketInfo(symbol=m["symbol"], base=m["base"], quote=m["quote"],
                          min_notional=_d(cost_min) if cost_min is not None else D(0), lot_size=lot,
                          qty_decimals=qty_decimals, tick_size=tick,
                          maker_fee=_d(m.get("maker") if m.get("maker") is not None else "0.001"),
                          taker_fee=_d(m.get("taker") if m.get("taker") is not None else "0.001"),
                          caution=not m.get("active", True), can_short=bool(m.get("swap")))

    def market_info(self, symbol: str) -> MarketInfo:
        if symbol not in self._markets:
            self.markets()
        if symbol not in self._markets:
            raise InvalidOrderError(f"{self.name}: unknown {self.market_type} market {symbol}")
        return self._markets[symbol]

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        raw = self._call("fetch_tickers", self._client.fetch_tickers, symbols)
        now = int(self._clock())
        result = []
        for symbol, t in raw.items():
            last = _f(t.get("last"))
            value = _f(t.get("quoteVolume"))
            if math.isnan(value):
                value = _f(t.get("baseVolume")) * last
            ts = int(t["timestamp"]) // 1000 if t.get("timestamp") else now
            result.append(Ticker(symbol=symbol, ts=ts, last=last, bid=_f(t.get("bid")), ask=_f(t.get("ask")),
                                 value_24h=value, change_24h_pct=_f(t.get("percentage"))))
        return result

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        """Candles on the timeframe grid, oldest first, NaN where the venue returned no bar."""
        if timeframe not in TIMEFRAME_SECONDS:
            raise ValueError(f"unsupported timeframe {timeframe!r}")
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
        rows: dict[int, list[float]] = {}
        cursor = start
        while n_bars and cursor <= end_open:
            want = min(self._ohlcv_page, (end_open - cursor) // tf + 1)
            page = self._call("fetch_ohlcv", self._client.fetch_ohlcv, symbol, timeframe, cursor * 1000, want)
            if not page:
                break
            last = cursor - tf
            for row in page:
                ts = int(row[0]) // 1000
                last = max(last, ts)
                if start <= ts <= end_open and (ts - start) % tf == 0:
                    rows[ts] = row
            if last < cursor:
                break
            cursor = last + tf
        grid = np.arange(start, start + n_bars * tf, tf, dtype=np.int64)
        arrays = {k: np.full((1, n_bars), np.nan) for k in ("open", "high", "low", "close", "volume")}
        for i, ts in enumerate(grid.tolist()):
            row = rows.get(ts)
            if row is None:
                continue
            for j, key in enumerate(("open", "high", "low", "close", "volume"), start=1):
                arrays[key][0, i] = _f(row[j])
        return Candles(symbols=(symbol,), timeframe=timeframe, ts=grid, **arrays)

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook:
        book = self._call("fetch_order_book", self._client.fetch_order_book, symbol, depth)
        bids = np.array([[float(p), float(q)] for p, q, *_ in book.get("bids", [])[:depth]], dtype=np.float64)
        asks = np.array([[float(p), float(q)] for p, q, *_ in book.get("asks", [])[:depth]], dtype=np.float64)
        ts = int(book["timestamp"]) // 1000 if book.get("timestamp") else int(self._clock())
        return OrderBook(symbol=symbol, ts=ts, bids=bids.reshape(-1, 2), asks=asks.reshape(-1, 2))

    # ------------------------------------------------------------------ account and orders

    def balances(self) -> dict[str, Decimal]:
        """Available (free) balance per currency, zero balances omitted."""
        self._require_keys("fetch_balance")
        raw = self._call("fetch_balance", self._client.fetch_balance)
        free = raw.get("free") or {}
        return {c: _d(v) for c, v in free.items() if v is not None and _d(v) != 0}

    def total_balances(self) -> dict[str, Decimal]:
        """Free + locked per currency (reconciliation compares the books with these)."""
        self._require_keys("fetch_balance")
        raw = self._call("fetch_balance", self._client.fetch_balance)
        total = raw.get("total") or {}
        return {c: _d(v) for c, v in total.items() if v is not None and _d(v) != 0}

    def _require_keys(self, what: str) -> None:
        if not self.can_trade:
            raise AuthenticationError(f"{self.name} {what}: needs API keys (read-only client)")

    def prepare_order(self, request: OrderRequest, reference_price: Decimal | None = None) -> OrderRequest:
        market = self.market_info(request.symbol)
        try:
            return apply_precision(request, market, reference_price=reference_price)
        except OrderPrecisionError as exc:
            raise InvalidOrderError(f"{self.name} {request.symbol}: {exc}") from None

    def _features(self) -> dict[str, Any]:
        features = (getattr(self._client, "features", None) or {}).get(self.market_type) or {}
        if self.market_type == "swap":
            features = features.get("linear") or features.get("inverse") or {}
        return features

    def capabilities(self) -> VenueCapabilities:
        """What this venue's order API offers, from ccxt's ``features`` and ``has``."""
        create = self._features().get("createOrder") or {}
        tif = create.get("timeInForce") or {}
        max_len, alnum = CLIENT_ID_RULES.get(self.exchange_id, (36, False))
        return VenueCapabilities(
            post_only=bool(tif.get("PO") or self._client.has.get("createPostOnlyOrder")),
            ioc=bool(tif.get("IOC")), fok=bool(tif.get("FOK")),
            market_buy_by_qty=not create.get("marketBuyRequiresPrice", False),
            market_buy_by_quote=bool(self._client.has.get("createMarketBuyOrderWithCost")),
            stop_orders=bool(create.get("stopLossPrice")) and self.can_trade,
            client_id_max_len=max_len, client_id_alnum_only=alnum)

    def create_order(self, request: OrderRequest) -> OrderState:
        self._require_keys("create_order")
        prepared = self.prepare_order(request)
        params: dict[str, Any] = {"clientOrderId": prepared.client_order_id}
        if prepared.tif in (TimeInForce.IOC, TimeInForce.FOK):
            params["timeInForce"] = prepared.tif.value.upper()
        elif prepared.tif is TimeInForce.POST_ONLY:
            params["postOnly"] = True
        if prepared.reduce_only:
            params["reduceOnly"] = True
        side = prepared.side.value
        context = f"create_order {prepared.client_order_id}"
        try:
            if prepared.type is OrderType.MARKET and prepared.qty is None:
                if not self._client.has.get("createMarketBuyOrderWithCost"):
                    raise InvalidOrderError(f"{self.name}: market buys by quote amount are not supported; "
                                            "size the order by qty")
                raw = self._call(context, self._client.create_market_buy_order_with_cost, prepared.symbol,
                                 float(prepared.quote_amount), params, write=True)
            else:
                price = float(prepared.price) if prepared.price is not None else None
                raw = self._call(context, self._client.create_order, prepared.symbol, prepared.type.value, side,
                                 float(prepared.qty), price, params, write=True)
            state = self._answer(raw, prepared.client_order_id, prepared.symbol, context)
        except ExchangeError as exc:
            if is_definite_rejection(exc):
                raise
            logger.warning("%s: %s; looking it up by client order id", self.name, exc)
            return self._recover(prepared.symbol, prepared.client_order_id, str(exc))
        if state.qty is None:
            state.qty = prepared.qty
        return state

    def _answer(self, raw: Any, client_order_id: str, symbol: str, context: str) -> OrderState:
        """The venue's answer to a create/cancel as a state; an answer without an order id or with
        a status we cannot read is ambiguous (the venue may hold the order)."""
        if not isinstance(raw, dict) or not raw.get("id"):
            raise AmbiguousOrderError(f"{self.name} {context}: the answer carries no order id")
        try:
            return self._order_state(raw, client_order_id, symbol)
        except (ExchangeError, ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise AmbiguousOrderError(f"{self.name} {context}: unreadable answer ({exc})") from None

    def fetch_order(self, symbol: str, client_order_id: str, *, trigger: bool = False) -> OrderState:
        """Look an order up by client id; ``trigger`` looks in the venue's trigger-order book."""
        self._require_keys("fetch_order")
        context = f"fetch_order {client_order_id}"
        extra = {"trigger": True} if trigger else {}
        raw = None
        try:
            raw = self._call(context, self._client.fetch_order, None, symbol,
                             {"clientOrderId": client_order_id, **extra})
        except (OrderNotFoundError, TransientExchangeError, BannedError, AuthenticationError):
            raise
        except ExchangeError as exc:
            logger.info("%s: lookup by client id unsupported (%s); scanning orders", self.name, exc)
        if raw is not None and raw.get("clientOrderId") in (None, client_order_id):
            return self._order_state(raw, client_order_id, symbol)
        # The venue cannot look orders up by client id: scan open, then closed orders.
        for method, capability in (("fetch_open_orders", "fetchOpenOrders"),
                                   ("fetch_closed_orders", "fetchClosedOrders")):
            if not self._client.has.get(capability):
                continue
            for order in self._call(method, getattr(self._client, method), symbol, None, None, extra):
                if order.get("clientOrderId") == client_order_id:
                    return self._order_state(order, client_order_id, symbol)
        raise OrderNotFoundError(f"{self.name}: no order with client id {client_order_id} on {symbol}")

    def cancel_order(self, symbol: str, client_order_id: str, *, trigger: bool = False) -> OrderState:
        """Cancel by client id: the venue id is looked up first, so this works on every venue."""
        current = self.fetch_order(symbol, client_order_id, trigger=trigger)
        if current.status.is_final:
            return current
        context = f"cancel_order {client_order_id}"
        try:
            raw = self._call(context, self._client.cancel_order,
                             current.exchange_order_id, symbol, {"trigger": True} if trigger else {}, write=True)
            return self._answer(raw, client_order_id, symbol, context)
        except ExchangeError as exc:
            if is_definite_rejection(exc) or isinstance(exc, OrderNotFoundError):
                raise
            logger.warning("%s: %s; looking it up by client order id", self.name, exc)
            return self._recover(symbol, client_order_id, str(exc), trigger=trigger)

    def _recover(self, symbol: str, client_order_id: str, cause: str, *, trigger: bool = False) -> OrderState:
        venue = _TriggerLookup(self) if trigger else self
        return recover_order(venue, symbol, client_order_id, cause, attempts=self._lookup_attempts,
                             delay=self._lookup_delay, sleep=self._sleep, log=logger)

    # ------------------------------------------------------------------ resting stops [RK-5]

    def _trigger_book(self) -> bool:
        """Whether the venue keeps trigger orders apart (looked up with ``trigger=True``)."""
        return bool((self._features().get("fetchOrder") or {}).get("trigger"))

    def create_stop_order(self, request: OrderRequest, stop_price: Decimal) -> OrderState:
        """A stop-loss market order of ``request.qty`` triggered at ``stop_price`` (on the tick
        grid, never looser: a SELL stop rounds up, a BUY stop down)."""
        self._require_keys("create_stop_order")
        if not self.capabilities().stop_orders:
            raise InvalidOrderError(f"{self.name}: the venue has no stop-loss orders")
        if request.qty is None:
            raise InvalidOrderError(f"{self.name}: a stop order is sized by qty")
        market = self.market_info(request.symbol)
        # Binance lists a market's order types; refuse before sending when stop-loss is not one.
        order_types = ((self._client.markets or {}).get(request.symbol) or {}).get("info", {}).get("orderTypes")
        if isinstance(order_types, list) and order_types and "STOP_LOSS" not in order_types:
            raise InvalidOrderError(f"{self.name} {request.symbol}: no stop-loss market orders on this market")
        prepared = self.prepare_order(OrderRequest(request.client_order_id, request.symbol, request.side,
                                                   OrderType.MARKET, qty=request.qty,
                                                   reduce_only=request.reduce_only))
        trigger = Decimal(stop_price)
        if market.tick_size is not None:
            trigger = round_price_to_tick(trigger, market.tick_size, prepared.side)
        params: dict[str, Any] = {"clientOrderId": prepared.client_order_id, "stopLossPrice": float(trigger)}
        if prepared.reduce_only:
            params["reduceOnly"] = True
        context = f"create_stop_order {prepared.client_order_id}"
        try:
            raw = self._call(context, self._client.create_order, prepared.symbol, "market", prepared.side.value,
                             float(prepared.qty), None, params, write=True)
            state = self._answer(raw, prepared.client_order_id, prepared.symbol, context)
        except ExchangeError as exc:
            if is_definite_rejection(exc):
                raise
            logger.warning("%s: %s; looking it up by client order id", self.name, exc)
            return self._recover(prepared.symbol, prepared.client_order_id, str(exc), trigger=self._trigger_book())
        if state.qty is None:
            state.qty = prepared.qty
        return state

    def fetch_stop_order(self, symbol: str, client_order_id: str) -> OrderState:
        return self.fetch_order(symbol, client_order_id, trigger=self._trigger_book())

    def cancel_stop_order(self, symbol: str, client_order_id: str) -> OrderState:
        return self.cancel_order(symbol, client_order_id, trigger=self._trigger_book())

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        self._require_keys("open_orders")
        raw = self._call("fetch_open_orders", self._client.fetch_open_orders, symbol)
        return [self._order_state(o, o.get("clientOrderId") or "", o.get("symbol") or symbol or "") for o in raw]

    def my_trades(self, symbol: str, since: int | None = None) -> list[Fill]:
        """Fills since ``since``. ccxt trades carry the venue order id, not the client id:
        ``client_order_id`` is set only when the venue reports it."""
        self._require_keys("my_trades")
        raw = self._call("fetch_my_trades", self._client.fetch_my_trades, symbol,
                         since * 1000 if since is not None else None)
        return [self._fill(t, t.get("clientOrderId") or (t.get("info") or {}).get("clientOrderId") or "")
                for t in raw]

    # ------------------------------------------------------------------ parsing

    def _order_state(self, o: dict[str, Any], client_order_id: str, symbol: str) -> OrderState:
        status = _STATUS.get(str(o.get("status")), OrderStatus.NEW if o.get("status") is None else None)
        if status is None:
            raise ExchangeError(f"{self.name}: unknown order status {o.get('status')!r} for {client_order_id}")
        filled = _d(o.get("filled") or 0)
        if status is OrderStatus.OPEN and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
        sym = o.get("symbol") or symbol
        price = _d_opt(o.get("price"))
        average = _d_opt(o.get("average"))
        if average is None and filled > 0 and o.get("cost"):
            average = _d(o["cost"]) / filled
        fills = [self._fill(t, client_order_id) for t in (o.get("trades") or [])]
        # The caller's id wins: a cancel response may carry the cancel request's own client id.
        return OrderState(client_order_id=client_order_id or o.get("clientOrderId") or "", symbol=sym,
                          side=Side(o.get("side") or "buy"),
                          type=OrderType.LIMIT if o.get("type") == "limit" else OrderType.MARKET, status=status,
                          qty=_d_opt(o.get("amount")), price=price if o.get("type") == "limit" else None,
                          exchange_order_id=str(o.get("id") or ""), filled_qty=filled, avg_price=average,
                          fee=self._fee_in_quote(o.get("fee"), sym, average or price),
                          ts=int(o["timestamp"]) // 1000 if o.get("timestamp") else 0, fills=fills)

    def _fee_in_quote(self, fee: dict[str, Any] | None, symbol: str, price: Decimal | None) -> Decimal:
        if not fee or fee.get("cost") is None:
            return D(0)
        cost = _d(fee["cost"])
        base, _, rest = symbol.partition("/")
        quote = rest.split(":")[0]
        currency = fee.get("currency")
        if currency in (None, quote):
            return cost
        if currency == base and price is not None:
            return cost * price
        logger.warning("%s %s: fee of %s %s not in the quote currency; not converted", self.name, symbol, cost,
                       currency)
        return D(0)

    def _fill(self, t: dict[str, Any], client_order_id: str) -> Fill:
        price = _d(t["price"])
        return Fill(client_order_id=client_order_id, symbol=t["symbol"], side=Side(t["side"]), price=price,
                    qty=_d(t["amount"]), fee=max(self._fee_in_quote(t.get("fee"), t["symbol"], price), D(0)),
                    ts=int(t["timestamp"]) // 1000 if t.get("timestamp") else 0,
                    liquidity=Liquidity.MAKER if t.get("takerOrMaker") == "maker" else Liquidity.TAKER,
                    trade_id=str(t.get("id") or ""))


class _TriggerLookup:
    """``recover_order`` for a stop order: look it up in the trigger book."""

    def __init__(self, venue: CcxtExchange) -> None:
        self.name = venue.name
        self._venue = venue

    def fetch_order(self, symbol: str, client_order_id: str) -> OrderState:
        return self._venue.fetch_stop_order(symbol, client_order_id)


def _precision_step(value: Any, mode: int) -> Decimal | None:
    if value is None:
        return None
    if mode == ccxt.DECIMAL_PLACES:
        return D(1).scaleb(-int(value))
    if mode == ccxt.TICK_SIZE:
        return _d(value)
    return None            # significant digits: no fixed grid


def _d(value: Any) -> Decimal:
    return D(repr(value)) if isinstance(value, float) else D(str(value))


def _d_opt(value: Any) -> Decimal | None:
    return None if value is None else _d(value)


def _f(value: Any) -> float:
    return math.nan if value is None else float(value)


# ---------------------------------------------------------------------- collection helper
# Additive, for the market data service (execution.collectors); owned with the collectors.

def fetch_ohlcv_window(venue: CcxtExchange, symbol: str, timeframe: str, start: int, end: int) -> tuple[Any, int]:
    """One ``fetch_ohlcv`` request for the bars opening in ``[start, end]`` (epoch seconds on the
    timeframe grid), rows as the venue sent them: unsorted, duplicates and off-grid rows kept, so
    ``execution.engine.validation`` counts every problem. Returns ``(OhlcvSeries, malformed)``,
    ``malformed`` = rows that are not ``[ms, o, h, l, c, v]``; unreadable values become NaN."""
    from execution.engine.validation import OhlcvSeries

    if timeframe not in TIMEFRAME_SECONDS:
        raise ValueError(f"unsupported timeframe {timeframe!r}")
    tf = TIMEFRAME_SECONDS[timeframe]
    if start % tf or end % tf or end < start:
        raise ValueError(f"window [{start}, {end}] is not on the {timeframe} grid")
    page = venue._call("fetch_ohlcv", venue.client.fetch_ohlcv, symbol, timeframe, start * 1000,
                       (end - start) // tf + 1)
    ts, values, malformed = [], [], 0
    for row in page or []:
        try:
            t = int(row[0]) // 1000
            vals = [_num(v) for v in row[1:6]]
        except (TypeError, ValueError, IndexError, KeyError):
            malformed += 1
            continue
        if len(vals) != 5:
            malformed += 1
            continue
        if start <= t < end + tf:
            ts.append(t)
            values.append(vals)
    arr = np.array(values, dtype=np.float64).reshape(-1, 5)
    return OhlcvSeries(symbol, timeframe, np.array(ts, dtype=np.int64), *arr.T), malformed


def _num(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan
