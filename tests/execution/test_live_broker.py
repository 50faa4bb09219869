"""LIVE broker [EXE-1]..[EXE-4]: the gate, the venue factory, the outbox send phase, the policy's
cancel/replace on a venue, failures and the market blacklist, resting stops, PAPER and LIVE
executing alike. Against a real ``SimExchange`` account (no network)."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.db import transaction
from django.utils import timezone

from execution import live
from execution.adapters.base import capabilities_of, supports_stop_orders
from execution.adapters.ccxt_adapter import CcxtExchange
from execution.adapters.sim import SimExchange
from execution.adapters.upbit import UpbitExchange
from execution.engine.policy import ExecutionPolicy
from execution.engine.precision import round_krw_price
from execution.engine.sim import SimConfig
from execution.engine.types import OrderRequest, OrderType, Side, TimeInForce
from execution.live import (
    LiveBroker,
    LiveRefused,
    PersistentSimExchange,
    broker_for,
    exchange_for,
    sync_stops,
)
from execution.marketdata import MarketView
from execution.models import ExecutionFailure, MarketBlacklist, Order, Position, SimAccount
from execution.paper import PaperBroker, book_order_fills, order_from_request
from execution.reconcile import reconcile_trader
from execution.services import blacklisted_markets, cancel_open_orders, is_blacklisted
from tests.factories import make_trader, staff_user
from traders.models import Credential, Event, Trader, TraderMode, TraderStatus
from traders.models_alerts import AlertOutbox

SEED = D("50000000")
SYMBOL = "KRW-SOL"


def view_of(ex: SimExchange) -> MarketView:
    candles = ex.history().candles.tail(120)
    return MarketView("sim", int(candles.ts[-1]), candles, None, {s: ex.order_book(s) for s in ex.market.symbols},
                      {t.symbol: t for t in ex.tickers()}, {m.symbol: m for m in ex.markets()}, ex.now)


class Recording:
    """Counts every order-changing call, then delegates to the venue."""

    def __init__(self, venue) -> None:
        self.venue = venue
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self.venue, name)

    def create_order(self, request):
        self.calls.append(("create", request.client_order_id))
        return self.venue.create_order(request)

    def cancel_order(self, symbol, client_order_id):
        self.calls.append(("cancel", client_order_id))
        return self.venue.cancel_order(symbol, client_order_id)

    def create_stop_order(self, request, stop_price):
        self.calls.append(("stop", request.client_order_id))
        return self.venue.create_stop_order(request, stop_price)

    def cancel_stop_order(self, symbol, client_order_id):
        self.calls.append(("cancel_stop", client_order_id))
        return self.venue.cancel_stop_order(symbol, client_order_id)


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


def entry(trader, view, n: int, qty: D, price: D, *, symbol: str = SYMBOL, stop: D | None = None):
    position = Position.objects.create(trader=trader, symbol=symbol, opened_ts=view.bar_ts + 60,
                                       stop_price=stop, initial_stop=stop)
    request = OrderRequest(f"qw{trader.pk}-s{n}-0", symbol, Side.BUY, OrderType.LIMIT, qty=qty, price=price)
    order = order_from_request(trader, request, purpose="entry", bar_ts=view.bar_ts, position=position)
    return order, request


def tick(trader, view, exchange, fn, capture, **kw):
    """One tick: ``fn(broker)`` inside a transaction; the send phase runs on commit."""
    with capture(execute=True):
        with transaction.atomic():
            t = Trader.objects.select_for_update().get(pk=trader.pk)
            broker = LiveBroker(t, view, exchange, **kw)
            result = fn(t, broker)
            t.save()
    return result


# -- the gate [EXE-4] -----------------------------------------------------------------------------

def test_broker_for_gives_paper_traders_the_paper_broker_and_builds_no_venue(trader, venue):
    Trader.objects.filter(pk=trader.pk).update(mode=TraderMode.PAPER, armed=False)
    trader.refresh_from_db()
    calls = []
    broker = broker_for(trader, view_of(venue), exchange_factory=lambda *a: calls.append(a))
    assert isinstance(broker, PaperBroker) and calls == []
    assert broker.policy == ExecutionPolicy.from_profile(live._profile(trader))


@pytest.mark.parametrize("change,code", [
    ({"armed": False}, "NOT_ARMED"),
    ({"paper_protection_started_at": None}, "PAPER_PROTECTION_PENDING"),
    ({"removed_at": timezone.now()}, "TRADER_REMOVED"),
])
def test_ineligible_live_traders_are_refused_with_a_reason_and_one_event(trader, venue, change, code):
    if "paper_protection_started_at" in change:
        change = {"paper_protection_started_at": timezone.now() - timedelta(hours=23),
                  **{k: 23 * 3600 for k in paper_protection_passed()}}
    Trader.objects.filter(pk=trader.pk).update(**change)
    trader.refresh_from_db()
    calls = []
    for _ in range(3):
        with pytest.raises(LiveRefused) as exc:
            broker_for(trader, view_of(venue), exchange_factory=lambda *a: calls.append(a))
        assert exc.value.code == code
    assert calls == []                                                   # no venue client was built
    assert Event.objects.filter(trader=trader, kind="LIVE_REFUSED").count() == 1
    trader.refresh_from_db()
    assert trader.status_reason.startswith(f"LIVE refused ({code})")
    with pytest.raises(LiveRefused):
        LiveBroker(trader, view_of(venue), venue)                        # not even built directly


def test_eligible_live_trader_gets_a_live_broker(trader, venue):
    calls = []

    def factory(t, view):
        calls.append(t.pk)
        return venue

    broker = broker_for(trader, view_of(venue), exchange_factory=factory)
    assert isinstance(broker, LiveBroker) and calls == [trader.pk] and broker.exchange.wrapped is venue   # counted [RK-4]


def test_read_only_or_unbuildable_venue_is_refused(trader, venue):
    ro = UpbitExchange()
    with pytest.raises(LiveRefused) as exc:
        broker_for(trader, view_of(venue), exchange_factory=lambda t, v: ro)
    assert exc.value.code == "VENUE_READ_ONLY"

    def no_keys(t, v):
        raise LiveRefused("NO_CREDENTIAL", "none")

    with pytest.raises(LiveRefused) as exc:
        broker_for(trader, view_of(venue), exchange_factory=no_keys)
    assert exc.value.code == "NO_CREDENTIAL"


def test_exchange_for_builds_each_venue_from_its_credential(trader, venue):
    view = view_of(venue)
    assert isinstance(exchange_for(trader, view), PersistentSimExchange)        # sim: no credential
    Trader.objects.filter(pk=trader.pk).update(exchange="upbit")
    trader.refresh_from_db()
    with pytest.raises(LiveRefused, match="no upbit credential"):
        exchange_for(trader)
    up = Credential.objects.create(exchange="upbit", label="u", api_key="A" * 40, api_secret="S" * 40)
    trader.credential = up
    client = exchange_for(trader)
    assert isinstance(client, UpbitExchange) and client.can_trade and exchange_for(trader) is client   # cached
    assert "AAAA" not in repr(client)
    trader.exchange = "ccxt"
    with pytest.raises(LiveRefused) as exc:
        exchange_for(trader)
    assert exc.value.code == "CREDENTIAL_MISMATCH"
    cx = Credential.objects.create(exchange="ccxt", ccxt_id="binance", label="b", api_key="k" * 20,
                                   api_secret="s" * 20, sandbox=True)
    trader.credential = cx
    client = exchange_for(trader)
    assert isinstance(client, CcxtExchange) and client.exchange_id == "binance"
    assert "testnet" in str(client.client.urls["api"])
    trader.exchange = "replay"
    with pytest.raises(LiveRefused) as exc:
        exchange_for(trader)
    assert exc.value.code == "VENUE_NOT_TRADABLE"


def test_capabilities_per_venue():
    up = capabilities_of(UpbitExchange())
    assert up.post_only and up.ioc and not up.market_buy_by_qty and up.market_buy_by_quote and not up.stop_orders
    assert not supports_stop_orders(UpbitExchange("a" * 10, "b" * 10))
    bn = CcxtExchange("binance", "k", "s").capabilities()
    assert bn.ioc and bn.post_only and bn.stop_orders and bn.client_id_max_len == 36
    okx = CcxtExchange("okx", "k", "s", password="p").capabilities()
    assert okx.client_id_max_len == 32 and okx.client_id_alnum_only
    assert not CcxtExchange("binance").capabilities().stop_orders         # read-only client


# -- the outbox ---------------------------------------------------------------------------------------

def test_submit_sends_nothing_inside_the_tick_and_everything_after_commit(trader, venue,
                                                                        django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    price = D(repr(view.books[SYMBOL].best_ask))

    def decide(t, broker):
        order, request = entry(t, view, 1, D("2"), price)
        assert broker.submit(order, request) == []
        assert rec.calls == []                                             # not inside the transaction
        return order

    order = tick(trader, view, rec, decide, django_capture_on_commit_callbacks)
    assert rec.calls == [("create", f"qw{trader.pk}-s1-0")]
    order.refresh_from_db()
    assert order.status == Order.Status.FILLED and order.submitted_at and order.exchange_order_id == "sim-1"
    trader.refresh_from_db()
    assert Position.objects.get(pk=order.position_id).qty == D("2")
    assert trader.cash == SEED - sum(f.price * f.qty + f.fee for f in order.fills.all())


def test_the_gate_is_checked_again_right_before_the_venue_call(trader, venue, django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)

    def decide(t, broker):
        order, request = entry(t, view, 1, D("2"), D(repr(view.books[SYMBOL].best_ask)))
        broker.submit(order, request)
        t.armed = False                                                  # disarmed before the send phase
        return order

    order = tick(trader, view, rec, decide, django_capture_on_commit_callbacks)
    order.refresh_from_db()
    assert rec.calls == [] and order.status == Order.Status.REJECTED and order.error.startswith("NOT_ARMED")
    assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED


def test_exit_quantity_is_capped_by_what_the_position_holds(trader, venue, django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    order = tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 1, D("2"), D(repr(view.books[SYMBOL].best_ask)))) or
                 None, django_capture_on_commit_callbacks)
    position = Position.objects.get(trader=trader)

    def two_exits(t, broker):
        for n in (0, 1):
            req = OrderRequest(f"qw{t.pk}-x{position.pk}-{view.bar_ts}-{n}", SYMBOL, Side.SELL, OrderType.MARKET,
                               qty=D("2"))
            broker.submit(order_from_request(t, req, purpose="exit", bar_ts=view.bar_ts, position=position), req)

    tick(trader, view, rec, two_exits, django_capture_on_commit_callbacks)
    assert order is None
    first = Order.objects.get(client_order_id=f"qw{trader.pk}-x{position.pk}-{view.bar_ts}-0")
    second = Order.objects.get(client_order_id=f"qw{trader.pk}-x{position.pk}-{view.bar_ts}-1")
    assert first.status == Order.Status.FILLED and first.filled_qty == D("2")
    assert second.status == Order.Status.CANCELLED and "nothing left to sell" in second.error
    assert [c for c in rec.calls if c[0] == "create"][1:] == [("create", f"qw{trader.pk}-x{position.pk}-{view.bar_ts}-0")]
    assert venue.balances().get("SOL") is None and Position.objects.get(pk=position.pk).qty == 0


# -- policy on a venue [EXE-1] -------------------------------------------------------------------------

def test_timed_out_entry_is_cancelled_then_re_priced_under_a_derived_id(trader, venue,
                                                                       django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    policy = ExecutionPolicy(limit_offset_bps=100, max_replaces=2, timeout_seconds=30)
    ask = D(repr(view.books[SYMBOL].best_ask))

    def decide(t, broker):
        order, request = entry(t, view, 1, D("3"), ask)
        broker.submit(order, request)
        return order

    order = tick(trader, view, rec, decide, django_capture_on_commit_callbacks, policy=policy)
    order.refresh_from_db()
    assert order.status == Order.Status.OPEN and order.price < ask            # 1 % inside the touch: resting
    venue.advance(1)
    later = view_of(venue)

    def resting(t, broker):
        fills = broker.advance(Order.objects.get(pk=order.pk))
        book_order_fills(t, order, fills, reason="ENTRY")

    tick(trader, later, rec, resting, django_capture_on_commit_callbacks, policy=policy)
    order.refresh_from_db()
    child = Order.objects.get(parent=order)
    assert order.status == Order.Status.CANCELLED and order.error == f"REPLACE_1: continued by {child.client_order_id}"
    assert child.client_order_id == f"qw{trader.pk}-s1-0r1" and child.execution["successors"] == 1
    assert child.qty == D("3") - order.filled_qty and child.price > order.price
    assert rec.calls[-2:] == [("cancel", order.client_order_id), ("create", child.client_order_id)]
    assert venue.fetch_order(SYMBOL, child.client_order_id).exchange_order_id == child.exchange_order_id


def test_paper_and_live_plan_the_same_orders(trader, venue, django_capture_on_commit_callbacks):
    view = view_of(venue)
    policy = ExecutionPolicy(limit_offset_bps=10, split_legs=3, leg_spacing_bps=10, post_only=True)
    ask = D(repr(view.books[SYMBOL].best_ask))
    plans = {}
    for mode in ("paper", "live"):
        Order.objects.all().delete()
        Position.objects.all().delete()
        with transaction.atomic():
            t = Trader.objects.get(pk=trader.pk)
            broker = PaperBroker(t, view, policy=policy) if mode == "paper" else LiveBroker(t, view, venue, policy=policy)
            order, request = entry(t, view, 1, D("9"), ask)
            broker.submit(order, request)
            plans[mode] = [(o.client_order_id, o.price, o.qty, o.tif) for o in Order.objects.order_by("id")]
    assert plans["paper"] == plans["live"]
    assert [p[0] for p in plans["paper"]] == [f"qw{trader.pk}-s1-{k}" for k in range(3)]
    assert all(p[3] == TimeInForce.POST_ONLY.value for p in plans["paper"])


# -- failures and the blacklist [EXE-3] -----------------------------------------------------------------

def test_three_failures_blacklist_the_market_and_alert(trader, venue, settings, django_capture_on_commit_callbacks):
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID = "123:abc", "42"
    rec = Recording(venue)
    view = view_of(venue)
    off_tick = D(repr(view.books[SYMBOL].best_bid)) + D("1")             # not on the KRW grid: rejected

    for n in (1, 2, 3):
        tick(trader, view, rec, lambda t, b, n=n: b.submit(*entry(t, view, n, D("1"), off_tick)),
             django_capture_on_commit_callbacks)
    assert [c[0] for c in rec.calls] == ["create"] * 3
    assert ExecutionFailure.objects.filter(trader=trader, symbol=SYMBOL, code="VENUE_REJECTED").count() == 3
    assert Position.objects.filter(trader=trader, status=Position.Status.OPEN).count() == 0
    now = time.time()
    assert is_blacklisted(trader, SYMBOL, now) and not is_blacklisted(trader, "KRW-ETH", now)
    assert set(blacklisted_markets(trader, now)) == {SYMBOL}
    ban = MarketBlacklist.objects.get(trader=trader, symbol=SYMBOL)
    assert 590 <= ban.until - now <= 600
    assert Event.objects.filter(trader=trader, kind="ORDER_FAILED", level="WARN").count() == 3
    assert Event.objects.filter(trader=trader, kind="MARKET_BLACKLISTED").count() == 1
    assert AlertOutbox.objects.filter(kind="MARKET_BLACKLISTED").exists()
    assert AlertOutbox.objects.filter(kind="ORDER_FAILED").exists()

    ask = D(repr(view.books[SYMBOL].best_ask))
    order = tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 4, D("1"), ask)) or
                 Order.objects.get(client_order_id=f"qw{t.pk}-s4-0"), django_capture_on_commit_callbacks)
    order.refresh_from_db()
    assert order.status == Order.Status.REJECTED and order.error == "MARKET_BLACKLISTED"
    assert len(rec.calls) == 3                                           # the venue never saw it
    assert not is_blacklisted(trader, SYMBOL, ban.until)


def test_rate_limits_are_failures_but_not_the_markets_fault(trader, venue, django_capture_on_commit_callbacks):
    from execution.adapters.base import RateLimitedError

    class Limited(Recording):
        def create_order(self, request):
            self.calls.append(("create", request.client_order_id))
            raise RateLimitedError("429", retry_after=1.0)

    rec = Limited(venue)
    view = view_of(venue)
    ask = D(repr(view.books[SYMBOL].best_ask))
    for n in (1, 2, 3):
        tick(trader, view, rec, lambda t, b, n=n: b.submit(*entry(t, view, n, D("1"), ask)),
             django_capture_on_commit_callbacks)
    assert ExecutionFailure.objects.filter(code="RATE_LIMITED").count() == 3
    assert not is_blacklisted(trader, SYMBOL, time.time())
    assert Order.objects.filter(status=Order.Status.REJECTED, error__startswith="RATE_LIMITED").count() == 3


# -- resting stops [RK-5] ----------------------------------------------------------------------------

def test_stops_rest_on_the_venue_follow_a_tighter_stop_and_book_their_fill(trader, venue,
                                                                        django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    ask = D(repr(view.books[SYMBOL].best_ask))
    stop = round_krw_price(ask * D("0.95"), Side.SELL, venue.now)
    tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 1, D("2"), ask, stop=stop)),
         django_capture_on_commit_callbacks)
    position = Position.objects.get(trader=trader)
    first = Order.objects.get(position=position, purpose="stop")
    assert rec.calls[-1] == ("stop", f"qw{trader.pk}-p{position.pk}-t1")
    assert venue.stop_price(first.client_order_id) == stop and first.qty == D("2")
    assert venue.locked_balances()["SOL"] == D("2")

    assert sync_stops(trader.pk, rec, view) == 0                            # in sync: nothing sent
    with transaction.atomic():                                              # a tick's timeout never cancels it
        LiveBroker(Trader.objects.get(pk=trader.pk), view, rec).cancel(first, "timeout: remainder cancelled")
    assert rec.calls[-1] == ("stop", first.client_order_id) and first.status == Order.Status.OPEN
    tighter = round_krw_price(ask * D("0.99"), Side.SELL, venue.now)
    Position.objects.filter(pk=position.pk).update(stop_price=tighter)
    assert sync_stops(trader.pk, rec, view) == 1
    first.refresh_from_db()
    second = Order.objects.get(position=position, purpose="stop", status=Order.Status.OPEN)
    assert first.status == Order.Status.CANCELLED and second.client_order_id.endswith("-t2")
    assert rec.calls[-2:] == [("cancel_stop", first.client_order_id), ("stop", second.client_order_id)]

    # the market falls through the stop: the venue sells, reconciliation books it exactly once
    Position.objects.filter(pk=position.pk).update(stop_price=ask * 2)      # (not re-synced: the venue holds t2)
    venue._stops[second.client_order_id] = ask * 2                        # any bar now trades through it
    venue.advance(1)
    report = reconcile_trader(Trader.objects.get(pk=trader.pk), venue, now=time.time())
    second.refresh_from_db()
    position.refresh_from_db()
    assert second.status == Order.Status.FILLED and report.fills >= 1
    assert position.status == Position.Status.CLOSED and position.qty == 0
    assert venue.balances().get("SOL") is None
    assert reconcile_trader(Trader.objects.get(pk=trader.pk), venue, now=time.time()).fills == 0


def test_an_exit_lifts_the_resting_stop_first(trader, venue, django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    ask = D(repr(view.books[SYMBOL].best_ask))
    stop = round_krw_price(ask * D("0.95"), Side.SELL, venue.now)
    tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 1, D("2"), ask, stop=stop)),
         django_capture_on_commit_callbacks)
    position = Position.objects.get(trader=trader)
    stop_id = f"qw{trader.pk}-p{position.pk}-t1"

    def exit_all(t, broker):
        req = OrderRequest(f"qw{t.pk}-x{position.pk}-{view.bar_ts}-0", SYMBOL, Side.SELL, OrderType.MARKET,
                           qty=D("2"))
        broker.submit(order_from_request(t, req, purpose="exit", bar_ts=view.bar_ts, position=position), req)

    tick(trader, view, rec, exit_all, django_capture_on_commit_callbacks)
    assert rec.calls[-2:] == [("cancel_stop", stop_id), ("create", f"qw{trader.pk}-x{position.pk}-{view.bar_ts}-0")]
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED
    assert not Order.objects.filter(purpose="stop", status__in=["new", "open"]).exists()


def test_venues_without_stop_orders_get_none(trader, venue, django_capture_on_commit_callbacks):
    class NoStops(Recording):
        def capabilities(self):
            from dataclasses import replace

            return replace(self.venue.capabilities(), stop_orders=False)

    rec = NoStops(venue)
    view = view_of(venue)
    ask = D(repr(view.books[SYMBOL].best_ask))
    tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 1, D("2"), ask, stop=ask * D("0.9"))),
         django_capture_on_commit_callbacks)
    assert [c[0] for c in rec.calls] == ["create"]
    assert not Order.objects.filter(purpose="stop").exists()


# -- STOP of a LIVE trader ------------------------------------------------------------------------------

def test_stopping_a_live_trader_cancels_its_working_orders_on_the_venue(trader, venue,
                                                                     django_capture_on_commit_callbacks):
    rec = Recording(venue)
    view = view_of(venue)
    bid = D(repr(view.books[SYMBOL].best_bid))
    ask = D(repr(view.books[SYMBOL].best_ask))
    resting_price = round_krw_price(bid * D("0.98"), Side.BUY, venue.now)
    tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 1, D("2"), ask, stop=ask * D("0.9"))),
         django_capture_on_commit_callbacks)
    tick(trader, view, rec, lambda t, b: b.submit(*entry(t, view, 2, D("1"), resting_price, symbol="KRW-ETH")),
         django_capture_on_commit_callbacks)
    with transaction.atomic():
        t = Trader.objects.select_for_update().get(pk=trader.pk)
        assert cancel_open_orders(t, "trader stopped", exchange=rec) == 1
    resting = Order.objects.get(client_order_id=f"qw{trader.pk}-s2-0")
    assert resting.status == Order.Status.CANCELLED
    assert venue.fetch_order("KRW-ETH", resting.client_order_id).status.value == "cancelled"
    assert Order.objects.get(purpose="stop").status == Order.Status.OPEN    # the positions' protection stays


# -- the sim account of a LIVE trader ---------------------------------------------------------------------

def test_sim_account_persists_and_matches_new_bars(trader, venue):
    view = view_of(venue)
    bid = D(repr(view.books[SYMBOL].best_bid))
    price = round_krw_price(bid * D("0.999"), Side.BUY, venue.now)
    ex = exchange_for(trader, view)
    state = ex.create_order(OrderRequest(f"qw{trader.pk}-s1-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=D("1"),
                                         price=price))
    assert state.status.value == "open"
    account = SimAccount.objects.get(trader=trader)
    assert account.last_bar_ts == view.bar_ts and D(account.state["account"]["free"]["KRW"]) < SEED
    again = exchange_for(Trader.objects.get(pk=trader.pk), view)          # a new worker: same account
    assert again.fetch_order(SYMBOL, f"qw{trader.pk}-s1-0").status.value == "open"
    for _ in range(600):
        venue.advance(1)
        later = view_of(venue)
        if float(later.candles.low[later.candles.index(SYMBOL), -1]) < float(price):
            break
    filled = exchange_for(trader, later).fetch_order(SYMBOL, f"qw{trader.pk}-s1-0")
    assert filled.filled_qty > 0 and SimAccount.objects.get(trader=trader).last_bar_ts == later.bar_ts


# -- the reconcile command ----------------------------------------------------------------------------

def test_reconcile_command_reports_and_fails_on_a_balance_mismatch(trader, venue, monkeypatch):
    import json
    from io import StringIO

    from django.core.management import CommandError, call_command

    monkeypatch.setattr(live, "exchange_for", lambda t, view=None: venue)
    view = view_of(venue)
    order, _ = entry(trader, view, 1, D("1"), D(repr(view.books[SYMBOL].best_ask)))
    Order.objects.filter(pk=order.pk).update(submitted_at=timezone.now() - timedelta(hours=1))   # a lost send
    out = StringIO()
    call_command("reconcile_orders", stdout=out)
    report = json.loads(out.getvalue().splitlines()[0])
    assert report["trader_id"] == trader.pk and report["not_placed"] == 1 and report["complete"]
    assert Order.objects.get(pk=order.pk).error == "NOT_PLACED: the venue never got it"

    Position.objects.create(trader=trader, symbol="KRW-ETH", opened_ts=view.bar_ts, qty=D("3"))   # books only
    order2, _ = entry(trader, view, 2, D("1"), D(repr(view.books[SYMBOL].best_ask)))
    Order.objects.filter(pk=order2.pk).update(submitted_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(CommandError, match="differences"):
        call_command("reconcile_orders", "--trader", str(trader.pk), stdout=StringIO())
    event = Event.objects.filter(trader=trader, kind="RECONCILED").first()
    assert event.level == "CRITICAL" and "ETH: books 3" in event.message
