"""Reconciliation with the venue [EXE-2]: after a crash, a restart or a lost answer, bring a LIVE
trader's orders, fills and books back to exactly what the venue has. Worker-only.

``reconcile_trader(trader, exchange)`` runs before a LIVE trader's next tick (and from
``manage.py reconcile_orders``). Under the trader's row lock, for every non-final LIVE order:

* NEW, never claimed (``submitted_at`` empty): the venue cannot know it. Fresh ones (younger
  than ``ReconcilePolicy.unsent_max_age_seconds``) are left to the send phase; older ones are
  EXPIRED (``NOT_SENT``): the tick that wanted them is long gone and decides anew.
* NEW and claimed less than ``lease_seconds`` ago: a send may still be in flight; left alone.
* UNKNOWN (the send could not establish the create's outcome) and anything else: looked up by
  client order id.
  - Found: its status is stored and its missing fills stored and booked, exactly once (one
    ``Fill`` per order and venue trade id, ``execution.engine.reconcile.missing_fills``). A final
    entry that got nothing closes its empty position; an exit that fell short reopens the
    position for the manager; a pending policy step (re-price, fallback) gets its successor;
    a cancel that was requested but never confirmed is sent again.
  - Unknown to the venue and never acknowledged (NEW or UNKNOWN): while the send is younger than
    ``unknown_grace_seconds`` it stays UNKNOWN and is looked up again next time (its position
    is left alone: no second buy, no second sell). After that it was never placed: REJECTED
    (``NOT_PLACED``, a failure) or, only when ``resubmit_unknown`` allows it, the trader is still
    eligible and the intent is young, re-sent under its successor id (Upbit burns an
    ``identifier`` even for a failed request, so an id is never reused).
  - Unknown but acknowledged before (OPEN...): the venue lost an order we saw: a CRITICAL event,
    the order is marked EXPIRED (``VENUE_LOST_ORDER``) for an operator to look at.
  - The venue cannot be asked (rate limit, outage): left as it is; the report is incomplete.

Then REJECTED orders that were sent in the last ``recheck_seconds`` (24 h) are looked up again
by client order id (at most ``recheck_limit`` per run, each every ``recheck_interval_seconds``):
a create that was booked rejected but reached the venue after all (the bug of issue 21, or a
venue that answered "no" and placed it anyway) is stored and booked now, its empty position
reopened, with a CRITICAL ``ORDER_FOUND`` event. Then the venue's open orders are checked for
ids of this trader (``qw{trader}-``) that we have no row for (an orphan cannot arise from the
outbox, but a restored database can produce one): they are cancelled (``cancel_orphans``) with
a CRITICAL event. Finally, where the venue reports total balances, the base-asset holdings of
every LIVE trader on the account are compared with the venue's both ways, for every market the
trader holds or ordered in the last 24 h: books above the venue and the venue above the books
(not while a send of that market is in flight) are both a ``BALANCE_MISMATCH`` line in a
CRITICAL ``RECONCILED`` event, which alerts.

Everything except the venue calls happens in one transaction; re-running it changes nothing.
Orders it re-queues are sent after it commits (``send_pending``).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Q

from execution import callstats
from execution import live as live_routing
from execution.adapters.base import Exchange, ExchangeError, OrderNotFoundError, supports_stop_orders
from execution.engine.policy import successor_client_order_id
from execution.engine.reconcile import ReconcileError
from execution.engine.types import OrderRequest, OrderType
from execution.live import (
    LIVE,
    LiveRefused,
    _followup_unsent,
    cancel_on_venue,
    fetch,
    live_refusal,
    send_pending,
    settle,
)
from execution.models import Order, Position
from execution.paper import OPEN_STATUSES, _finish, order_from_request, request_of

logger = logging.getLogger(__name__)
STOP_ID = re.compile(r"^qw\d+-p\d+-t\d+$")


@dataclass(frozen=True)
class ReconcilePolicy:
    lease_seconds: int = 120               # a claimed send younger than this may still be in flight
    unsent_max_age_seconds: int = 120      # a never-sent intent older than this is expired
    resubmit_unknown: bool = False         # re-send an order the venue never got (new id)
    max_resubmit_age_seconds: int = 300    # ...only while the intent is this young
    cancel_orphans: bool = True
    check_orphans: bool = True
    check_balances: bool = True
    unknown_grace_seconds: int = 900       # a sent order the venue does not know stays UNKNOWN this long
    recheck_seconds: int = 86_400          # REJECTED orders sent this recently are looked up again...
    recheck_interval_seconds: int = 600    # ...each at most this often...
    recheck_limit: int = 20                # ...and at most this many per run


@dataclass
class ReconcileReport:
    trader_id: int
    checked: int = 0
    updated: int = 0
    fills: int = 0
    in_flight: int = 0
    pending_send: int = 0
    expired: int = 0
    not_placed: int = 0
    resubmitted: int = 0
    lost: int = 0
    cancels_sent: int = 0
    unknown: int = 0                       # orders whose outcome is still unknown after this run
    rechecked: int = 0                     # REJECTED orders looked up again
    recovered: list[str] = field(default_factory=list)   # ...that the venue does have
    orphans: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> bool:
        return bool(self.updated or self.fills or self.expired or self.not_placed or self.resubmitted or self.lost
                    or self.cancels_sent or self.orphans or self.recovered)

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete}


def reconcile_trader(trader, exchange: Exchange, *, now: float | None = None,
                     policy: ReconcilePolicy = ReconcilePolicy(), view=None) -> ReconcileReport:
    """Reconcile one LIVE trader with ``exchange`` (module docstring). Safe inside the tick's
    transaction (it uses the caller's ``trader`` instance and saves its money fields) and on its
    own. Queued sends happen after the outermost commit."""
    from traders.models import EventLevel, Trader
    from traders.services import log_event

    now = time.time() if now is None else now
    report = ReconcileReport(trader.pk)
    with transaction.atomic():
        list(Trader.objects.select_for_update().filter(pk=trader.pk).values_list("pk", flat=True))
        trader.refresh_from_db(fields=["cash", "realised_pnl", "fees_paid", "mode", "armed", "removed_at",
                                       "paper_protection_started_at"])
        orders = list(Order.objects.select_for_update().filter(trader=trader, mode=LIVE, status__in=OPEN_STATUSES)
                      .order_by("id"))
        requeued = False
        for order in orders:
            report.checked += 1
            requeued |= _reconcile_order(trader, order, exchange, now, policy, report)
        if policy.recheck_seconds > 0:
            _recheck_rejected(trader, exchange, now, policy, report)
        known = set(Order.objects.filter(trader=trader).values_list("client_order_id", flat=True))
        if policy.check_orphans:
            _orphans(trader, exchange, known, policy, report)
        trader.save(update_fields=["cash", "realised_pnl", "fees_paid"])
        if policy.check_balances:
            _balances(trader, exchange, view, report, now=now, policy=policy)
        if report.changed or report.errors or report.mismatches:
            level = EventLevel.CRITICAL if (report.orphans or report.lost or report.mismatches
                                            or report.recovered) else \
                EventLevel.WARN if report.errors else EventLevel.INFO
            log_event(trader, "RECONCILED", _summary(report), level=level, data=report.to_dict())
        if requeued or report.pending_send:
            transaction.on_commit(lambda: send_pending(trader.pk, exchange, view=view), robust=True)
    return report


def _summary(r: ReconcileReport) -> str:
    parts = [f"{r.checked} open orders checked", f"{r.updated} updated", f"{r.fills} fills booked"]
    for name in ("expired", "not_placed", "resubmitted", "lost", "cancels_sent", "unknown"):
        if getattr(r, name):
            parts.append(f"{getattr(r, name)} {name.replace('_', ' ')}")
    if r.recovered:
        parts.append(f"{len(r.recovered)} rejected orders found on the venue and booked")
    if r.orphans:
        parts.append(f"{len(r.orphans)} unknown venue orders cancelled")
    if r.mismatches:
        parts.append("balance mismatch: " + "; ".join(r.mismatches))
    if r.errors:
        parts.append(f"incomplete ({len(r.errors)} lookups failed)")
    return ", ".join(parts)[:500]


def _age(order: Order, now: float) -> float:
    return now - order.created_at.timestamp()


def _reconcile_order(trader, order: Order, exchange: Exchange, now: float, policy: ReconcilePolicy,
                     report: ReconcileReport) -> bool:
    """One order; returns True when something new was queued for sending."""
    from execution.services import record_failure

    if order.status == Order.Status.NEW and order.submitted_at is None:
        if (order.execution or {}).get("cancel"):
            _finish(order, Order.Status.CANCELLED, f"{order.execution['cancel']}: never sent")
            _followup_unsent(trader, order)
            report.updated += 1
        elif _age(order, now) <= policy.unsent_max_age_seconds:
            report.pending_send += 1
        else:
            _finish(order, Order.Status.EXPIRED, "NOT_SENT: the worker stopped before sending; not sent late")
            _followup_unsent(trader, order)
            report.expired += 1
        return False
    if order.status == Order.Status.NEW and now - order.submitted_at.timestamp() < policy.lease_seconds:
        report.in_flight += 1
        return False
    try:
        state = fetch(exchange, order)             # UNKNOWN: at once, the send is over
    except OrderNotFoundError:
        return _unknown(trader, order, exchange, now, policy, report, record_failure)
    except ExchangeError as exc:
        report.errors.append(f"{order.client_order_id}: {exc.__class__.__name__}")
        report.unknown += int(order.status == Order.Status.UNKNOWN)
        return False
    was = (order.status, order.filled_qty)
    try:
        new = settle(trader, order, state, now_ts=int(now))
    except ReconcileError as exc:
        report.errors.append(f"{order.client_order_id}: {exc}")
        logger.error("reconcile %s: %s", order.client_order_id, exc)
        return False
    report.fills += len(new)
    report.updated += int((order.status, order.filled_qty) != was)
    requeued = False
    ex = order.execution or {}
    if order.status in OPEN_STATUSES and ex.get("cancel"):
        try:
            state = cancel_on_venue(exchange, order)
            report.fills += len(settle(trader, order, state, now_ts=int(now)))
            report.cancels_sent += 1
        except ExchangeError as exc:
            report.errors.append(f"{order.client_order_id}: cancel {exc.__class__.__name__}")
    elif order.status not in OPEN_STATUSES and ex.get("pending"):
        requeued = _successor_from_pending(trader, order)
    return requeued


def _unknown(trader, order: Order, exchange: Exchange, now: float, policy: ReconcilePolicy,
             report: ReconcileReport, record_failure) -> bool:
    from traders.models import EventLevel
    from traders.services import log_event

    if order.status not in (Order.Status.NEW, Order.Status.UNKNOWN):
        _finish(order, Order.Status.EXPIRED, "VENUE_LOST_ORDER: acknowledged before, unknown to the venue now")
        report.lost += 1
        log_event(trader, "ORDER_LOST", f"{order.symbol}: the venue no longer knows {order.client_order_id} "
                  f"(was {order.status}); check the account by hand", level=EventLevel.CRITICAL,
                  data={"client_order_id": order.client_order_id})
        return False
    eligible = live_refusal(trader, datetime.fromtimestamp(now, UTC)) is None
    # Never for UNKNOWN: a create whose answer was lost may still show up on the venue.
    if policy.resubmit_unknown and eligible and order.status == Order.Status.NEW \
            and _age(order, now) <= policy.max_resubmit_age_seconds and not (order.execution or {}).get("cancel"):
        ex = dict(order.execution or {})
        n = int(ex.get("successors", 0)) + 1
        request = request_of(order)
        request = OrderRequest(successor_client_order_id(order.client_order_id, n), request.symbol, request.side,
                               request.type, qty=request.qty, price=request.price,
                               quote_amount=request.quote_amount, tif=request.tif)
        child = order_from_request(trader, request, purpose=order.purpose, bar_ts=order.bar_ts, signal=order.signal,
                                   position=order.position, parent=order,
                                   execution={**ex, "successors": n, "step": "resubmit"})
        _finish(order, Order.Status.REJECTED, f"NOT_PLACED: re-sent as {child.client_order_id}")
        report.resubmitted += 1
        return True
    sent_at = (order.submitted_at or order.created_at).timestamp()
    if now - sent_at < policy.unknown_grace_seconds:
        # Not found yet: the venue may still show it. It stays UNKNOWN and holds its position.
        if order.status != Order.Status.UNKNOWN:
            order.status = Order.Status.UNKNOWN
            order.error = "UNKNOWN_STATE: the send did not finish and the venue does not show it yet; " \
                "reconcile by client order id"
            order.save(update_fields=["status", "error", "updated_at"])
            report.updated += 1
            log_event(trader, "ORDER_UNKNOWN", f"{order.symbol}: {order.client_order_id} may or may not be on the "
                      "venue (the send did not finish); looked up again by every reconciliation",
                      level=EventLevel.CRITICAL, data={"client_order_id": order.client_order_id})
        report.unknown += 1
        return False
    _finish(order, Order.Status.REJECTED, "NOT_PLACED: the venue never got it")
    order.execution = {**(order.execution or {}), "rechecked_at": now}
    order.save(update_fields=["execution"])
    _followup_unsent(trader, order)
    report.not_placed += 1
    record_failure(trader, order.symbol, "NOT_PLACED", "the venue does not know the client order id",
                   now=now, order=order)
    return False


def _successor_from_pending(trader, order: Order) -> bool:
    """A policy re-price/fallback waited for the venue to confirm the cancel: queue it now."""
    pending = order.execution["pending"]
    remaining = (order.qty or Decimal(0)) - order.filled_qty
    rest = {k: v for k, v in order.execution.items() if k != "pending"}
    if remaining <= 0:
        order.execution = rest
        order.save(update_fields=["execution", "updated_at"])
        return False
    from execution.live import _request_from

    request = _request_from(pending)
    if request.type is OrderType.MARKET and request.qty is None and request.quote_amount is not None:
        request = OrderRequest(request.client_order_id, request.symbol, request.side, request.type,
                               quote_amount=request.quote_amount, tif=request.tif)
    else:
        request = OrderRequest(request.client_order_id, request.symbol, request.side, request.type, qty=remaining,
                               price=request.price, tif=request.tif)
    ex = dict(rest)
    ex.update(successors=int(ex.get("successors", 0)) + 1, step=pending["step"], reason=pending["reason"],
              fallback=pending["step"] == "fallback")
    order_from_request(trader, request, purpose=order.purpose, bar_ts=order.bar_ts, signal=order.signal,
                       position=order.position, parent=order, execution=ex)
    order.execution = rest
    order.error = f"{pending['reason']}: continued by {request.client_order_id}"[:300]
    order.save(update_fields=["execution", "error", "updated_at"])
    return True


def _recheck_rejected(trader, exchange: Exchange, now: float, policy: ReconcilePolicy,
                      report: ReconcileReport) -> None:
    """REJECTED orders sent in the last ``recheck_seconds``, looked up again by client order id
    (module docstring). One the venue has is stored and booked like any found order."""
    from traders.models import EventLevel
    from traders.services import log_event

    since = datetime.fromtimestamp(now - policy.recheck_seconds, UTC)
    rows = Order.objects.select_for_update().filter(trader=trader, mode=LIVE, status=Order.Status.REJECTED,
                                                    submitted_at__gte=since).order_by("id")

    def last(o: Order) -> float:
        return float((o.execution or {}).get("rechecked_at") or 0)

    due = sorted((o for o in rows if now - last(o) >= policy.recheck_interval_seconds), key=last)
    for order in due[:policy.recheck_limit]:
        report.rechecked += 1
        try:
            state = fetch(exchange, order)
        except OrderNotFoundError:
            order.execution = {**(order.execution or {}), "rechecked_at": now}
            order.save(update_fields=["execution"])
            continue
        except ExchangeError as exc:
            report.errors.append(f"recheck {order.client_order_id}: {exc.__class__.__name__}")
            continue
        if state.status.value == Order.Status.REJECTED and not state.filled_qty:
            order.execution = {**(order.execution or {}), "rechecked_at": now}
            order.save(update_fields=["execution"])
            continue                               # the venue keeps it as rejected too
        was = order.error
        try:
            with transaction.atomic():
                reopened = _reopen_empty_position(order, state)
                new = settle(trader, order, state, now_ts=int(now))
        except (ReconcileError, ArithmeticError, ValueError) as exc:
            report.errors.append(f"recheck {order.client_order_id}: {exc}")
            logger.error("recheck %s: %s", order.client_order_id, exc)
            continue
        order.error = f"FOUND_ON_VENUE after {was[:120]}"[:300]
        order.execution = {**(order.execution or {}), "rechecked_at": now, "found_after_reject": True}
        order.save(update_fields=["error", "execution", "updated_at"])
        report.fills += len(new)
        report.recovered.append(order.client_order_id)
        log_event(trader, "ORDER_FOUND", f"{order.symbol}: {order.client_order_id} was booked rejected but the "
                  f"venue has it ({order.status}, filled {order.filled_qty}); stored and booked now"
                  + ("; its position was reopened" if reopened else ""), level=EventLevel.CRITICAL,
                  data={"client_order_id": order.client_order_id, "filled": str(order.filled_qty)})


def _reopen_empty_position(order: Order, state) -> bool:
    """An entry booked rejected closed its empty position; the venue filled it after all: the
    position opens again to take the fills (not when the trader opened another one meanwhile)."""
    if order.purpose != "entry" or order.position_id is None or not state.filled_qty:
        return False
    position = Position.objects.select_for_update().get(pk=order.position_id)
    if position.status == Position.Status.OPEN or position.qty != 0:
        return False
    if Position.objects.filter(trader_id=order.trader_id, symbol=order.symbol, status=Position.Status.OPEN).exists():
        logger.error("%s filled after a reject but %s has another open position; booked on the closed one",
                     order.client_order_id, order.symbol)
        return False
    position.status, position.closed_ts = Position.Status.OPEN, None
    position.plan = {k: v for k, v in (position.plan or {}).items() if k != "never_filled"}
    position.save(update_fields=["status", "closed_ts", "plan"])
    return True


def _orphans(trader, exchange: Exchange, known: set[str], policy: ReconcilePolicy, report: ReconcileReport) -> None:
    prefix = f"qw{trader.pk}-"
    try:
        venue_open = exchange.open_orders()
    except ExchangeError as exc:
        report.errors.append(f"open orders: {exc.__class__.__name__}")
        return
    for state in venue_open:
        cid = state.client_order_id
        if not cid.startswith(prefix) or cid in known:
            continue
        report.orphans.append(cid)
        if policy.cancel_orphans:
            try:
                if supports_stop_orders(exchange) and STOP_ID.match(cid):
                    exchange.cancel_stop_order(state.symbol, cid)
                else:
                    exchange.cancel_order(state.symbol, cid)
            except ExchangeError as exc:
                report.errors.append(f"orphan {cid}: cancel {exc.__class__.__name__}")


def _venue_totals(exchange: Exchange) -> dict[str, Decimal] | None:
    """Free + locked per asset, where the venue reports it."""
    if hasattr(exchange, "balances_detail"):
        return {c: free + locked for c, (free, locked) in exchange.balances_detail().items()}
    if hasattr(exchange, "total_balances"):
        return exchange.total_balances()
    if getattr(exchange, "name", "") == "sim":
        return exchange.balances()            # the simulated account reports totals
    return None


def _balances(trader, exchange: Exchange, view, report: ReconcileReport, *, now: float,
              policy: ReconcilePolicy) -> None:
    """Books and venue agree on every base asset the trader holds or ordered lately, both ways:
    the LIVE traders sharing the account never hold more than the venue, and the venue never
    holds more than they do (a fill we never booked). The second check skips a market while one
    of its sends is in flight (claimed, or queued: its fills are not booked yet)."""
    from traders.models import Trader

    since = datetime.fromtimestamp(now - policy.recheck_seconds, UTC)
    held = set(Position.objects.filter(trader=trader, status=Position.Status.OPEN, qty__gt=0)
               .values_list("symbol", flat=True))
    ordered = set(Order.objects.filter(trader=trader, mode=LIVE).filter(
        Q(updated_at__gte=since) | Q(status__in=OPEN_STATUSES)).values_list("symbol", flat=True))
    symbols = held | ordered
    if not symbols:
        return
    try:
        totals = _venue_totals(exchange)
    except ExchangeError as exc:
        report.errors.append(f"balances: {exc.__class__.__name__}")
        return
    if totals is None:
        return
    if trader.exchange == "sim":
        sharing = [trader.pk]                  # every LIVE sim trader has its own account
    else:
        sharing = list(Trader.objects.filter(mode=LIVE, exchange=trader.exchange, credential=trader.credential_id)
                       .values_list("pk", flat=True))
    in_flight = set(Order.objects.filter(trader_id__in=sharing, mode=LIVE, status=Order.Status.NEW)
                    .values_list("symbol", flat=True))
    by_base: dict[str, set[str]] = {}
    for symbol in symbols:
        by_base.setdefault(_base_asset(symbol, view), set()).add(symbol)
    for base in sorted(by_base):
        markets = by_base[base]
        books = sum(Position.objects.filter(trader_id__in=sharing, symbol__in=markets, status=Position.Status.OPEN)
                    .values_list("qty", flat=True), Decimal(0))
        venue = totals.get(base, Decimal(0))
        if books > venue:
            report.mismatches.append(f"{base}: books {_qty(books)} > venue {_qty(venue)}")
        elif venue > books and not markets & in_flight:
            report.mismatches.append(f"{base}: venue {_qty(venue)} > books {_qty(books)}")


def _qty(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _base_asset(symbol: str, view) -> str:
    if view is not None and symbol in view.markets:
        return view.markets[symbol].base
    if "/" in symbol:
        return symbol.split("/")[0]
    return symbol.split("-")[-1]


def reconcile_outside_tick(trader, exchange: Exchange, *, now: float | None = None,
                           policy: ReconcilePolicy = ReconcilePolicy()) -> tuple[ReconcileReport, Exchange]:
    """``reconcile_trader`` with no venue call inside a database transaction (issue 21, item 3),
    for the worker's start and ``manage.py reconcile_orders`` as for the tick: the venue is read
    first (``execution.snapshot.VenueSnapshot.prefetch``, no transaction open), reconciliation
    decides and writes from what was read, and the cancels and sends it decided go out after the
    commit. Returns the report and the counted exchange (its calls join the API error window)."""
    from django.conf import settings

    from execution.snapshot import VenueSnapshot

    snapshot = VenueSnapshot.of(exchange)
    snapshot.prefetch(trader.pk, budget=float(getattr(settings, "QUANTWEB_VENUE_READ_BUDGET_SECONDS", 20)))
    try:
        with transaction.atomic():
            snapshot.freeze()
            transaction.on_commit(snapshot.thaw)          # before the queued sends
            transaction.on_commit(lambda: snapshot.run_deferred(trader.pk), robust=True)
            report = reconcile_trader(trader, snapshot, now=now, policy=policy)
    finally:
        snapshot.thaw()
    return report, snapshot


def reconcile_all(*, now: float | None = None, policy: ReconcilePolicy = ReconcilePolicy()) -> list[ReconcileReport]:
    """Reconcile every LIVE trader that has non-final LIVE orders (running or not: a stopped
    trader's resting stops still live on the venue) or REJECTED ones sent in the last 24 h (they
    are looked up again). For the worker's start and the command."""
    from traders.models import Trader

    reports = []
    since = datetime.fromtimestamp((time.time() if now is None else now) - policy.recheck_seconds, UTC)
    ids = set(Order.objects.filter(mode=LIVE, status__in=OPEN_STATUSES).values_list("trader_id", flat=True))
    ids |= set(Order.objects.filter(mode=LIVE, status=Order.Status.REJECTED, submitted_at__gte=since)
               .values_list("trader_id", flat=True))            # re-checked by client id
    for trader in Trader.objects.filter(pk__in=sorted(ids)).order_by("pk"):
        try:
            exchange = callstats.counting(live_routing.exchange_for(trader))
        except LiveRefused as exc:
            logger.warning("reconcile %s: %s", trader.name, exc)
            reports.append(ReconcileReport(trader.pk, errors=[f"venue: {exc.code}: {exc}"]))
            continue
        report, counted = reconcile_outside_tick(trader, exchange, now=now, policy=policy)
        reports.append(report)
        _store_calls(trader.pk, counted)
    return reports


def _store_calls(trader_id: int, exchange) -> None:
    """Reconciliation's venue calls join the trader's API error window [RK-4], after whatever
    transaction is open (the worker's start runs in autocommit: stored at once)."""
    transaction.on_commit(lambda: callstats.store(trader_id, exchange), robust=True)
