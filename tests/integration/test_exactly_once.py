"""Exactly-once LIVE orders [EXE-2]: a crash at any point of an order's life, against the sim
exchange, is repaired by reconciliation: never a duplicate venue order, never a lost or doubled
fill, and the books agree with the venue to the last unit.

The venue is a real ``SimExchange`` account wrapped so the "process" dies (``Crash``, a
``BaseException`` nothing catches) at a chosen point; the venue itself survives, as a real one
does. Transactions are real (``transaction=True``): the order row and the claim must really be
committed before the venue sees anything.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from execution import live
from execution.adapters.sim import SimExchange
from execution.engine.precision import round_krw_price
from execution.engine.sim import SimConfig
from execution.engine.types import OrderRequest, OrderType, Side
from execution.live import LiveBroker
from execution.marketdata import MarketView
from execution.models import ExecutionFailure, Fill, Order, Position
from execution.paper import book_order_fills, order_from_request
from execution.reconcile import ReconcilePolicy, reconcile_trader
from tests.factories import make_trader, staff_user
from traders import audit
from traders.models import Event, Trader, TraderMode, TraderStatus

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SEED = D("50000000")
SYMBOL = "KRW-SOL"
LATER = 10_000          # seconds: past every lease


class Crash(BaseException):
    """The worker process dies here."""


class CrashingVenue:
    """The sim venue, dying once at ``crash_at``: ``before_call`` (the request never leaves),
    ``after_call`` (the venue took it, the answer is lost) or ``lookup`` (mid-reconciliation)."""

    def __init__(self, venue: SimExchange, crash_at: str | None = None) -> None:
        self.venue = venue
        self.crash_at = crash_at
        self.creates: list[str] = []

    def __getattr__(self, name):
        return getattr(self.venue, name)

    def _maybe(self, point: str) -> None:
        if self.crash_at == point:
            self.crash_at = None
            raise Crash(point)

    def create_order(self, request):
        self._maybe("before_call")
        self.creates.append(request.client_order_id)
        state = self.venue.create_order(request)
        self._maybe("after_call")
        return state

    def fetch_order(self, symbol, client_order_id):
        state = self.venue.fetch_order(symbol, client_order_id)
        self._maybe("lookup")
        return state


def view_of(ex: SimExchange) -> MarketView:
    candles = ex.history().candles.tail(120)
    return MarketView("sim", int(candles.ts[-1]), candles, None, {s: ex.order_book(s) for s in ex.market.symbols},
                      {t.symbol: t for t in ex.tickers()}, {m.symbol: m for m in ex.markets()}, ex.now)


@pytest.fixture
def venue():
    return SimExchange(SimConfig(seed=21, n_markets=4), balances={"KRW": SEED}, warmup_bars=300)


def paper_protection_passed() -> dict:
    """25 h of paper trading, whichever way the trader model counts it (wall time since the first
    start, or accumulated PAPER running time in ``paper_seconds``)."""
    names = {f.name for f in Trader._meta.get_fields()}
    return {"paper_seconds": 25 * 3600} if "paper_seconds" in names else {}


@pytest.fixture
def trader(db):
    t = make_trader(staff_user(username="boss"), name="live-one", seed=SEED)
    Trader.objects.filter(pk=t.pk).update(mode=TraderMode.LIVE, armed=True, status=TraderStatus.RUNNING,
                                          paper_protection_started_at=timezone.now() - timedelta(hours=25),
                                          **paper_protection_passed())
    t.refresh_from_db()
    return t


def fresh(trader) -> Trader:
    return Trader.objects.get(pk=trader.pk)


def entry_tick(trader, exchange, ex: SimExchange, n: int, qty: D) -> None:
    """A tick that decides an entry: position and order rows, queued, sent after commit."""
    view = view_of(ex)
    with transaction.atomic():
        t = Trader.objects.select_for_update().get(pk=trader.pk)
        broker = LiveBroker(t, view, exchange)
        price = D(repr(view.books[SYMBOL].best_ask))
        position = Position.objects.create(trader=t, symbol=SYMBOL, opened_ts=view.bar_ts + 60,
                                           stop_price=price * D("0.9"), initial_stop=price * D("0.9"))
        request = OrderRequest(f"qw{t.pk}-s{n}-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=qty, price=price)
        order = order_from_request(t, request, purpose="entry", bar_ts=view.bar_ts, position=position)
        assert broker.submit(order, request) == []
        assert Order.objects.get(pk=order.pk).status == Order.Status.NEW      # nothing sent inside the tick


def exit_tick(trader, exchange, ex: SimExchange) -> None:
    view = view_of(ex)
    with transaction.atomic():
        t = Trader.objects.select_for_update().get(pk=trader.pk)
        broker = LiveBroker(t, view, exchange)
        position = Position.objects.get(trader=t, status=Position.Status.OPEN)
        request = OrderRequest(f"qw{t.pk}-x{position.pk}-{view.bar_ts}-0", SYMBOL, Side.SELL, OrderType.MARKET,
                               qty=position.qty)
        order = order_from_request(t, request, purpose="exit", bar_ts=view.bar_ts, position=position,
                                   execution={"reason": "SCORE_EXIT"})
        broker.submit(order, request)


def resting_tick(trader, exchange, ex: SimExchange) -> int:
    """A tick's first step: resting orders polled, their new fills booked by the caller."""
    view = view_of(ex)
    booked = 0
    with transaction.atomic():
        t = Trader.objects.select_for_update().get(pk=trader.pk)
        broker = LiveBroker(t, view, exchange)
        for order in Order.objects.select_for_update().filter(
                trader=t, status__in=[Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]).exclude(purpose="stop"):
            fills = broker.advance(order)
            booked += book_order_fills(t, order, fills, reason=order.purpose.upper())
        t.save()
    return booked


def restart(trader, ex: SimExchange, **policy) -> None:
    """A restarted worker reconciles before its next tick."""
    report = reconcile_trader(fresh(trader), ex, now=time.time() + LATER, policy=ReconcilePolicy(**policy),
                              view=view_of(ex))
    assert report.complete, report.errors
    again = reconcile_trader(fresh(trader), ex, now=time.time() + LATER, policy=ReconcilePolicy(**policy),
                             view=view_of(ex))
    assert not again.changed, again.to_dict()          # idempotent


def close_enough(a: D, b: D) -> bool:
    return a == b if connection.vendor != "sqlite" else abs(a - b) <= D("0.000001")


def assert_books_match_venue(trader, ex: SimExchange) -> None:
    t = fresh(trader)
    venue_trades = sorted((f.client_order_id, f.trade_id, f.qty, f.price, f.fee) for f in ex.my_trades(SYMBOL))
    ours = sorted((f.order.client_order_id, f.trade_id, f.qty, f.price, f.fee)
                  for f in Fill.objects.filter(trader=t).select_related("order"))
    assert ours == venue_trades                                        # no lost, no doubled fill
    on_venue = {o.client_order_id for o in ex._orders.values()}
    acked = set(Order.objects.filter(trader=t).exclude(exchange_order_id="").values_list("client_order_id", flat=True))
    assert on_venue == acked                                           # every venue order is ours, once
    for order in Order.objects.filter(trader=t):
        agg = order.fills.aggregate(q=Sum("qty"), f=Sum("fee"))
        assert order.filled_qty == (agg["q"] or 0) and order.fee == (agg["f"] or 0)
        if order.client_order_id in on_venue:
            v = ex.fetch_order(SYMBOL, order.client_order_id)
            assert (order.status, order.filled_qty) == (v.status.value, v.filled_qty)
    balances = ex.balances()
    held = Position.objects.filter(trader=t, status=Position.Status.OPEN).aggregate(q=Sum("qty"))["q"] or D(0)
    assert held == balances.get("SOL", D(0))
    assert close_enough(t.cash, balances["KRW"])
    assert close_enough(t.fees_paid, sum((f.fee for f in ex.my_trades(SYMBOL)), D(0)))
    assert audit.filtered(trader_id=t.pk, kind="FILL").count() == Fill.objects.filter(trader=t).count()
    assert audit.verify_chain() is None


def run_life(trader, ex: SimExchange, crash_at: str | None, leg: str, **policy) -> CrashingVenue:
    """Entry (partly filled at once, the rest resting), bars, exit; crash once at ``crash_at``
    during ``leg``, restart (reconcile), carry on."""
    exchange = CrashingVenue(ex, crash_at if leg == "entry" else None)
    try:
        entry_tick(trader, exchange, ex, 1, D("80"))
    except Crash:
        restart(trader, ex, **policy)
    ex.advance(3)
    resting_tick(trader, exchange, ex)
    if Position.objects.filter(trader=trader, status=Position.Status.OPEN).exists():
        exchange.crash_at = crash_at if leg == "exit" else None
        try:
            exit_tick(trader, exchange, ex)
        except Crash:
            restart(trader, ex, **policy)
    ex.advance(2)
    restart(trader, ex, **policy)
    resting_tick(trader, exchange, ex)
    return exchange


def test_no_crash_baseline(trader, venue):
    exchange = run_life(trader, venue, None, "entry")
    assert exchange.creates[0] == f"qw{trader.pk}-s1-0"
    entry = Order.objects.get(client_order_id=f"qw{trader.pk}-s1-0")
    assert entry.fills.count() >= 2                                    # taker at once, then maker fills
    assert Order.objects.filter(trader=trader, purpose="exit").count() == 1
    assert_books_match_venue(trader, venue)


@pytest.mark.parametrize("leg", ["entry", "exit"])
def test_crash_before_the_call_leaves_no_venue_order(trader, venue, leg):
    exchange = run_life(trader, venue, "before_call", leg)
    crashed = Order.objects.filter(trader=trader, purpose=leg).order_by("id").first()
    assert crashed.status == Order.Status.REJECTED and crashed.error.startswith("NOT_PLACED")
    assert crashed.client_order_id not in exchange.creates
    assert ExecutionFailure.objects.filter(order=crashed, code="NOT_PLACED").exists()
    if leg == "entry":
        assert Position.objects.get(pk=crashed.position_id).status == Position.Status.CLOSED   # never filled
    assert_books_match_venue(trader, venue)


@pytest.mark.parametrize("leg", ["entry", "exit"])
def test_crash_after_the_call_is_recovered_by_client_id(trader, venue, leg):
    exchange = run_life(trader, venue, "after_call", leg)
    crashed = Order.objects.filter(trader=trader, purpose=leg).order_by("id").first()
    assert exchange.creates.count(crashed.client_order_id) == 1        # sent once, never again
    assert crashed.exchange_order_id and crashed.fills.exists()
    assert Event.objects.filter(trader=trader, kind="RECONCILED").exists()
    assert_books_match_venue(trader, venue)


@pytest.mark.parametrize("leg", ["entry", "exit"])
def test_crash_after_storing_changes_nothing(trader, venue, leg, monkeypatch):
    crashed: list[str] = []

    def die(order):
        if order.purpose == leg and not crashed:
            crashed.append(order.client_order_id)
            raise Crash("after_store")

    monkeypatch.setattr(live, "_after_store", die)
    exchange = run_life(trader, venue, None, leg)
    assert len(crashed) == 1
    order = Order.objects.get(client_order_id=crashed[0])
    assert order.exchange_order_id and order.status != Order.Status.NEW
    assert len(exchange.creates) == len(set(exchange.creates))
    assert not ExecutionFailure.objects.filter(trader=trader).exists()
    assert_books_match_venue(trader, venue)


def test_crash_inside_the_tick_rolls_the_intent_back_and_sends_nothing(trader, venue):
    exchange = CrashingVenue(venue)
    with pytest.raises(Crash):
        with transaction.atomic():
            entry_tick(trader, exchange, venue, 1, D("80"))
            raise Crash("before commit")
    assert exchange.creates == [] and not Order.objects.filter(trader=trader).exists()
    assert_books_match_venue(trader, venue)


def test_crash_during_reconciliation_is_repaired_by_the_next_one(trader, venue):
    exchange = CrashingVenue(venue, "after_call")
    with pytest.raises(Crash):
        entry_tick(trader, exchange, venue, 1, D("80"))
    venue.advance(2)
    exchange.crash_at = "lookup"
    with pytest.raises(Crash):
        reconcile_trader(fresh(trader), exchange, now=time.time() + LATER)
    assert not Fill.objects.filter(trader=trader).exists()             # rolled back as a whole
    restart(trader, venue)
    assert_books_match_venue(trader, venue)


def test_unknown_order_is_resubmitted_under_a_new_id_only_when_allowed(trader, venue):
    exchange = CrashingVenue(venue, "before_call")
    with pytest.raises(Crash):
        entry_tick(trader, exchange, venue, 1, D("80"))
    order = Order.objects.get(trader=trader)
    now = order.submitted_at.timestamp() + 200                         # lease over, intent still young
    report = reconcile_trader(fresh(trader), venue, now=now, policy=ReconcilePolicy(resubmit_unknown=True))
    assert report.resubmitted == 1
    order.refresh_from_db()
    assert order.status == Order.Status.REJECTED and order.error == f"NOT_PLACED: re-sent as {order.client_order_id}r1"
    successor = Order.objects.get(parent=order)
    assert successor.client_order_id == f"{order.client_order_id}r1" and successor.exchange_order_id
    assert [o.client_order_id for o in venue._orders.values()] == [successor.client_order_id]
    assert_books_match_venue(trader, venue)


def test_a_send_still_in_flight_is_left_alone(trader, venue):
    exchange = CrashingVenue(venue, "after_call")
    with pytest.raises(Crash):
        entry_tick(trader, exchange, venue, 1, D("80"))
    order = Order.objects.get(trader=trader)
    report = reconcile_trader(fresh(trader), venue, now=order.submitted_at.timestamp() + 5)
    assert report.in_flight == 1 and not report.changed
    assert Order.objects.get(pk=order.pk).status == Order.Status.NEW


def test_unsent_intents_are_sent_when_fresh_and_expired_when_stale(trader, venue):
    exchange = CrashingVenue(venue)
    view = view_of(venue)
    with transaction.atomic():                                          # the process dies right after commit
        t = Trader.objects.select_for_update().get(pk=trader.pk)
        position = Position.objects.create(trader=t, symbol=SYMBOL, opened_ts=view.bar_ts + 60)
        price = D(repr(view.books[SYMBOL].best_ask))
        for n in (1, 2):
            request = OrderRequest(f"qw{t.pk}-s{n}-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=D("1"), price=price)
            order_from_request(t, request, purpose="entry", bar_ts=view.bar_ts, position=position)
    stale = Order.objects.get(client_order_id=f"qw{trader.pk}-s1-0")
    Order.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=10))
    report = reconcile_trader(fresh(trader), exchange, now=time.time())
    assert (report.expired, report.pending_send) == (1, 1)
    assert Order.objects.get(pk=stale.pk).status == Order.Status.EXPIRED
    assert exchange.creates == [f"qw{trader.pk}-s2-0"]                  # sent after the reconcile committed
    assert_books_match_venue(trader, venue)


def test_orphan_venue_orders_of_the_trader_are_cancelled(trader, venue):
    view = view_of(venue)
    price = round_krw_price(D(repr(view.books[SYMBOL].best_bid)) * D("0.9"), Side.BUY, venue.now)
    venue.create_order(OrderRequest(f"qw{trader.pk}-s99-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=D("1"),
                                    price=price))
    venue.create_order(OrderRequest(f"qw{trader.pk + 1}-s99-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=D("1"),
                                    price=price))                       # another trader's: not touched
    report = reconcile_trader(fresh(trader), venue, now=time.time())
    assert report.orphans == [f"qw{trader.pk}-s99-0"]
    assert venue.fetch_order(SYMBOL, f"qw{trader.pk}-s99-0").status.value == "cancelled"
    assert venue.fetch_order(SYMBOL, f"qw{trader.pk + 1}-s99-0").status.value == "open"
    assert Event.objects.filter(trader=trader, kind="RECONCILED", level="CRITICAL").exists()
