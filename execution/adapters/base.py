"""The one exchange interface [EX-1].

Implementations: ``sim`` (embedded simulator), ``replay`` (candle files), ``upbit``, ``ccxt``.
Only modules under ``execution/adapters/`` may import ccxt or pyupbit. No Django here either:
adapters get their configuration (keys, options) passed in, so they can run in a worker, a
backtest or a test the same way.

Errors: adapters raise the exceptions below, never return ``None`` for a failure. Messages
never contain API keys or secrets.

Capabilities: what a venue's order API offers (post-only, IOC, market buys by quantity or by
quote, resting stop orders, its client order id rule) is a ``VenueCapabilities``; an adapter
describes itself with a ``capabilities()`` method, or is described in ``KNOWN_CAPABILITIES``
(``capabilities_of``). Resting stop orders are the optional ``StopOrders`` protocol [RK-5].
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Protocol, runtime_checkable

from execution.engine.policy import VenueCapabilities
from execution.engine.types import Candles, Fill, MarketInfo, OrderBook, OrderRequest, OrderState, Ticker


class ExchangeError(Exception):
    """Base class. ``retryable`` says whether the same call may simply be repeated."""

    retryable = False


class TransientExchangeError(ExchangeError):
    """Timeouts, 5xx, connection resets: safe to retry for idempotent reads only."""

    retryable = True


class RateLimitedError(TransientExchangeError):
    """429: back off. ``retry_after`` seconds when the venue said so."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BannedError(ExchangeError):
    """418 (Upbit temporary ban): stop calling the venue until ``until_ts``."""

    def __init__(self, message: str, until_ts: float | None = None) -> None:
        super().__init__(message)
        self.until_ts = until_ts


class AuthenticationError(ExchangeError):
    pass


class InsufficientFundsError(ExchangeError):
    pass


class InvalidOrderError(ExchangeError):
    """The venue refused the order's parameters (precision, minimum, market state)."""


class OrderNotFoundError(ExchangeError):
    pass


class AmbiguousOrderError(ExchangeError):
    """A create/cancel call may or may not have reached the venue (timeout after sending, a
    dropped connection, 5xx, an unreadable 2xx, an answer without an order id or with an unknown
    state, a venue code that says "status unknown").

    Never retry blindly: look the order up by its client order id [EX-4].
    """


class OrderRejectedError(ExchangeError):
    """The venue answered and refused the order with an error code of its own that is not one
    of its "status unknown" codes (ccxt's generic ``ExchangeError`` on a create): not placed."""


#: Create outcomes that prove the venue did not take the order: it answered and said no (bad
#: parameters, funds, keys, permissions, 429 rate limit, 418 ban), or the request never left
#: (our own limiter, a refused precision check). Anything else is UNKNOWN: the order may be on
#: the venue and is looked up by its client order id until it is found or proven absent.
DEFINITE_REJECTIONS: tuple[type[ExchangeError], ...] = (
    InvalidOrderError, InsufficientFundsError, AuthenticationError, RateLimitedError, BannedError,
    OrderRejectedError,
)


def is_definite_rejection(exc: BaseException) -> bool:
    """True when a failed create certainly left nothing on the venue (``DEFINITE_REJECTIONS``)."""
    return isinstance(exc, DEFINITE_REJECTIONS) and not isinstance(exc, AmbiguousOrderError | OrderNotFoundError)


@runtime_checkable
class Exchange(Protocol):
    """What every venue offers. Symbols use the venue's own market code (Upbit ``KRW-BTC``,
    ccxt unified ``BTC/USDT``)."""

    name: str
    #: False for a read-only market-data client; True only when keys were given.
    can_trade: bool

    def markets(self) -> list[MarketInfo]: ...

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]: ...

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        """Candles for one market, oldest first; ``since`` epoch seconds (bar open)."""
        ...

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook: ...

    def balances(self) -> dict[str, Decimal]: ...

    def create_order(self, request: OrderRequest) -> OrderState: ...

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    def fetch_order(self, symbol: str, client_order_id: str) -> OrderState:
        """Look an order up by client order id; raises OrderNotFoundError when the venue has none."""
        ...

    def open_orders(self, symbol: str | None = None) -> list[OrderState]: ...

    def my_trades(self, symbol: str, since: int | None = None) -> list[Fill]: ...


@runtime_checkable
class StopOrders(Protocol):
    """Resting stop orders on the venue [RK-5]: a market order of ``request.qty`` that the venue
    triggers when the price trades at ``stop_price`` (a SELL stop at or below it, a BUY stop at or
    above). Looked up and cancelled by client order id like any order."""

    def create_stop_order(self, request: OrderRequest, stop_price: Decimal) -> OrderState: ...

    def fetch_stop_order(self, symbol: str, client_order_id: str) -> OrderState: ...

    def cancel_stop_order(self, symbol: str, client_order_id: str) -> OrderState: ...


#: Venues whose adapter does not describe itself. Upbit (docs/adr/0001-upbit-adapter.md): limit
#: orders with ``post_only`` / ``ioc`` / ``fok``, market buys only by KRW total (``price``), no
#: stop or trigger orders in the order API (``ord_type`` is limit, price, market or best).
KNOWN_CAPABILITIES: dict[str, VenueCapabilities] = {
    "upbit": VenueCapabilities(post_only=True, ioc=True, fok=True, market_buy_by_qty=False,
                               market_buy_by_quote=True, stop_orders=False, client_id_max_len=36),
}


def capabilities_of(exchange: Exchange) -> VenueCapabilities:
    """The venue's capabilities: its own ``capabilities()``, the table above, else the
    conservative default (plain limit and market orders only)."""
    describe = getattr(exchange, "capabilities", None)
    if callable(describe):
        return describe()
    return KNOWN_CAPABILITIES.get(getattr(exchange, "name", ""), VenueCapabilities())


def supports_stop_orders(exchange: Exchange) -> bool:
    return capabilities_of(exchange).stop_orders and isinstance(exchange, StopOrders)


def recover_order(exchange: Exchange, symbol: str, client_order_id: str, cause: str, *, attempts: int,
                  delay: float, sleep: Callable[[float], None], log: logging.Logger) -> OrderState:
    """After a create/cancel call that may have reached the venue, look the order up by its
    client order id instead of sending it again [EX-4]. Raises AmbiguousOrderError when the
    venue still does not know it, or the lookups themselves fail in any way (an outage, a ban,
    an answer that cannot be read): the outcome stays unknown and the caller must reconcile
    before trading that market. Nothing else escapes, so a failed lookup is never mistaken for
    a definite rejection of the create."""
    for attempt in range(attempts):
        sleep(delay * (attempt + 1))
        try:
            return exchange.fetch_order(symbol, client_order_id)
        except OrderNotFoundError:
            log.info("%s: %s not found yet (lookup %d/%d)", exchange.name, client_order_id, attempt + 1, attempts)
        except ExchangeError as exc:
            log.warning("%s: lookup of %s failed: %s", exchange.name, client_order_id, exc)
    raise AmbiguousOrderError(f"{cause}; order {client_order_id} not found after {attempts} "
                              "lookups: reconcile by client order id before trading this symbol")
