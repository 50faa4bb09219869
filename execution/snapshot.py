"""No venue I/O inside a database transaction (issue 21, item 3): a LIVE tick reads the venue
first, then decides and writes in its transaction from what it read.

``VenueSnapshot`` wraps a LIVE trader's venue adapter for one tick. It is the counted exchange
of the tick (a ``CountingExchange``: every real venue call is counted once [RK-4]) with two
modes:

* thawed (before the tick's transaction and after its commit): calls go to the venue.
  ``prefetch`` reads, with no transaction open and within a time budget, everything the tick's
  reconciliation and broker ask for: each working LIVE order by client id (one lookup each), the
  venue's open orders and, when positions are held, the balances.
* frozen (inside the tick's transaction): reads are answered from what ``prefetch`` read (an
  error it met is raised again, a read it did not make raises ``NotRead``: the caller treats it
  as a venue that did not answer and the next tick asks again). A cancel is recorded and answered
  with the order's last known state (not final: the caller keeps the order working); creating an
  order raises ``NotRead`` (the tick only queues orders). Nothing reaches the venue.

After the commit the snapshot thaws, then ``run_deferred`` sends the recorded cancels, each
venue call with no transaction open and each answer stored in a short transaction under the
trader's row lock (fills booked, an empty entry closed, a short exit reopened, a pending re-price
queued and sent). A cancel the venue does not confirm leaves a cancel request on the order for
the next reconciliation, and a ``CANCEL_FAILED`` event.

A hung venue therefore costs the tick time before its transaction (bounded by ``budget``), never
a held database lock: the web keeps answering and an emergency stop is accepted at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from django.db import transaction

from execution import callstats
from execution.adapters.base import ExchangeError, OrderNotFoundError, TransientExchangeError
from execution.models import Order, Position
from execution.paper import OPEN_STATUSES

logger = logging.getLogger(__name__)

FETCHES = ("fetch_order", "fetch_stop_order")
CANCELS = ("cancel_order", "cancel_stop_order")
BALANCES = ("balances_detail", "total_balances", "balances")
DEFAULT_BUDGET_SECONDS = 20.0


class NotRead(TransientExchangeError):
    """The tick asked for something the snapshot did not read before its transaction."""


class VenueSnapshot(callstats.CountingExchange):
    """See the module docstring. Build it with ``VenueSnapshot.of(exchange)``."""

    _snapshot_classes: dict[tuple[str, ...], type] = {}

    def __new__(cls, exchange, *, clock: Callable[[], float] = time.time):
        names = tuple(sorted(n for n in callstats.VENUE_CALLS if callable(getattr(exchange, n, None))))
        sub = VenueSnapshot._snapshot_classes.get(names)
        if sub is None:
            sub = type("VenueSnapshot", (VenueSnapshot,), {n: callstats._method(n) for n in names})
            VenueSnapshot._snapshot_classes[names] = sub
        return object.__new__(sub)

    def __init__(self, exchange, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(exchange, clock=clock)
        object.__setattr__(self, "_frozen", False)
        object.__setattr__(self, "_reads", {})          # key -> ("ok", value) | ("error", exception)
        object.__setattr__(self, "_deferred", [])       # (method, symbol, client order id)
        object.__setattr__(self, "_capabilities", None)
        object.__setattr__(self, "prefetch_seconds", 0.0)

    @classmethod
    def of(cls, exchange) -> VenueSnapshot:
        if isinstance(exchange, callstats.CountingExchange):
            exchange = exchange.wrapped
        return cls(exchange)

    def __repr__(self) -> str:
        return f"VenueSnapshot({self._inner!r})"

    # -- modes ------------------------------------------------------------------------------------
    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)

    def thaw(self) -> None:
        object.__setattr__(self, "_frozen", False)

    def capabilities(self):
        if self._capabilities is None:
            object.__setattr__(self, "_capabilities", self._inner.capabilities())
        return self._capabilities

    # -- reading before the transaction ----------------------------------------------------------
    def prefetch(self, trader_id: int, *, budget: float = DEFAULT_BUDGET_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Read what the tick will ask for (module docstring); never raises for the venue."""
        from execution.adapters.base import supports_stop_orders
        from execution.live import LIVE

        if transaction.get_connection().in_atomic_block:
            logger.warning("venue prefetch of trader %s runs inside a transaction", trader_id)
        now = time.time()
        start = clock()
        deadline = start + budget

        def read(key: tuple, func: Callable[[], Any]) -> None:
            if clock() > deadline:
                self._reads[key] = ("error", NotRead(f"not read: the venue took over {budget:.0f} s"))
                return
            try:
                self._reads[key] = ("ok", func())
            except Exception as exc:
                if not isinstance(exc, ExchangeError):    # an answer the adapter could not read
                    exc = TransientExchangeError(f"unreadable venue answer ({exc.__class__.__name__})")
                self._reads[key] = ("error", exc)

        try:
            self.capabilities()
        except Exception:
            logger.warning("capabilities of trader %s's venue unknown", trader_id, exc_info=True)
        stops = False
        try:
            stops = supports_stop_orders(self)
        except Exception:
            pass
        orders = (Order.objects.filter(trader_id=trader_id, mode=LIVE, status__in=OPEN_STATUSES)
                  .exclude(status=Order.Status.NEW, submitted_at__isnull=True).order_by("id")
                  .values_list("purpose", "symbol", "client_order_id"))
        for purpose, symbol, cid in [*orders, *_rechecks(trader_id, now)]:
            method = "fetch_stop_order" if purpose == "stop" and stops else "fetch_order"
            read((method, symbol, cid), lambda m=method, s=symbol, c=cid: super(VenueSnapshot, self)._call(m, (s, c), {}))
        read(("open_orders",), lambda: super(VenueSnapshot, self)._call("open_orders", (), {}))
        if _balances_wanted(trader_id, now):
            for name in BALANCES:                # as ``execution.reconcile._venue_totals`` asks
                if name == "balances" and getattr(self._inner, "name", "") != "sim":
                    break
                if callable(getattr(self._inner, name, None)):
                    read((name,), lambda n=name: super(VenueSnapshot, self)._call(n, (), {}))
                    break                        # reconciliation reads the first one the venue has
        object.__setattr__(self, "prefetch_seconds", clock() - start)

    # -- answering inside the transaction ------------------------------------------------------------
    def _call(self, attr: str, args: tuple, kwargs: dict) -> Any:
        if not self._frozen:
            return super()._call(attr, args, kwargs)
        if attr in FETCHES:
            return self._answer(self._fetch_key(attr, args, kwargs))
        if attr == "open_orders" and not args and not kwargs:
            return list(self._answer(("open_orders",)))
        if attr in BALANCES and not args and not kwargs:
            return self._answer((attr,))
        if attr in CANCELS:
            return self._defer_cancel(attr, args, kwargs)
        raise NotRead(f"{attr}: no venue call inside the tick's transaction")

    def _fetch_key(self, attr: str, args: tuple, kwargs: dict) -> tuple:
        symbol = args[0] if args else kwargs.get("symbol")
        cid = args[1] if len(args) > 1 else kwargs.get("client_order_id")
        return (attr, symbol, cid)

    def _answer(self, key: tuple) -> Any:
        kind, value = self._reads.get(key, (None, None))
        if kind == "ok":
            return value
        if kind == "error":
            raise value
        if key[0] in FETCHES:                   # listed among the open orders: the same answer
            found = self._from_open_orders(key[2])
            if found is not None:
                return found
        raise NotRead(f"{key[0]} was not read before the tick")

    def _from_open_orders(self, cid: str):
        kind, value = self._reads.get(("open_orders",), (None, None))
        if kind != "ok":
            return None
        return next((s for s in value if getattr(s, "client_order_id", None) == cid), None)

    def _defer_cancel(self, attr: str, args: tuple, kwargs: dict):
        symbol, cid = self._fetch_key(attr, args, kwargs)[1:]
        fetch = "fetch_stop_order" if attr == "cancel_stop_order" else "fetch_order"
        kind, value = self._reads.get((fetch, symbol, cid), (None, None))
        if kind == "error":
            raise value                          # the venue did not answer: the caller keeps a request
        state = value if kind == "ok" else self._from_open_orders(cid)
        if state is not None and state.status.is_final:
            return state                         # nothing left to cancel
        if (attr, symbol, cid) not in self._deferred:
            self._deferred.append((attr, symbol, cid))
        if state is None:
            raise NotRead(f"{cid}: cancel sent after the tick commits")
        return state                             # still working until the venue confirms

    @property
    def deferred(self) -> list[tuple[str, str, str]]:
        return list(self._deferred)

    # -- after the commit -------------------------------------------------------------------------------
    def run_deferred(self, trader_id: int) -> int:
        """Send the cancels recorded inside the transaction (thawed, no transaction open); returns
        how many orders ended. Never raises."""
        self.thaw()
        ended = 0
        deferred, self._deferred[:] = list(self._deferred), []
        for attr, symbol, cid in deferred:
            try:
                ended += int(self._cancel_now(trader_id, attr, symbol, cid))
            except Exception:
                logger.exception("deferred cancel of %s failed", cid)
        return ended

    def _cancel_now(self, trader_id: int, attr: str, symbol: str, cid: str) -> bool:
        from execution.live import cancel_on_venue

        order = Order.objects.filter(trader_id=trader_id, client_order_id=cid).first()
        if order is None:                         # an orphan reconciliation found
            try:
                getattr(self, attr)(symbol, cid)
            except Exception as exc:
                logger.warning("cancel of unknown venue order %s failed: %s", cid, exc.__class__.__name__)
            return False
        if order.status not in OPEN_STATUSES:
            return False
        try:
            state = cancel_on_venue(self, order)
        except OrderNotFoundError:
            return False                          # reconciliation decides
        except Exception as exc:                  # a failure or an answer the adapter could not read
            _keep_request(trader_id, order.pk, "cancel after the tick", exc)
            return False
        return _store(trader_id, order.pk, state, self)


def _policy():
    from execution.reconcile import ReconcilePolicy

    return ReconcilePolicy()


def _rechecks(trader_id: int, now: float) -> list[tuple[str, str, str]]:
    """The REJECTED orders the tick's reconciliation will look up again (``_recheck_rejected``
    of ``execution.reconcile``, with its default policy), as (purpose, symbol, client id)."""
    from datetime import UTC, datetime

    from execution.live import LIVE

    policy = _policy()
    seconds = getattr(policy, "recheck_seconds", 0)
    if seconds <= 0:
        return []
    since = datetime.fromtimestamp(now - seconds, UTC)
    rows = Order.objects.filter(trader_id=trader_id, mode=LIVE, status=Order.Status.REJECTED,
                                submitted_at__gte=since).only("purpose", "symbol", "client_order_id", "execution")

    def last(o: Order) -> float:
        return float((o.execution or {}).get("rechecked_at") or 0)

    interval = getattr(policy, "recheck_interval_seconds", 0)
    due = sorted((o for o in rows if now - last(o) >= interval), key=last)
    return [(o.purpose, o.symbol, o.client_order_id) for o in due[:getattr(policy, "recheck_limit", 20)]]


def _balances_wanted(trader_id: int, now: float) -> bool:
    """Whether the tick's reconciliation compares balances: positions held, or LIVE orders
    working or touched in the last ``recheck_seconds``."""
    from datetime import UTC, datetime

    from django.db.models import Q

    from execution.live import LIVE

    if not getattr(_policy(), "check_balances", True):
        return False
    if Position.objects.filter(trader_id=trader_id, status=Position.Status.OPEN, qty__gt=0).exists():
        return True
    since = datetime.fromtimestamp(now - getattr(_policy(), "recheck_seconds", 0), UTC)
    return Order.objects.filter(trader_id=trader_id, mode=LIVE).filter(
        Q(updated_at__gte=since) | Q(status__in=OPEN_STATUSES)).exists()


def _keep_request(trader_id: int, order_id: int, reason: str, exc: BaseException) -> None:
    from execution.live import _warn
    from traders.models import Trader

    with transaction.atomic():
        trader = Trader.objects.get(pk=trader_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status not in OPEN_STATUSES:
            return
        if not (order.execution or {}).get("cancel"):
            order.execution = {**(order.execution or {}), "cancel": reason}
            order.save(update_fields=["execution", "updated_at"])
        _warn(trader, "CANCEL_FAILED", f"{order.symbol}: cancel of {order.client_order_id} failed "
              f"({exc.__class__.__name__}); reconciliation retries", order)


def _store(trader_id: int, order_id: int, state, exchange) -> bool:
    """A deferred cancel's answer, in a short transaction; a pending re-price is queued and sent."""
    from execution.live import _save_money, send_pending, settle
    from execution.reconcile import _successor_from_pending
    from traders.models import Trader

    queued = False
    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=trader_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        settle(trader, order, state, now_ts=int(time.time()))
        final = order.status not in OPEN_STATUSES
        if final:
            ex = order.execution or {}
            if ex.get("pending"):
                queued = _successor_from_pending(trader, order)
            elif not order.error:
                order.error = (ex.get("cancel") or "cancelled after the tick")[:300]
                order.save(update_fields=["error", "updated_at"])
        _save_money(trader)
    if queued:
        send_pending(trader_id, exchange)
    return final
