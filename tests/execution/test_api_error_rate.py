"""The runtime guard's API error rate [RK-4] fed from a LIVE trader's real venue calls.

``execution.callstats.CountingExchange`` counts every venue call and the failed ones (an answer
of a working venue is not a failure) and stays transparent for everything else; the rolling
per-minute window (``execution.engine.callwindow``) prunes old minutes; real ticks of a LIVE
trader on the sim venue trip API_ERROR_RATE (no new entries) when the venue mostly fails, not
when it works; PAPER counts nothing.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from execution import callstats, live
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
    StopOrders,
    TransientExchangeError,
    capabilities_of,
    supports_stop_orders,
)
from execution.callstats import STATE_KEY, CountingExchange, counting, is_api_error, merge_tick_calls, record
from execution.engine import callwindow
from execution.engine.callwindow import BUCKET_SECONDS, WINDOW_SECONDS
from execution.engine.policy import VenueCapabilities
from execution.live import LiveBroker, PersistentSimExchange, broker_for
from execution.marketdata import latest_bar, load_view
from execution.models import Order
from risk.engine.guard import API_ERROR_RATE, API_MIN_CALLS
from risk.models import KillSwitch, TraderSafetyState
from strategies.models import StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import staff_user
from traders import tasks
from traders.models import Event, IntentKind, Trader, TraderMode, TraderStatus
from traders.services import create_trader, process_intents, request_intent
from traders.trading import PaperPort, run_tick, trader_profile

T0 = 1_790_000_000.0
NOW = 1_800_000_030.0            # 30 s into a minute


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeVenue:
    """A venue whose next answers are scripted: a value is returned, an exception raised."""

    name = "fakex"
    can_trade = True

    def __init__(self, *, stops: bool = True) -> None:
        self.script: list = []
        self.stops = stops
        self.label = "plain"

    def capabilities(self) -> VenueCapabilities:
        return VenueCapabilities(stop_orders=self.stops)

    def _answer(self, default):
        outcome = self.script.pop(0) if self.script else default
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def markets(self):
        return self._answer([])

    def tickers(self, symbols=None):
        return self._answer([])

    def candles(self, symbol, timeframe, since=None, limit=200):
        return self._answer(None)

    def order_book(self, symbol, depth=15):
        return self._answer(None)

    def balances(self):
        return self._answer({"KRW": Decimal("1")})

    def create_order(self, request):
        return self._answer(None)

    def cancel_order(self, symbol, client_order_id):
        return self._answer(None)

    def fetch_order(self, symbol, client_order_id):
        return self._answer(None)

    def open_orders(self, symbol=None):
        return self._answer([])

    def my_trades(self, symbol, since=None):
        return self._answer([])


class FakeStopVenue(FakeVenue):
    def create_stop_order(self, request, stop_price):
        return self._answer(None)

    def fetch_stop_order(self, symbol, client_order_id):
        return self._answer(None)

    def cancel_stop_order(self, symbol, client_order_id):
        return self._answer(None)


# -- the proxy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("exc,error", [
    (TransientExchangeError("timeout"), True),
    (RateLimitedError("429", retry_after=1.0), True),
    (BannedError("418"), True),
    (AuthenticationError("bad key"), True),
    (AmbiguousOrderError("sent, no answer"), True),
    (ExchangeError("something else"), True),
    (KeyError("unexpected"), True),
    (OrderNotFoundError("no such order"), False),
    (InvalidOrderError("below minimum"), False),
    (InsufficientFundsError("no money"), False),
])
def test_a_failed_call_counts_as_an_error_unless_the_venue_answered(exc, error):
    venue = FakeVenue()
    proxy = CountingExchange(venue, clock=Clock())
    venue.script = [exc]
    with pytest.raises(type(exc)):
        proxy.fetch_order("KRW-BTC", "qw1-s1-0")
    assert is_api_error(exc) is error
    assert (proxy.calls, proxy.errors) == (1, int(error))
    assert proxy.pending() == [(callwindow.bucket_of(NOW), 1, int(error))]


def test_every_venue_call_counts_once_and_answers_pass_through():
    venue = FakeStopVenue()
    clock = Clock()
    proxy = CountingExchange(venue, clock=clock)
    venue.script = [{"KRW": Decimal("5")}, TransientExchangeError("503"), ["o1"]]
    assert proxy.balances() == {"KRW": Decimal("5")}
    with pytest.raises(TransientExchangeError):
        proxy.create_stop_order(None, Decimal("1"))
    clock.t += BUCKET_SECONDS                         # the next minute gets its own row
    assert proxy.open_orders() == ["o1"]
    proxy.capabilities()                              # describes the venue, no venue call
    assert (proxy.calls, proxy.errors) == (3, 1)
    first = callwindow.bucket_of(NOW)
    assert proxy.take_pending() == [(first, 2, 1), (first + BUCKET_SECONDS, 1, 0)]
    assert proxy.pending() == [] and (proxy.calls, proxy.errors) == (3, 1)


def test_attributes_and_protocols_pass_through_the_proxy():
    stop_venue, plain = FakeStopVenue(), FakeVenue(stops=False)
    with_stops, without = counting(stop_venue), counting(plain)
    assert with_stops.name == "fakex" and with_stops.can_trade is True and with_stops.label == "plain"
    assert with_stops.wrapped is stop_venue and counting(with_stops) is with_stops
    assert isinstance(with_stops, Exchange) and isinstance(with_stops, StopOrders)
    assert capabilities_of(with_stops) == VenueCapabilities(stop_orders=True) and supports_stop_orders(with_stops)
    assert isinstance(without, Exchange) and not isinstance(without, StopOrders)
    assert not hasattr(without, "create_stop_order") and not supports_stop_orders(without)
    assert not hasattr(with_stops, "total_balances")       # reconciliation asks with hasattr
    with_stops.label = "changed"                           # writes reach the adapter
    assert stop_venue.label == "changed"
    stop_venue.can_trade = False
    assert with_stops.can_trade is False
    with pytest.raises(TypeError):
        CountingExchange(with_stops)


def test_a_venue_method_set_on_the_adapter_after_wrapping_is_counted_too():
    venue = FakeVenue()
    proxy = counting(venue)
    venue.total_balances = lambda: {"BTC": Decimal("1")}
    assert proxy.total_balances() == {"BTC": Decimal("1")}
    assert proxy.calls == 1


# -- the window ------------------------------------------------------------------------------------

def test_window_sums_per_minute_and_prunes_old_minutes():
    now = NOW
    minute = callwindow.bucket_of(now)
    old = minute - WINDOW_SECONDS - BUCKET_SECONDS    # ended before now - WINDOW_SECONDS: out
    stored = [[old, 50, 50], [minute - 120, 4, 1], "junk", [minute, 1, 5], [minute, True, 0]]
    merged = callwindow.merge(stored, [(minute, 3, 2), (minute - 120, 1, 0)], now)
    assert merged == [[minute - 120, 5, 1], [minute, 3, 2]]
    assert callwindow.totals(merged, now) == (8, 3)
    assert callwindow.totals(merged, now, [(minute, 2, 2)]) == (10, 5)
    assert callwindow.totals(stored, now) == (4, 1)   # the junk rows and the minute that aged out are not read
    later = now + WINDOW_SECONDS - 60                 # minute - 120 has left the window, minute not yet
    assert callwindow.totals(merged, later) == (3, 2)
    assert callwindow.merge(merged, [], later) == [[minute, 3, 2]]
    assert callwindow.totals(None, now) == (0, 0) and callwindow.totals({"x": 1}, now) == (0, 0)
    with pytest.raises(ValueError):
        callwindow.merge([], [(minute, 1, 2)], now)


def test_window_is_json_safe_and_bounded():
    now = NOW
    merged: list = []
    for i in range(100):                              # 100 minutes of calls: only the window stays
        merged = callwindow.merge(merged, [(callwindow.bucket_of(now + i * 60), 2, 1)], now + i * 60)
    assert len(merged) == WINDOW_SECONDS // BUCKET_SECONDS + 1     # the window's minutes and the one it cuts
    assert all(isinstance(v, int) for row in merged for v in row)


# -- storing -------------------------------------------------------------------------------------

@pytest.fixture
def desk(settings):
    """A PAPER trader and two eligible LIVE traders (armed, paper protection passed) on the
    sim market, with an active profile so entries come quickly."""
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    boss = staff_user(username="boss")
    profile = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(profile).to_dict()
    params.pop("name")
    params.update(entry_threshold=30.0, exit_threshold=15.0)
    update_profile(profile=profile, params=params, user=boss, comment="api error rate test")
    profile.refresh_from_db()
    traders = {name: create_trader(user=boss, name=name, profile=profile, seed_money=Decimal("10000000"))
               for name in ("paper", "healthy", "failing")}
    for trader in traders.values():
        request_intent(user=boss, kind=IntentKind.START, trader=trader)
    assert process_intents() == 3
    Trader.objects.filter(pk__in=[traders["healthy"].pk, traders["failing"].pk]).update(
        mode=TraderMode.LIVE, armed=True, paper_protection_started_at=timezone.now() - timedelta(hours=25),
        paper_seconds=25 * 3600)
    tasks.collect_market_data(T0)
    return {name: Trader.objects.get(pk=t.pk) for name, t in traders.items()}


class Failing:
    """The trader's sim account behind a venue that times out on three calls of four."""

    def __init__(self, venue: PersistentSimExchange) -> None:
        self.venue = venue
        self.n = 0

    name = "sim"
    can_trade = True

    def capabilities(self):
        return self.venue.capabilities()

    def _call(self, attr, *args, **kwargs):
        self.n += 1
        if self.n % 4:
            raise TransientExchangeError(f"sim {attr}: timed out")
        return getattr(self.venue, attr)(*args, **kwargs)


for _attr in ("markets", "tickers", "candles", "order_book", "balances", "create_order", "cancel_order",
              "fetch_order", "open_orders", "my_trades", "create_stop_order", "fetch_stop_order", "cancel_stop_order"):
    setattr(Failing, _attr, lambda self, *a, _attr=_attr, **k: self._call(_attr, *a, **k))


@pytest.fixture
def venues(monkeypatch, desk):
    """``exchange_for`` as the worker uses it, the failing trader's venue failing."""
    failing = desk["failing"].pk

    def factory(trader, view=None):
        venue = PersistentSimExchange(trader, view)
        return Failing(venue) if trader.pk == failing else venue

    monkeypatch.setattr(live, "exchange_for", factory)


def tick(trader_ids, n: int, *, start: float = T0) -> float:
    now = start
    for _ in range(n):
        now += 60
        tasks.collect_market_data(now)
        bar = latest_bar("sim")
        for pk in trader_ids:
            run_tick(pk, bar)
    return now


def safety_of(trader) -> TraderSafetyState:
    return TraderSafetyState.objects.get(trader=trader)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_mostly_failing_venue_trips_the_guard_and_a_healthy_one_does_not(desk, venues):
    failing, healthy = desk["failing"], desk["healthy"]
    now = T0
    tripped_at = None
    for _ in range(3 * API_MIN_CALLS):
        now = tick([failing.pk, healthy.pk], 1, start=now)
        if safety_of(failing).trading_state != "ACTIVE":
            tripped_at = latest_bar("sim")
            break
    assert tripped_at is not None, "the failing venue never tripped the guard"
    safety = safety_of(failing)
    calls, errors = callwindow.totals(safety.state[STATE_KEY], time.time())
    assert calls >= API_MIN_CALLS and errors / calls >= 0.5          # three failures in four calls
    assert safety.trading_state == "HALTED" and [t["code"] for t in safety.trips] == [API_ERROR_RATE]
    assert safety.reason.startswith(f"{API_ERROR_RATE}: API error rate")
    assert Event.objects.filter(trader=failing, kind="GUARD_TRIP", message__startswith=API_ERROR_RATE).count() == 1
    failing.refresh_from_db()
    assert failing.status == TraderStatus.PAUSED and failing.status_reason.startswith(API_ERROR_RATE)

    entries_before = Order.objects.filter(trader=failing, purpose="entry").count()
    tick([failing.pk, healthy.pk], 3, start=now)                      # halted: no new entries
    assert Order.objects.filter(trader=failing, purpose="entry").count() == entries_before
    assert safety_of(failing).trading_state == "HALTED"

    good = safety_of(healthy)
    calls, errors = callwindow.totals(good.state[STATE_KEY], time.time())
    assert calls >= API_MIN_CALLS and errors == 0                   # judged, and healthy
    assert API_ERROR_RATE not in [t["code"] for t in good.trips]
    assert not Event.objects.filter(trader=healthy, kind="GUARD_TRIP", message__startswith=API_ERROR_RATE).exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_paper_counts_nothing_and_reports_no_api_stats(desk, venues):
    paper = desk["paper"]
    tick([paper.pk], 2)
    assert STATE_KEY not in safety_of(paper).state
    paper.refresh_from_db()
    view = load_view("sim", latest_bar("sim"))
    with transaction.atomic():
        safety = TraderSafetyState.objects.select_for_update().get(trader=paper)
        broker = broker_for(paper, view, profile=trader_profile(paper))
        port = PaperPort(paper, view, trader_profile(paper), safety, KillSwitch.objects.filter(pk=1).first(),
                         latest_bar("sim"), broker)
        assert port.api_stats() is None and merge_tick_calls(safety, broker) is False


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_counts_of_the_tick_and_after_its_commit_both_reach_the_window(desk):
    """The tick merges into the row it holds locked; the send phase's counts are stored after
    the commit; ``record`` merges into the newest row: no write undoes another."""
    trader = desk["healthy"]
    view = load_view("sim", latest_bar("sim"))
    venue = FakeVenue()
    now = time.time()
    record(trader.pk, 4, 1, now)                                     # an earlier send phase
    with transaction.atomic():
        safety = TraderSafetyState.objects.select_for_update().get(trader=trader)
        safety.state = {**safety.state, "guard": {"kept": True}}
        broker = broker_for(trader, view, exchange_factory=lambda t, v: venue)
        assert isinstance(broker, LiveBroker) and isinstance(broker.exchange, CountingExchange)
        venue.script = [TransientExchangeError("503")]
        with pytest.raises(TransientExchangeError):
            broker.exchange.balances()
        broker.exchange.open_orders()
        assert broker.api_stats(state=safety.state) == (6, 2)       # stored + not stored yet
        assert merge_tick_calls(safety, broker) is True
        safety.save(update_fields=["state"])
        broker.exchange.fetch_order("KRW-BTC", "qw1-s1-0")           # after the merge: stored on commit
        assert broker.api_stats(state=safety.state) == (7, 2)
    state = safety_of(trader).state
    assert state["guard"] == {"kept": True}
    assert callwindow.totals(state[STATE_KEY], time.time()) == (7, 2)
    assert broker.exchange.pending() == [] and broker.api_stats() == (7, 2)
    record(trader.pk, 3, 3, time.time())
    assert callwindow.totals(safety_of(trader).state[STATE_KEY], time.time()) == (10, 5)
    assert safety_of(trader).state["guard"] == {"kept": True}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_window_stores_numbers_only(desk):
    trader = desk["healthy"]
    view = load_view("sim", latest_bar("sim"))
    venue = FakeVenue()
    venue.script = [AuthenticationError("key sk-SECRET-123 refused")]
    broker = broker_for(trader, view, exchange_factory=lambda t, v: venue)
    with pytest.raises(AuthenticationError):
        broker.exchange.balances()
    callstats.store(trader.pk, broker.exchange)
    state = safety_of(trader).state
    assert "SECRET" not in repr(state) and callwindow.totals(state[STATE_KEY], time.time()) == (1, 1)


def sent_order(trader, n: int) -> Order:
    """A LIVE order that was sent (its lease long gone) and that the venue does not know."""
    from execution.engine.types import OrderRequest, OrderType, Side, TimeInForce
    from execution.paper import order_from_request

    request = OrderRequest(client_order_id=f"qw{trader.pk}-s9{n}-0", symbol="KRW-BTC", side=Side.BUY,
                           type=OrderType.LIMIT, qty=Decimal("0.001"), price=Decimal("1000"), tif=TimeInForce.GTC)
    order = order_from_request(trader, request, purpose="entry", bar_ts=int(T0))
    Order.objects.filter(pk=order.pk).update(submitted_at=timezone.now() - timedelta(hours=1))
    return Order.objects.get(pk=order.pk)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_reconciliation_and_stop_cancels_join_the_window(desk, venues):
    """Venue calls made outside a tick's broker (reconciliation at the worker's start, the
    cancels of a STOP) are counted and stored too."""
    from execution.live import cancel_live_orders
    from execution.reconcile import reconcile_all

    healthy, failing = desk["healthy"], desk["failing"]
    for trader in (healthy, failing):
        sent_order(trader, 1)
    reconcile_all()
    calls, errors = callwindow.totals(safety_of(healthy).state.get(STATE_KEY), time.time())
    assert calls >= 1 and errors == 0                      # "not found" is an answer, not an error
    calls, errors = callwindow.totals(safety_of(failing).state.get(STATE_KEY), time.time())
    assert calls >= 1 and errors >= 1                      # the failing venue timed out

    before = callwindow.totals(safety_of(healthy).state.get(STATE_KEY), time.time())[0]
    order = sent_order(healthy, 2)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.OPEN)
    with transaction.atomic():
        trader = Trader.objects.select_for_update().get(pk=healthy.pk)
        cancel_live_orders(trader, "stopped")
    after = callwindow.totals(safety_of(healthy).state.get(STATE_KEY), time.time())[0]
    assert after > before


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_window_is_on_the_metrics(desk):
    from traders import metrics

    record(desk["healthy"].pk, 8, 2, time.time())
    report = metrics.collect()
    rows = {t.name: t.as_dict() for t in report.traders}
    assert (rows["healthy"]["api_calls_window"], rows["healthy"]["api_errors_window"]) == (8, 2)
    assert rows["healthy"]["api_error_rate"] == pytest.approx(0.25)
    assert rows["paper"]["api_calls_window"] is None                # never called a venue
    text = metrics.prometheus_text(report)
    line = next(x for x in text.splitlines() if x.startswith("quantweb_trader_api_errors_window{")
                and 'trader="healthy"' in x)
    assert line.endswith(" 2")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_reconciliation_outside_a_tick_calls_the_venue_outside_transactions(desk, monkeypatch):
    """Issue 21, item 3: the worker's start and ``manage.py reconcile_orders`` read the venue
    first (``execution.snapshot``) and decide in their transaction from what was read."""
    from django.core.management import CommandError, call_command
    from django.db import connection

    from execution.reconcile import reconcile_all

    calls: list[tuple[str, bool]] = []

    class Watched:
        def __init__(self, venue):
            self.venue = venue
            self.name, self.can_trade = venue.name, True

        def __getattr__(self, attr):
            target = getattr(self.venue, attr)
            if not callable(target):
                return target

            def call(*args, **kwargs):
                calls.append((attr, connection.in_atomic_block))
                return target(*args, **kwargs)
            return call

    monkeypatch.setattr(live, "exchange_for", lambda trader, view=None: Watched(PersistentSimExchange(trader, view)))
    healthy = desk["healthy"]
    sent_order(healthy, 1)
    reconcile_all()
    venue_calls = [c for c in calls if c[0] in ("fetch_order", "open_orders", "balances_detail", "total_balances",
                                                "balances", "cancel_order")]
    assert venue_calls and not [c for c in venue_calls if c[1]], calls
    calls.clear()
    sent_order(healthy, 2)
    try:
        call_command("reconcile_orders", trader=healthy.pk)
    except CommandError:
        pass                                      # the unknown orders are reported as differences
    assert calls and not [c for c in calls if c[1] and c[0] != "capabilities"], calls
