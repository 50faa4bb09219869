"""LIVE order routing [EXE-2], [EXE-3], [EXE-4]: the broker a LIVE trader's tick uses, the venue
adapter it trades on, and the outbox that makes every order exactly-once. Worker-only.

Gate [EXE-4] (``live_refusal``, checked in ``broker_for``, again in ``LiveBroker.__init__`` and
again on the freshly locked trader row right before every venue call): a venue order is only
ever sent for a trader that is in mode LIVE, ARMED, not removed, and whose strategy passed the
paper protection. ``broker_for`` gives PAPER traders the ``PaperBroker`` and builds no venue
client at all for them; a refused LIVE trader gets ``LiveRefused`` (with a reason code and an
event) and no venue client either.

Exactly once [EXE-2] (see docs/adr/0002-exactly-once-orders.md): an order is an outbox row.

1. The tick (one transaction, trader row locked) saves the ``Order`` row, status NEW, with its
   deterministic client order id. ``LiveBroker.submit`` calls no venue: it returns no fills and
   registers ``flush`` to run after the tick's transaction commits.
2. ``send`` (after commit): a short transaction re-checks the gate on the locked trader row and
   *claims* the row (``submitted_at`` = now) and commits; only then is the venue called.
3. The venue's answer is stored and its fills booked (``Fill`` unique per order and trade id)
   in another short transaction.

A crash before 2 leaves NEW without ``submitted_at``: never sent (``flush`` sends it if still
fresh, reconciliation expires it otherwise). A crash between 2 and 3 leaves NEW with
``submitted_at``: it may be on the venue; ``execution.reconcile.reconcile_trader`` looks it up
by client order id once the send's lease has passed. A crash after 3 leaves nothing to repair.

Uncertain creates (issue 21): only a definite venue rejection (``is_definite_rejection``: bad
parameters, funds, keys, 429, 418, a refusal code) books an order REJECTED. Any other failure of
the create (timeout, reset, 5xx, an unreadable 2xx, no order id, an unknown state, a venue
"status unknown" code, a bug) leaves it UNKNOWN: reconciliation looks it up by client order id
until it is found or proven absent, and its position is neither closed nor reopened meanwhile,
so the trader cannot buy that market again or sell twice.

Inside the tick, ``advance`` only reads from the venue and ``cancel`` only cancels (both safe to
repeat if the tick rolls back); a re-price or market fallback [EXE-1] is a new NEW row sent after
commit, once the venue confirmed the parent final (never two live orders of one chain).

Resting stops [RK-5]: after every send phase ``sync_stops`` mirrors each open position's stop
as a venue stop order where the venue has them (``StopOrders``), replacing it when the stop
tightens or the quantity changes; an exit first lifts the position's stop so the venue cannot
sell twice. The worker still enforces every stop on each tick.

API error rate [RK-4]: ``broker_for`` wraps the LIVE venue client in
``execution.callstats.CountingExchange``; every venue call of the tick, of reconciliation and of
the send phase is counted and stored in the trader's rolling window (``execution.callstats``),
and ``LiveBroker.api_stats`` feeds the guard. PAPER builds no venue client and counts nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction

from execution import callstats
from execution.adapters.base import (
    AuthenticationError,
    BannedError,
    Exchange,
    ExchangeError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    OrderRejectedError,
    RateLimitedError,
    TransientExchangeError,
    capabilities_of,
    is_definite_rejection,
    supports_stop_orders,
)
from execution.engine.policy import (
    Decision,
    ExecutionPolicy,
    Step,
    check_client_order_id,
    stop_trigger_price,
)
from execution.engine.reconcile import missing_fills
from execution.engine.types import Fill as EngineFill
from execution.engine.types import OrderRequest, OrderState, OrderStatus, OrderType, Side
from execution.marketdata import MarketView
from execution.models import Order, Position, SimAccount
from execution.paper import (
    OPEN_STATUSES,
    Broker,
    PaperBroker,
    _finish,
    _reject,
    book_order_fills,
    close_if_unfilled,
    order_from_request,
    pending_sell_qty,
    reopen_for_exit,
    request_of,
    store_fill,
    stored_fills,
)

logger = logging.getLogger(__name__)

LIVE = "LIVE"


class LiveRefused(Exception):
    """LIVE trading is not allowed (or not possible) for this trader; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- the gate [EXE-4] -----------------------------------------------------------------------------

def live_refusal(trader, now: datetime | None = None) -> tuple[str, str] | None:
    """Why ``trader`` may not send a LIVE order now (reason code, message), or None."""
    if trader.mode != LIVE:
        return "NOT_LIVE", f"{trader.name} is in {trader.mode} mode"
    if trader.removed_at is not None:
        return "TRADER_REMOVED", f"{trader.name} was removed"
    if not trader.armed:
        return "NOT_ARMED", f"{trader.name} is LIVE but not armed; no order is sent"
    if not trader.paper_protection_passed(now):
        return "PAPER_PROTECTION_PENDING", f"{trader.name}: the paper protection has not passed; no order is sent"
    return None


# -- venue adapters for a trader --------------------------------------------------------------------

_clients: dict[tuple, Exchange] = {}


def exchange_for(trader, view: MarketView | None = None) -> Exchange:
    """The venue adapter ``trader`` trades on: its credential (decrypted here, never logged) and
    exchange. ``sim`` needs no credential: the trader's own simulated account. Upbit and ccxt
    clients are cached per worker process and credential (rate-limit state and markets stay
    warm). Raises ``LiveRefused`` when no trading client can be built."""
    exchange = trader.exchange
    if exchange == "sim":
        return PersistentSimExchange(trader, view)
    if exchange == "replay":
        raise LiveRefused("VENUE_NOT_TRADABLE", "replay is a backtest venue; it cannot take LIVE orders")
    credential = trader.credential
    if credential is None:
        raise LiveRefused("NO_CREDENTIAL", f"{trader.name} has no {exchange} credential")
    if credential.exchange != exchange:
        raise LiveRefused("CREDENTIAL_MISMATCH", f"the credential of {trader.name} is for {credential.exchange}")
    fingerprint = hashlib.sha256(str(credential.api_key).encode()).hexdigest()[:16]   # a rotated key: a new client
    key = (exchange, credential.pk, credential.ccxt_id, credential.sandbox, fingerprint)
    client = _clients.get(key)
    if client is not None:
        return client
    try:
        if exchange == "upbit":
            from execution.adapters.upbit import UpbitExchange

            client = UpbitExchange(str(credential.api_key), str(credential.api_secret))
        elif exchange == "ccxt":
            from execution.adapters.ccxt_adapter import CcxtExchange

            if not credential.ccxt_id:
                raise LiveRefused("NO_CREDENTIAL", "the ccxt credential names no exchange id")
            client = CcxtExchange(credential.ccxt_id, str(credential.api_key), str(credential.api_secret),
                                  sandbox=credential.sandbox)
        else:
            raise LiveRefused("VENUE_NOT_TRADABLE", f"unknown exchange {exchange!r}")
    except (ExchangeError, ValueError) as exc:     # adapter messages never carry keys
        raise LiveRefused("VENUE_UNAVAILABLE", f"{exchange}: {exc}") from None
    _clients[key] = client
    return client


def broker_for(trader, view: MarketView, *, profile: Any = None,
               exchange_factory: Callable[..., Exchange] | None = None,
               now: datetime | None = None) -> PaperBroker | LiveBroker:
    """The broker of one tick: ``PaperBroker`` for PAPER, ``LiveBroker`` only for an eligible LIVE
    trader (``live_refusal``), both with the profile's execution policy. A refused LIVE trader
    raises ``LiveRefused`` and gets an event (once per reason); no venue client is built."""
    policy = ExecutionPolicy.from_profile(profile if profile is not None else _profile(trader))
    if trader.mode != LIVE:
        return PaperBroker(trader, view, policy=policy)
    refusal = live_refusal(trader, now)
    if refusal is None:
        try:
            factory = exchange_factory or exchange_for
            exchange = callstats.counting(factory(trader, view))      # the API error rate [RK-4]
            if not exchange.can_trade:
                raise LiveRefused("VENUE_READ_ONLY", f"{exchange.name}: the client has no trading keys")
            return LiveBroker(trader, view, exchange, policy=policy, now=now)
        except LiveRefused as exc:
            refusal = (exc.code, str(exc))
    _refused(trader, *refusal)
    raise LiveRefused(*refusal)


def _profile(trader) -> Any:
    from strategies.services import effective_profile

    return effective_profile(trader.profile, params=trader.config_version.params)


def _refused(trader, code: str, message: str) -> None:
    from traders.models import EventLevel
    from traders.services import log_event

    text = f"LIVE refused ({code}): {message}"[:200]
    if trader.status_reason != text:
        trader.status_reason = text
        trader.save(update_fields=["status_reason"])
        log_event(trader, "LIVE_REFUSED", text, level=EventLevel.WARN, data={"code": code})


# -- the broker -------------------------------------------------------------------------------------

class LiveBroker(Broker):
    """LIVE: the same interface and policy as ``PaperBroker`` against a venue (module docstring).

    ``submit`` queues (NEW rows, no fills); ``flush`` runs after the caller's transaction commits
    and sends them; fills reach the books in the send phase, in ``advance`` (returned to the
    caller to book, as in PAPER) and in reconciliation.
    """

    mode = LIVE

    def __init__(self, trader, view: MarketView, exchange: Exchange, *, policy: ExecutionPolicy | None = None,
                 now: datetime | None = None, clock: Callable[[], float] = time.time) -> None:
        refusal = live_refusal(trader, now)
        if refusal is not None:                    # defence in depth: never a LIVE broker otherwise
            raise LiveRefused(*refusal)
        if not exchange.can_trade:
            raise LiveRefused("VENUE_READ_ONLY", f"{exchange.name}: the client has no trading keys")
        super().__init__(trader, view, policy=policy, capabilities=capabilities_of(exchange))
        self.exchange = exchange
        self.clock = clock
        self._flush_scheduled = False
        if transaction.get_connection().in_atomic_block:
            self.schedule_flush()           # sends what the tick queued and keeps resting stops in sync

    def schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            transaction.on_commit(self.flush, robust=True)

    # -- the tick's calls -------------------------------------------------------------------------
    def submit(self, order: Order, request: OrderRequest) -> list[EngineFill]:
        """Queue ``order`` (and its policy legs) for sending after commit; no fills yet."""
        for row, leg in self.plan(order, request):
            reason = check_client_order_id(leg.client_order_id, self.capabilities)
            if reason:
                _reject(row, f"CLIENT_ID_REFUSED: {reason}")
                self.failed(row, "CLIENT_ID_REFUSED", reason)
            elif self.blacklisted(row):
                _reject(row, "MARKET_BLACKLISTED")
        self.schedule_flush()
        return []

    def advance_one(self, order: Order) -> list[EngineFill]:
        """Poll the venue for the order's state and new fills (stored here, booked by the caller);
        then the policy's step once it timed out."""
        state = self._lookup(order)
        if state is None:
            return []
        new = _sync(self.trader, order, state, now_ts=self.now_ts)
        if order.status not in OPEN_STATUSES and not new and order.purpose == "entry":
            # The venue ended it by itself (expiry, maintenance...): no empty position is left behind.
            close_if_unfilled(order)
        if order.status in OPEN_STATUSES:
            decision = self.decide(order)
            if decision.step in (Step.REPLACE, Step.FALLBACK):
                new += self._continue(order, decision)
        elif (order.execution or {}).get("pending"):
            self._continue_pending(order)
        return new

    def cancel(self, order: Order, reason: str) -> None:
        """Cancel the rest on the venue. Fills the venue reports with the cancel are not stored
        here (this call returns none to book): the order stays open locally and the next
        ``advance`` or reconciliation stores and books them with its final status."""
        order.refresh_from_db()
        if order.status not in OPEN_STATUSES or order.purpose == "stop":
            return                  # resting stops are managed by ``sync_stops``, never timed out
        why = (order.execution or {}).get("cancel_reason")
        text = f"{reason} ({why})" if why else reason
        if order.status == Order.Status.NEW and order.submitted_at is None:
            _finish(order, Order.Status.CANCELLED, text)     # never sent: nothing on the venue
            return
        if order.status in (Order.Status.NEW, Order.Status.UNKNOWN):   # in flight or unknown: reconcile cancels it
            order.execution = {**(order.execution or {}), "cancel": text[:120]}
            order.save(update_fields=["execution", "updated_at"])
            return
        state = self._cancel_on_venue(order, text)
        if state is None:
            return
        if missing_fills(stored_fills(order), state, now_ts=self.now_ts):
            return
        _sync(self.trader, order, state, now_ts=self.now_ts)
        if order.status not in OPEN_STATUSES:
            order.error = text[:300]
            order.save(update_fields=["error", "updated_at"])

    # -- the send phase (after commit) ------------------------------------------------------------
    def flush(self) -> None:
        """Send every queued order of the trader, then mirror the resting stops; the venue calls
        made so far are stored in the API error window (``execution.callstats``)."""
        self._flush_scheduled = False
        try:
            send_pending(self.trader.pk, self.exchange, view=self.view)
            if supports_stop_orders(self.exchange):
                sync_stops(self.trader.pk, self.exchange, self.view)
        finally:
            callstats.store(self.trader.pk, self.exchange)

    def api_stats(self, now: float | None = None, state: dict | None = None) -> tuple[int, int]:
        """``(calls, errors)`` of the venue in the API error window at ``now`` [RK-4]: the stored
        window (``state``, the trader's ``TraderSafetyState.state``, read when not given) plus the
        calls this broker's venue counted and has not stored yet."""
        now = self.clock() if now is None else now
        if state is None:
            state = callstats.stored_state(self.trader.pk)
        return callstats.window(state, now, self.exchange)

    # -- helpers ----------------------------------------------------------------------------------
    def _lookup(self, order: Order) -> OrderState | None:
        try:
            return fetch(self.exchange, order)
        except OrderNotFoundError:
            logger.warning("%s: venue does not know %s; reconciliation will decide", self.exchange.name,
                           order.client_order_id)
        except ExchangeError as exc:
            logger.warning("%s: lookup of %s failed: %s", self.exchange.name, order.client_order_id, exc)
        return None

    def _cancel_on_venue(self, order: Order, reason: str) -> OrderState | None:
        try:
            state = cancel_on_venue(self.exchange, order)
        except ExchangeError as exc:
            order.execution = {**(order.execution or {}), "cancel": reason[:120]}
            order.save(update_fields=["execution", "updated_at"])
            _warn(self.trader, "CANCEL_FAILED", f"{order.symbol}: cancel of {order.client_order_id} failed "
                  f"({exc.__class__.__name__}); reconciliation retries", order)
            return None
        return state

    def _continue(self, order: Order, decision: Decision) -> list[EngineFill]:
        """Cancel ``order`` on the venue; once it is final, queue the policy's successor."""
        state = self._cancel_on_venue(order, decision.reason)
        if state is None:
            return []
        new = _sync(self.trader, order, state, now_ts=self.now_ts)
        if order.status in OPEN_STATUSES:           # the venue has not confirmed the cancel yet
            assert decision.request is not None
            order.execution = {**(order.execution or {}), "pending": _pending(decision)}
            order.save(update_fields=["execution", "updated_at"])
            return new
        self._queue_successor(order, decision)
        return new

    def _continue_pending(self, order: Order) -> None:
        pending = order.execution["pending"]
        decision = Decision(Step(pending["step"]), pending["reason"], _request_from(pending))
        self._queue_successor(order, decision)

    def _queue_successor(self, order: Order, decision: Decision) -> None:
        assert decision.request is not None
        remaining = (order.qty or Decimal(0)) - order.filled_qty
        market = self.view.markets.get(order.symbol)
        ref = decision.request.price or (decision.request.quote_amount / remaining if remaining > 0
                                         and decision.request.quote_amount else None)
        if remaining <= 0 or market is None or ref is None or remaining * ref < market.min_notional:
            order.execution = {k: v for k, v in (order.execution or {}).items() if k != "pending"}
            order.save(update_fields=["execution", "updated_at"])
            return
        request = decision.request
        if request.quote_amount is not None and request.qty is None:
            request = dataclasses.replace(request, quote_amount=(remaining * ref).quantize(Decimal("1e-8")))
        else:
            request = dataclasses.replace(request, qty=remaining)
        child = self.successor(order, Decision(decision.step, decision.reason, request))
        order.error = f"{decision.reason}: continued by {child.client_order_id}"[:300]
        order.execution = {k: v for k, v in (order.execution or {}).items() if k != "pending"}
        order.save(update_fields=["error", "execution", "updated_at"])
        self.schedule_flush()


def _pending(decision: Decision) -> dict[str, Any]:
    r = decision.request
    assert r is not None
    return {"step": decision.step.value, "reason": decision.reason, "client_order_id": r.client_order_id,
            "symbol": r.symbol, "side": r.side.value, "type": r.type.value, "tif": r.tif.value,
            "qty": None if r.qty is None else str(r.qty), "price": None if r.price is None else str(r.price),
            "quote_amount": None if r.quote_amount is None else str(r.quote_amount)}


def _request_from(p: dict[str, Any]) -> OrderRequest:
    from execution.engine.types import TimeInForce

    def dec(v: str | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    return OrderRequest(p["client_order_id"], p["symbol"], Side(p["side"]), OrderType(p["type"]), qty=dec(p["qty"]),
                        price=dec(p["price"]), quote_amount=dec(p["quote_amount"]), tif=TimeInForce(p["tif"]))


# -- venue calls by order purpose -----------------------------------------------------------------

def fetch(exchange: Exchange, order: Order) -> OrderState:
    if order.purpose == "stop" and supports_stop_orders(exchange):
        return exchange.fetch_stop_order(order.symbol, order.client_order_id)
    return exchange.fetch_order(order.symbol, order.client_order_id)


def cancel_on_venue(exchange: Exchange, order: Order) -> OrderState:
    """Cancel by client id; an answer that is not final yet is confirmed by one lookup."""
    if order.purpose == "stop" and supports_stop_orders(exchange):
        state = exchange.cancel_stop_order(order.symbol, order.client_order_id)
    else:
        state = exchange.cancel_order(order.symbol, order.client_order_id)
    if not state.status.is_final:
        state = fetch(exchange, order)
    return state


# -- storing venue state ----------------------------------------------------------------------------

def _sync(trader, order: Order, state: OrderState, *, now_ts: int) -> list[EngineFill]:
    """Store the venue's view of ``order``: its new fills (exactly once; not booked here) and its
    status. The order's totals are those of its stored fills."""
    new = [dataclasses.replace(f, client_order_id=order.client_order_id, symbol=order.symbol)
           for f in missing_fills(stored_fills(order), state, now_ts=now_ts)]
    for fill in new:
        store_fill(trader, order, fill)
    fills = stored_fills(order)
    qty = sum((f.qty for f in fills), Decimal(0))
    order.filled_qty = qty
    order.fee = sum((f.fee for f in fills), Decimal(0))
    order.avg_price = (sum((f.price * f.qty for f in fills), Decimal(0)) / qty).quantize(Decimal("1e-10")) \
        if qty else None
    order.status = _status(state)
    if state.exchange_order_id:
        order.exchange_order_id = state.exchange_order_id[:64]
    if state.error and not order.error:
        order.error = state.error[:300]
    order.save(update_fields=["status", "filled_qty", "avg_price", "fee", "error", "exchange_order_id", "updated_at"])
    return new


def _status(state: OrderState) -> str:
    if state.status is OrderStatus.NEW:       # acknowledged by the venue but not yet working
        return Order.Status.OPEN
    return state.status.value


def booking_reason(order: Order) -> str:
    if order.purpose == "exit":
        return (order.execution or {}).get("reason") or "EXIT"
    return order.purpose.upper()


def settle(trader, order: Order, state: OrderState, *, now_ts: int) -> list[EngineFill]:
    """Outside a tick: store the venue's state, book the new fills, and when the order is final,
    close an entry that got nothing / reopen a position whose exit fell short. The caller holds
    the trader row lock and saves the trader's money fields."""
    from traders.models import EventLevel
    from traders.services import log_event

    was_final = order.status not in OPEN_STATUSES
    new = _sync(trader, order, state, now_ts=now_ts)
    book_order_fills(trader, order, new, reason=booking_reason(order))
    if order.status in OPEN_STATUSES or was_final:
        return new
    if order.purpose == "entry" and close_if_unfilled(order):
        log_event(trader, "ENTRY_UNFILLED", f"{order.symbol}: entry {order.client_order_id} ended {order.status} "
                  "with nothing filled; position closed", data={"client_order_id": order.client_order_id})
    elif order.purpose == "exit" and order.status != Order.Status.FILLED and order.position_id:
        position = Position.objects.select_for_update().get(pk=order.position_id)
        if position.qty > 0 and position.status == Position.Status.OPEN:
            reopen_for_exit(position)
            log_event(trader, "EXIT_INCOMPLETE", f"{order.symbol}: exit filled {order.filled_qty} of {order.qty} "
                      f"({order.status}); retrying next tick", level=EventLevel.WARN,
                      data={"client_order_id": order.client_order_id})
    return new


def _save_money(trader) -> None:
    trader.save(update_fields=["cash", "realised_pnl", "fees_paid"])


def _warn(trader, kind: str, message: str, order: Order | None = None, *, critical: bool = False) -> None:
    from traders.models import EventLevel
    from traders.services import log_event

    log_event(trader, kind, message, level=EventLevel.CRITICAL if critical else EventLevel.WARN,
              data={"client_order_id": order.client_order_id if order else "", "symbol": order.symbol if order else ""})


def _failure_code(exc: ExchangeError) -> str:
    if isinstance(exc, RateLimitedError):
        return "RATE_LIMITED"
    if isinstance(exc, BannedError):
        return "VENUE_BANNED"
    if isinstance(exc, AuthenticationError):
        return "AUTH_FAILED"
    if isinstance(exc, InsufficientFundsError):
        return "INSUFFICIENT_FUNDS"
    if isinstance(exc, InvalidOrderError | OrderRejectedError):
        return "VENUE_REJECTED"
    if isinstance(exc, TransientExchangeError):
        return "VENUE_UNAVAILABLE"
    return "ORDER_ERROR"


# -- the send phase ---------------------------------------------------------------------------------

def send_pending(trader_id: int, exchange: Exchange, *, view: MarketView | None = None,
                 now: float | None = None) -> int:
    """Send every queued (NEW, never claimed) LIVE order of a trader, oldest first; returns how
    many reached the venue. Called after the tick's commit (``LiveBroker.flush``)."""
    ids = list(Order.objects.filter(trader_id=trader_id, mode=LIVE, status=Order.Status.NEW,
                                    submitted_at__isnull=True).order_by("id").values_list("pk", flat=True))
    return sum(1 for pk in ids if send(pk, exchange, view=view, now=now))


def send(order_id: int, exchange: Exchange, *, view: MarketView | None = None, now: float | None = None) -> bool:
    """Claim, call, store one queued order (module docstring). True when the venue took it."""
    from traders.models import Trader

    now = time.time() if now is None else now
    order = Order.objects.get(pk=order_id)
    if order.status != Order.Status.NEW or order.submitted_at is not None:
        return False
    if order.side == Side.SELL.value and order.purpose != "stop" and order.position_id:
        lift_stops(order.position_id, exchange, now=now)

    # 1. claim: committed before the venue is called [EXE-2]
    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=order.trader_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        if order.status != Order.Status.NEW or order.submitted_at is not None:
            return False                             # sent by someone else meanwhile
        refusal = live_refusal(trader, datetime.fromtimestamp(now, UTC))
        if refusal is not None:
            _reject(order, f"{refusal[0]}: not sent")
            _followup_unsent(trader, order)
            _warn(trader, "LIVE_REFUSED", f"{order.symbol}: {order.client_order_id} not sent: {refusal[1]}", order)
            return False
        if order.purpose == "entry":
            from execution.services import is_blacklisted

            if is_blacklisted(trader, order.symbol, now):
                _reject(order, "MARKET_BLACKLISTED")
                _followup_unsent(trader, order)
                return False
        if order.side == Side.SELL.value and order.position_id and order.purpose in ("exit", "stop"):
            position = Position.objects.select_for_update().get(pk=order.position_id)
            available = position.qty - pending_sell_qty(position, exclude=order)
            if available <= 0 or position.status != Position.Status.OPEN:
                _finish(order, Order.Status.CANCELLED, "nothing left to sell: not sent")
                return False
            if order.qty is not None and order.qty > available:
                order.qty = available
        order.submitted_at = datetime.fromtimestamp(now, UTC)
        order.save(update_fields=["qty", "submitted_at", "updated_at"])
        request = request_of(order)
        stop_price = (order.execution or {}).get("stop_price")

    # 2. the venue call: never repeated blindly
    try:
        if order.purpose == "stop":
            state = exchange.create_stop_order(request, Decimal(stop_price))
        else:
            state = exchange.create_order(request)
    except ExchangeError as exc:
        if is_definite_rejection(exc):
            _not_placed(order, exc, now)              # the venue said no: nothing is on it
        else:
            _unresolved(order, exc, now)              # timeout, 5xx, unreadable, "status unknown"...
        return False
    except Exception as exc:                          # a bug: the call may or may not have gone out
        logger.exception("sending %s failed unexpectedly", order.client_order_id)
        _unresolved(order, exc, now)
        return False

    # 3. store the answer and book its fills
    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=order.trader_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        settle(trader, order, state, now_ts=int(now))
        _save_money(trader)
    _after_store(order)
    return True


def _after_store(order: Order) -> None:
    """Hook point after the answer is stored (a test injects a crash here)."""


def _followup_unsent(trader, order: Order) -> None:
    if order.purpose == "entry":
        close_if_unfilled(order)
    elif order.purpose == "exit" and order.position_id:
        position = Position.objects.select_for_update().get(pk=order.position_id)
        if position.qty > 0:
            reopen_for_exit(position)


def _not_placed(order: Order, exc: ExchangeError, now: float) -> None:
    """The venue definitely refused the order (or it never left): rejected, a failure [EXE-3].
    Only for ``is_definite_rejection``; anything else is ``_unresolved``."""
    from execution.services import record_failure
    from traders.models import Trader

    code = _failure_code(exc)
    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=order.trader_id)
        order = Order.objects.select_for_update().get(pk=order.pk)
        _reject(order, f"{code}: {exc}")
        _followup_unsent(trader, order)
        record_failure(trader, order.symbol, code, str(exc)[:200], now=now, order=order)


def _unresolved(order: Order, exc: BaseException, now: float) -> None:
    """The venue may or may not have the order: UNKNOWN, looked up by client order id by every
    reconciliation until resolved. No follow-up: an entry's position stays open (the market is
    not bought again) and an exit's position is not reopened (it is not sold twice)."""
    from execution.services import record_failure
    from quantweb.logging import redact
    from traders.models import Trader

    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=order.trader_id)
        row = Order.objects.select_for_update().get(pk=order.pk)
        if row.status not in (Order.Status.NEW, Order.Status.UNKNOWN):
            return                                    # settled meanwhile (reconciliation found it)
        row.status = Order.Status.UNKNOWN
        row.error = f"UNKNOWN_STATE: {exc.__class__.__name__}: {redact(str(exc))}"[:260] + "; reconcile by client order id"
        row.save(update_fields=["status", "error", "updated_at"])
        _warn(trader, "ORDER_UNKNOWN", f"{row.symbol}: {row.client_order_id} may or may not be on the venue "
              f"({exc.__class__.__name__}); the next reconciliation looks it up", row, critical=True)
        record_failure(trader, row.symbol, "ORDER_UNKNOWN", str(exc)[:200], now=now, order=row)


# -- resting stops [RK-5] ---------------------------------------------------------------------------

def lift_stops(position_id: int, exchange: Exchange, *, now: float) -> None:
    """Cancel a position's resting venue stops before anything else sells it; fills of a stop
    that triggered meanwhile are booked."""
    from traders.models import Trader

    for stop in Order.objects.filter(position_id=position_id, purpose="stop", status__in=OPEN_STATUSES):
        _cancel_stop(stop, exchange, now=now, trader_model=Trader, reason="lifted for an exit")


def _cancel_stop(stop: Order, exchange: Exchange, *, now: float, trader_model, reason: str) -> None:
    if stop.status == Order.Status.NEW and stop.submitted_at is None:
        _finish(stop, Order.Status.CANCELLED, f"{reason}: never sent")
        return
    try:
        state = cancel_on_venue(exchange, stop)
    except OrderNotFoundError:
        return                                       # reconciliation decides
    except ExchangeError as exc:
        logger.warning("cancel of stop %s failed: %s", stop.client_order_id, exc)
        return
    with transaction.atomic():
        trader = trader_model.objects.select_for_update().get(pk=stop.trader_id)
        row = Order.objects.select_for_update().get(pk=stop.pk)
        settle(trader, row, state, now_ts=int(now))
        if row.status not in OPEN_STATUSES and not row.error:
            row.error = reason
            row.save(update_fields=["error", "updated_at"])
        _save_money(trader)


def stop_order_id(trader_id: int, position_id: int, n: int) -> str:
    return f"qw{trader_id}-p{position_id}-t{n}"


def sync_stops(trader_id: int, exchange: Exchange, view: MarketView, *, now: float | None = None) -> int:
    """Mirror every open position's stop as a resting venue stop order (module docstring);
    returns how many stop orders were placed."""
    from traders.models import Trader

    now = time.time() if now is None else now
    placed = 0
    live_stops = Order.objects.filter(trader_id=trader_id, mode=LIVE, purpose="stop", status__in=OPEN_STATUSES)
    for stop in live_stops.exclude(position__status=Position.Status.OPEN):
        _cancel_stop(stop, exchange, now=now, trader_model=Trader, reason="position closed")
    for position in Position.objects.filter(trader_id=trader_id, status=Position.Status.OPEN, qty__gt=0,
                                            stop_price__isnull=False):
        market = view.markets.get(position.symbol)
        if market is None or position.direction != 1:
            continue
        trigger = stop_trigger_price(Side.SELL, position.stop_price, market, view.data_ts)
        qty = position.qty - pending_sell_qty(position)
        current = list(live_stops.filter(position=position))
        if any(c.execution.get("stop_price") == str(trigger) and c.qty == qty for c in current):
            continue
        for stop in current:
            _cancel_stop(stop, exchange, now=now, trader_model=Trader, reason="stop moved")
        if Order.objects.filter(pk__in=[c.pk for c in current], status__in=OPEN_STATUSES).exists():
            continue                                  # not confirmed cancelled: try next time
        position.refresh_from_db()
        qty = position.qty - pending_sell_qty(position)
        if qty <= 0 or position.status != Position.Status.OPEN or qty * trigger < market.min_notional:
            continue
        n = Order.objects.filter(position=position, purpose="stop").count() + 1
        with transaction.atomic():
            trader = Trader.objects.select_for_update().get(pk=trader_id)
            request = OrderRequest(stop_order_id(trader_id, position.pk, n), position.symbol, Side.SELL,
                                   OrderType.MARKET, qty=qty)
            row = order_from_request(trader, request, purpose="stop", bar_ts=view.bar_ts, position=position,
                                     execution={"stop_price": str(trigger), "successors": 0})
        placed += int(send(row.pk, exchange, view=view, now=now))
    return placed


# -- cancelling on STOP and the kill switches --------------------------------------------------------
#
# No venue I/O inside a database transaction (issue 21, item 3): the cancel requests are written
# in one short transaction, each venue call is made with no transaction of ours open, and each
# answer is stored in a short transaction of its own under the trader's row lock. A hung venue
# therefore holds no database lock, and a STOP or an emergency stop is never stuck behind it.

@dataclasses.dataclass
class CancelReport:
    """What ``cancel_working_orders`` did: orders that ended cancelled (or filled meanwhile), and
    one line per order the venue could not confirm (the cancel request stays on the order)."""

    cancelled: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)
    left: int = 0                              # unknown to the venue (still in flight, or lost)


def _working(trader_id: int, *, keep_stops: bool, purposes: tuple[str, ...] | None):
    orders = Order.objects.filter(trader_id=trader_id, mode=LIVE, status__in=OPEN_STATUSES)
    if keep_stops:
        orders = orders.exclude(purpose="stop")
    if purposes is not None:
        orders = orders.filter(purpose__in=purposes)
    return orders.order_by("id")


def traders_with_working_orders(*, purposes: tuple[str, ...] | None = None, keep_stops: bool = True) -> list[int]:
    """Ids of the traders with working LIVE orders (of ``purposes``), for the kill switches."""
    orders = Order.objects.filter(mode=LIVE, status__in=OPEN_STATUSES)
    if keep_stops:
        orders = orders.exclude(purpose="stop")
    if purposes is not None:
        orders = orders.filter(purpose__in=purposes)
    return sorted(set(orders.values_list("trader_id", flat=True)))


def request_live_cancels(trader, reason: str, *, keep_stops: bool = True,
                         purposes: tuple[str, ...] | None = None) -> tuple[int, list[int]]:
    """Database only, in one (possibly the caller's) transaction: never-sent orders end CANCELLED
    here; every other working order gets a cancel request (``execution["cancel"]``) that the venue
    step, and failing that reconciliation, carries out. Returns (ended here, ids for the venue)."""
    from traders.models import Trader

    ended, to_venue = 0, []
    with transaction.atomic():
        locked = Trader.objects.select_for_update().get(pk=trader.pk)
        for order in _working(trader.pk, keep_stops=keep_stops, purposes=purposes).select_for_update():
            if order.status == Order.Status.NEW and order.submitted_at is None:
                _finish(order, Order.Status.CANCELLED, f"{reason}: never sent")
                _followup_unsent(locked, order)
                ended += 1
                continue
            if (order.execution or {}).get("cancel") != reason[:120]:
                order.execution = {**(order.execution or {}), "cancel": reason[:120]}
                order.save(update_fields=["execution", "updated_at"])
            to_venue.append(order.pk)
    return ended, to_venue


def cancel_working_orders(trader_id: int, reason: str, *, exchange: Exchange | None = None, keep_stops: bool = True,
                          purposes: tuple[str, ...] | None = None) -> CancelReport:
    """Cancel a LIVE trader's working orders (``purposes``, all but resting stops by default) on
    the venue; see the section comment. Call it outside a transaction (STOP and the kill switches
    do); inside one, the venue calls would run under the caller's locks. Never raises for a venue
    failure, an unreadable answer or a credential that cannot be decrypted: the order keeps its
    cancel request, a CRITICAL ``CANCEL_FAILED`` event alerts, and the failure is reported."""
    from traders.models import Trader

    trader = Trader.objects.get(pk=trader_id)
    report = CancelReport()
    report.cancelled, to_venue = request_live_cancels(trader, reason, keep_stops=keep_stops, purposes=purposes)
    if not to_venue:
        return report
    try:
        venue = callstats.counting(exchange if exchange is not None else exchange_for(trader))
    except Exception as exc:          # LiveRefused, a lost encryption key, an adapter that cannot start
        for pk in to_venue:
            _cancel_failed(trader_id, pk, exc, report)
        return report
    try:
        for pk in to_venue:
            order = Order.objects.get(pk=pk)
            if order.status not in OPEN_STATUSES:
                continue                             # settled meanwhile (a tick, reconciliation)
            try:
                state = cancel_on_venue(venue, order)            # no transaction of ours is open
            except OrderNotFoundError:                # in flight, never placed, or lost: asked again
                report.left += 1
                report.failed.append(f"{order.client_order_id}: not on the venue (yet)")
                continue
            except Exception as exc:                 # ExchangeError, an unparsable answer, a bug
                _cancel_failed(trader_id, pk, exc, report)
                continue
            try:
                if _store_cancel(trader_id, pk, state, reason):
                    report.cancelled += 1
            except Exception as exc:
                logger.exception("storing the cancel of %s failed", order.client_order_id)
                _cancel_failed(trader_id, pk, exc, report)
    finally:
        if transaction.get_connection().in_atomic_block:     # these cancels join the API error window [RK-4]
            transaction.on_commit(lambda: callstats.store(trader_id, venue), robust=True)
        else:
            callstats.store(trader_id, venue)
    return report


def _store_cancel(trader_id: int, order_id: int, state: OrderState, reason: str) -> bool:
    """The venue's answer to a cancel, in a short transaction; True when the order is final."""
    from traders.models import Trader

    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=trader_id)
        order = Order.objects.select_for_update().get(pk=order_id)
        settle(trader, order, state, now_ts=int(time.time()))
        final = order.status not in OPEN_STATUSES
        if final:
            order.execution = {k: v for k, v in (order.execution or {}).items() if k != "cancel"}
            if not order.error:
                order.error = reason[:300]
            order.save(update_fields=["execution", "error", "updated_at"])
        _save_money(trader)
    return final


def _cancel_failed(trader_id: int, order_id: int, exc: BaseException, report: CancelReport) -> None:
    from quantweb.logging import redact
    from traders.models import Trader

    detail = redact(str(exc)).strip()[:120]
    why = f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__
    with transaction.atomic():
        trader = Trader.objects.get(pk=trader_id)
        order = Order.objects.get(pk=order_id)
        report.failed.append(f"{order.client_order_id}: {why}"[:200])
        _warn(trader, "CANCEL_FAILED", f"{order.symbol}: {order.client_order_id} could not be cancelled on the "
              f"venue ({why}); the cancel request stays and is retried", order, critical=True)


def cancel_live_orders(trader, reason: str, *, exchange: Exchange | None = None, keep_stops: bool = True) -> int:
    """Cancel a LIVE trader's working orders on the venue (a stopped trader no longer ticks);
    returns how many ended. Resting stops stay (``keep_stops``): they are the positions' only
    protection while the worker does not tick; their fills are booked when the trader is
    reconciled again. ``cancel_working_orders`` with the failures dropped (they are events)."""
    return cancel_working_orders(trader.pk, reason, exchange=exchange, keep_stops=keep_stops).cancelled


# -- the sim venue of a LIVE trader -----------------------------------------------------------------

class PersistentSimExchange:
    """A LIVE trader's account on the ``sim`` exchange (``SnapshotSimVenue``), persisted in its
    ``SimAccount`` row. Every call loads the account under a row lock, first matches its resting
    orders against the collected bars it has not seen, and saves it back: it behaves like a venue
    whose state outlives the worker. The account starts with the trader's cash in the quote
    currency."""

    name = "sim"
    can_trade = True

    def __init__(self, trader, view: MarketView | None = None) -> None:
        if view is None:
            from execution.marketdata import latest_bar, load_view

            bar = latest_bar("sim")
            if bar is None:
                raise LiveRefused("VENUE_UNAVAILABLE", "the sim exchange has no market data yet")
            view = load_view("sim", bar)
        self.trader_id = trader.pk
        self.start_cash = trader.cash
        self.view = view

    def __repr__(self) -> str:
        return f"PersistentSimExchange(trader={self.trader_id})"

    @contextmanager
    def _venue(self) -> Iterator[Any]:
        from execution.adapters.sim import SnapshotSimVenue

        view = self.view
        with transaction.atomic():
            row = SimAccount.objects.select_for_update().filter(trader_id=self.trader_id).first()
            if row is None:
                quote = next(iter(view.markets.values())).quote if view.markets else "KRW"
                venue = SnapshotSimVenue(view.markets, view.books, view.data_ts, balances={quote: self.start_cash})
                row = SimAccount(trader_id=self.trader_id, state=venue.get_state(), last_bar_ts=view.bar_ts)
            else:
                venue = SnapshotSimVenue(view.markets, view.books, view.data_ts, state=row.state)
                if view.bar_ts > row.last_bar_ts:
                    venue.match(view.candles, row.last_bar_ts)
            yield venue
            row.state = venue.get_state()
            row.last_bar_ts = max(row.last_bar_ts, view.bar_ts)
            row.save()

    def capabilities(self):
        from execution.adapters.sim import SIM_CAPABILITIES

        return SIM_CAPABILITIES

    def markets(self):
        return list(self.view.markets.values())

    def tickers(self, symbols=None):
        with self._venue() as venue:
            return venue.tickers(symbols)

    def candles(self, symbol, timeframe, since=None, limit=200):
        with self._venue() as venue:
            return venue.candles(symbol, timeframe, since, limit)

    def order_book(self, symbol, depth=15):
        with self._venue() as venue:
            return venue.order_book(symbol, depth)

    def balances(self):
        with self._venue() as venue:
            return venue.balances()

    def create_order(self, request):
        with self._venue() as venue:
            return venue.create_order(request)

    def cancel_order(self, symbol, client_order_id):
        with self._venue() as venue:
            return venue.cancel_order(symbol, client_order_id)

    def fetch_order(self, symbol, client_order_id):
        with self._venue() as venue:
            return venue.fetch_order(symbol, client_order_id)

    def open_orders(self, symbol=None):
        with self._venue() as venue:
            return venue.open_orders(symbol)

    def my_trades(self, symbol, since=None):
        with self._venue() as venue:
            return venue.my_trades(symbol, since)

    def create_stop_order(self, request, stop_price):
        with self._venue() as venue:
            return venue.create_stop_order(request, stop_price)

    def fetch_stop_order(self, symbol, client_order_id):
        return self.fetch_order(symbol, client_order_id)

    def cancel_stop_order(self, symbol, client_order_id):
        return self.cancel_order(symbol, client_order_id)
