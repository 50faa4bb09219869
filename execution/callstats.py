"""Venue call counting for the runtime guard's API error rate [RK-4]. Worker-only.

``CountingExchange(exchange)`` is a transparent proxy around any venue adapter
(``execution.adapters.base.Exchange``: upbit, ccxt, sim, ``PersistentSimExchange``): every call
of a venue method (``VENUE_CALLS``) counts once, and a call that raised an API error also counts
as an error (``is_api_error``). Everything else (``name``, ``can_trade``, ``capabilities()``...)
passes through unchanged, so ``capabilities_of`` and ``supports_stop_orders`` see the venue.

What counts as an API error: the venue (or the way to it) failing: timeouts and 5xx
(``TransientExchangeError``), rate limits (``RateLimitedError``), bans (``BannedError``),
rejected keys (``AuthenticationError``), a call whose outcome is unknown
(``AmbiguousOrderError``), any other ``ExchangeError`` and any unexpected exception (a bug or an
answer the adapter could not read). Not errors: answers of a venue that works
(``OrderNotFoundError``, ``InvalidOrderError``, ``InsufficientFundsError``): a lookup of an order
the venue does not have, or an order it refuses, says nothing about the venue's health.

The counts live in a rolling per-minute window (``execution.engine.callwindow``) in the
trader's ``TraderSafetyState.state["api_calls"]`` (no migration): ``[[minute_ts, calls,
errors], ...]``, pruned to ``callwindow.WINDOW_SECONDS``. Two ways in, never clobbering each
other, both under the safety row's lock:

* inside the tick, which holds the row locked: ``merge_tick_calls`` adds the calls counted so
  far to the tick's own ``safety.state`` (the caller saves it);
* after the tick's commit (the send phase, reconciliation's re-sends): ``store`` -> ``record``
  merges into the row in its own short transaction under ``select_for_update``. Never call it
  inside a transaction that holds the safety row in memory: that row's save would undo it.

Counts taken into a tick that then rolls back are lost (the tick stored nothing else either).
Only integers are stored: no request, answer or key ever reaches the window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.db import DatabaseError, transaction

from execution.adapters.base import (
    Exchange,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
)
from execution.engine import callwindow
from execution.engine.callwindow import Bucket

logger = logging.getLogger(__name__)

#: Key of the window in ``TraderSafetyState.state``.
STATE_KEY = "api_calls"

#: Adapter methods that talk to the venue: the ``Exchange`` and ``StopOrders`` protocols plus the
#: adapters' own extras that make requests (upbit ``balances_detail``/``fees``/``instruments``...,
#: ccxt ``total_balances``/``market_info``; ``prepare_order`` may fetch a tick size or markets).
#: One call of one of these counts once, however many HTTP requests the adapter makes inside it.
VENUE_CALLS = frozenset({
    "markets", "tickers", "candles", "order_book", "balances",
    "create_order", "cancel_order", "fetch_order", "open_orders", "my_trades",
    "create_stop_order", "fetch_stop_order", "cancel_stop_order",
    "balances_detail", "total_balances", "market_info", "fees", "instruments", "candle_window",
    "ticker_snapshot", "order_books", "test_order", "prepare_order",
})

#: Answers of a venue that works: counted as calls, never as errors.
VENUE_ANSWERS: tuple[type[Exception], ...] = (OrderNotFoundError, InvalidOrderError, InsufficientFundsError)

_OWN = frozenset({"_inner", "_clock", "_lock", "_pending", "calls", "errors"})


def is_api_error(exc: BaseException) -> bool:
    """Whether a failed venue call counts against the API error rate (module docstring)."""
    return isinstance(exc, Exception) and not isinstance(exc, VENUE_ANSWERS)


class CountingExchange:
    """Counts the venue calls of ``exchange`` (module docstring); ``calls`` / ``errors`` are the
    totals since it was built, ``take_pending`` hands out the per-minute counts not stored yet.

    Each proxy is an instance of a subclass that defines exactly the venue methods the wrapped
    adapter has: a runtime-checkable protocol (``StopOrders``) judges the proxy like the adapter,
    also where ``isinstance`` looks attributes up statically (Python 3.12+).
    """

    _classes: dict[tuple[str, ...], type[CountingExchange]] = {}

    def __new__(cls, exchange: Exchange, *, clock: Callable[[], float] = time.time) -> CountingExchange:
        if cls is CountingExchange:
            names = tuple(sorted(n for n in VENUE_CALLS if callable(getattr(exchange, n, None))))
            cls = _counting_class(names)
        return super().__new__(cls)

    def __init__(self, exchange: Exchange, *, clock: Callable[[], float] = time.time) -> None:
        if isinstance(exchange, CountingExchange):
            raise TypeError("the exchange is counted already; use counting()")
        object.__setattr__(self, "_inner", exchange)
        object.__setattr__(self, "_clock", clock)
        object.__setattr__(self, "_lock", threading.Lock())
        object.__setattr__(self, "_pending", {})
        object.__setattr__(self, "calls", 0)
        object.__setattr__(self, "errors", 0)

    # -- transparency -------------------------------------------------------------------------
    @property
    def wrapped(self) -> Exchange:
        return self._inner

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def can_trade(self) -> bool:
        return self._inner.can_trade

    def __getattr__(self, attr: str) -> Any:
        if attr in _OWN:                                 # not set up (yet): never recurse
            raise AttributeError(attr)
        value = getattr(self._inner, attr)
        if attr in VENUE_CALLS and callable(value):      # set on the adapter after wrapping
            return _bound(self, attr)
        return value

    def __setattr__(self, attr: str, value: Any) -> None:
        if attr in _OWN:
            object.__setattr__(self, attr, value)
        else:
            setattr(self._inner, attr, value)

    def __repr__(self) -> str:
        return f"CountingExchange({self._inner!r})"

    # -- counting -----------------------------------------------------------------------------
    def _call(self, attr: str, args: tuple, kwargs: dict) -> Any:
        method = getattr(self._inner, attr)
        try:
            result = method(*args, **kwargs)
        except Exception as exc:
            self._count(is_api_error(exc))
            raise
        self._count(False)
        return result

    def _count(self, error: bool) -> None:
        minute = callwindow.bucket_of(self._clock())
        with self._lock:
            row = self._pending.setdefault(minute, [0, 0])
            row[0] += 1
            row[1] += int(error)
            object.__setattr__(self, "calls", self.calls + 1)
            object.__setattr__(self, "errors", self.errors + int(error))

    def pending(self) -> list[Bucket]:
        """Counts not stored yet, ``(minute_ts, calls, errors)`` per minute."""
        with self._lock:
            return [(m, c, e) for m, (c, e) in sorted(self._pending.items())]

    def take_pending(self) -> list[Bucket]:
        """The counts not stored yet; from now on the caller is the one to store them."""
        with self._lock:
            rows = [(m, c, e) for m, (c, e) in sorted(self._pending.items())]
            self._pending.clear()
        return rows

    def give_back(self, rows: Iterable[Bucket]) -> None:
        """Counts whose storing failed: kept for the next attempt."""
        with self._lock:
            for minute, c, e in rows:
                row = self._pending.setdefault(minute, [0, 0])
                row[0] += c
                row[1] += e

    def now(self) -> float:
        return self._clock()


def _bound(proxy: CountingExchange, attr: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return proxy._call(attr, args, kwargs)

    call.__name__ = attr
    return call


def _method(attr: str) -> Callable[..., Any]:
    def method(self: CountingExchange, *args: Any, **kwargs: Any) -> Any:
        return self._call(attr, args, kwargs)

    method.__name__ = method.__qualname__ = attr
    method.__doc__ = f"The venue's ``{attr}``, counted."
    return method


def _counting_class(names: tuple[str, ...]) -> type[CountingExchange]:
    cls = CountingExchange._classes.get(names)
    if cls is None:
        cls = type("CountingExchange", (CountingExchange,), {n: _method(n) for n in names})
        CountingExchange._classes[names] = cls
    return cls


def counting(exchange: Exchange) -> CountingExchange:
    """``exchange`` with its calls counted (itself when it is counted already)."""
    return exchange if isinstance(exchange, CountingExchange) else CountingExchange(exchange)


# -- the stored window ------------------------------------------------------------------------------

def window(state: dict | None, now: float, exchange: Any = None) -> tuple[int, int]:
    """``(calls, errors)`` in the window at ``now``: the stored rows of ``state`` (a safety
    row's ``state``) plus what ``exchange`` counted and has not stored yet."""
    extra = exchange.pending() if isinstance(exchange, CountingExchange) else ()
    return callwindow.totals((state or {}).get(STATE_KEY), now, extra)


def stored_state(trader_id: int) -> dict:
    from risk.models import TraderSafetyState

    return TraderSafetyState.objects.filter(trader_id=trader_id).values_list("state", flat=True).first() or {}


def record(trader_id: int, calls: int, errors: int, now: float) -> None:
    """Add ``calls`` / ``errors`` made at ``now`` to the trader's stored window (own transaction)."""
    record_rows(trader_id, [(callwindow.bucket_of(now), calls, errors)], now)


def record_rows(trader_id: int, rows: Iterable[Bucket], now: float) -> None:
    """Merge per-minute rows into the trader's stored window under the safety row's lock, in a
    short transaction of its own (after a commit: see the module docstring)."""
    from risk.models import TraderSafetyState
    from traders.models import Trader

    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        return
    with transaction.atomic():
        safety = TraderSafetyState.objects.select_for_update().filter(trader_id=trader_id).first()
        if safety is None:
            seed = Trader.objects.filter(pk=trader_id).values_list("seed_money", flat=True).first()
            if seed is None:
                return                                 # the trader is gone
            safety, _ = TraderSafetyState.objects.select_for_update().get_or_create(
                trader_id=trader_id, defaults={"peak_equity": seed})
        safety.state = {**safety.state, STATE_KEY: callwindow.merge(safety.state.get(STATE_KEY), rows, now)}
        safety.save(update_fields=["state", "updated_at"])


def store(trader_id: int, exchange: Any) -> None:
    """Store what ``exchange`` counted and has not stored yet (after a commit). A database that
    cannot take it now keeps the counts for the next attempt; never raises for that."""
    if not isinstance(exchange, CountingExchange):
        return
    rows = exchange.take_pending()
    if not rows:
        return
    try:
        record_rows(trader_id, rows, exchange.now())
    except DatabaseError as exc:
        exchange.give_back(rows)
        logger.warning("trader %s: venue call counts not stored yet (%s)", trader_id, exc.__class__.__name__)


def merge_tick_calls(safety, broker: Any) -> bool:
    """Inside the tick, which holds ``safety`` (the trader's ``TraderSafetyState``) locked: move
    the calls the broker's venue counted so far into ``safety.state`` and have the calls made
    after the commit (send phase, re-sends) stored once they ran. True when ``safety.state``
    changed: the caller saves it."""
    exchange = getattr(broker, "exchange", None)
    if not isinstance(exchange, CountingExchange):
        return False                                   # PAPER: no venue calls at all
    trader_id = safety.trader_id
    # Registered after the broker's own flush and reconciliation's re-send: it runs last.
    transaction.on_commit(lambda: store(trader_id, exchange), robust=True)
    rows = exchange.take_pending()
    if not rows:
        return False
    safety.state = {**safety.state, STATE_KEY: callwindow.merge(safety.state.get(STATE_KEY), rows, exchange.now())}
    return True
