"""The control plane always stops (issue 21, item 2).

* One failing intent never blocks another: a STOP whose venue cancel gets an unparsable answer,
  a STOP whose credential cannot be decrypted (a lost encryption key) and an intent that raises a
  bug are each followed by KILL_ALL and EMERGENCY_STOP, and both are applied.
* KILL_ALL and EMERGENCY_STOP are claimed first, and their state changes are committed even when
  the venue call behind them fails; the failure is recorded on the order, alerted (a CRITICAL
  event and its Telegram outbox row) and retried with back-off.
* An intent that keeps failing ends FAILED with its reason, on the intent and in the action log.
* ``dispatch()`` goes on (market data, ticks) whatever intent application does.
* No venue call happens inside a transaction of the STOP path.

The unparsable answer comes from the real Upbit adapter talking to the local fake HTTP server.
"""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal as D

import pytest
from cryptography.fernet import Fernet
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from execution import live
from execution.adapters.base import TransientExchangeError
from execution.engine.types import OrderRequest, OrderState, OrderStatus, OrderType, Side, TimeInForce
from execution.models import Order
from execution.paper import order_from_request
from risk.models import KillSwitch, TraderSafetyState
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Reply
from tests.factories import make_trader, staff_user
from traders import services, tasks
from traders.models import (
    Credential,
    Event,
    Intent,
    IntentKind,
    IntentStatus,
    Trader,
    TraderMode,
    TraderStatus,
)
from traders.models_alerts import AlertOutbox
from traders.services import process_intents, request_intent

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SYMBOL = "KRW-BTC"


# -- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture
def boss(db):
    return staff_user(username="boss")


@pytest.fixture
def fast_retries(settings):
    settings.QUANTWEB_INTENT_MAX_ATTEMPTS = 3
    settings.QUANTWEB_INTENT_RETRY_SECONDS = 10
    settings.QUANTWEB_INTENT_RETRY_MAX_SECONDS = 600
    return settings


def live_trader(boss, name: str, *, exchange: str = "sim", credential=None, status=TraderStatus.RUNNING) -> Trader:
    t = make_trader(boss, name=name)
    Trader.objects.filter(pk=t.pk).update(mode=TraderMode.LIVE, armed=True, status=status, exchange=exchange,
                                          credential=credential,
                                          paper_protection_started_at=timezone.now() - timedelta(hours=25))
    return Trader.objects.get(pk=t.pk)


def working_order(trader: Trader, n: int = 1, *, purpose: str = "entry") -> Order:
    """A LIVE order the venue took (claimed long ago and acknowledged)."""
    request = OrderRequest(f"qw{trader.pk}-s9{n}-0", SYMBOL, Side.BUY, OrderType.LIMIT, qty=D("0.001"),
                           price=D("1000"), tif=TimeInForce.GTC)
    order = order_from_request(trader, request, purpose=purpose, bar_ts=1_790_000_000)
    Order.objects.filter(pk=order.pk).update(status=Order.Status.OPEN, mode="LIVE",
                                             submitted_at=timezone.now() - timedelta(hours=1))
    return Order.objects.get(pk=order.pk)


def cancelled(cid: str) -> OrderState:
    return OrderState(cid, SYMBOL, Side.BUY, OrderType.LIMIT, OrderStatus.CANCELLED, D("0.001"), D("1000"))


class StubVenue:
    """A venue adapter whose cancels do what the test says; records whether a transaction was
    open when it was called (never, on the STOP and kill-switch paths)."""

    name = "sim"
    can_trade = True

    def __init__(self, fail: BaseException | None = None) -> None:
        self.fail = fail
        self.cancels: list[str] = []
        self.in_transaction: list[bool] = []

    def capabilities(self):
        from execution.paper import FILL_MODEL_CAPABILITIES

        return FILL_MODEL_CAPABILITIES

    def cancel_order(self, symbol, client_order_id):
        self.cancels.append(client_order_id)
        self.in_transaction.append(transaction.get_connection().in_atomic_block)
        if self.fail is not None:
            raise self.fail
        return cancelled(client_order_id)

    def fetch_order(self, symbol, client_order_id):
        return cancelled(client_order_id)


@pytest.fixture
def venue(monkeypatch):
    stub = StubVenue()
    monkeypatch.setattr(live, "exchange_for", lambda trader, view=None: stub)
    return stub


def ask(boss, kind, trader=None, **payload) -> Intent:
    return request_intent(user=boss, kind=kind, trader=trader, payload=payload)


def engaged() -> bool:
    return KillSwitch.objects.filter(pk=1, engaged=True).exists()


def later(seconds: float):
    return timezone.now() + timedelta(seconds=seconds)


# -- a failing intent blocks nothing -------------------------------------------------------------------

def test_an_unparsable_cancel_reply_does_not_block_the_kill_switches(boss, monkeypatch, fast_retries):
    fast_retries.TELEGRAM_BOT_TOKEN, fast_retries.TELEGRAM_CHAT_ID = "123456:test-token", "42"   # alerts on
    """STOP of a LIVE trader whose venue (the real Upbit adapter on the fake server) answers the
    cancel with a 200 that is not JSON; KILL_ALL and EMERGENCY_STOP behind it are applied."""
    from execution.adapters.upbit import UpbitExchange
    from execution.engine.ratelimit import LimiterRegistry

    with FakeExchangeServer() as server:
        server.add("DELETE", "/v1/order", Reply(raw="<html>upstream hiccup</html>"))
        server.add("GET", "/v1/order", Reply(raw="not json either"))
        clock = FakeClock(1_790_000_000.0)
        upbit = UpbitExchange("access-key", "secret-key", base_url=server.url, clock=clock, sleep=clock.sleep,
                              limiter_registry=LimiterRegistry(rng=random.Random(3)), rng=random.Random(5),
                              timeout=(1.0, 0.5), lookup_delay=0.01)
        monkeypatch.setattr(live, "exchange_for", lambda trader, view=None: upbit)
        stopped = live_trader(boss, "stopped")
        running = live_trader(boss, "running")
        order = working_order(stopped, purpose="exit")   # the kill switches cancel entries only
        stop = ask(boss, IntentKind.STOP, stopped)
        kill = ask(boss, IntentKind.KILL_ALL, reason="venue trouble")
        emergency = ask(boss, IntentKind.EMERGENCY_STOP)

        assert process_intents() == 3
        assert server.calls("DELETE", "/v1/order")                     # the venue was asked

    kill.refresh_from_db(), emergency.refresh_from_db(), stop.refresh_from_db()
    assert (kill.status, emergency.status) == (IntentStatus.DONE, IntentStatus.DONE)
    assert engaged()
    safety = TraderSafetyState.objects.get(trader=running)
    assert safety.state.get("liquidate") is True and safety.reason == "EMERGENCY_STOP"
    # STOP: the trader is stopped (committed), the venue failure recorded, alerted and retried.
    assert Trader.objects.get(pk=stopped.pk).status == TraderStatus.STOPPED
    assert stop.status == IntentStatus.PENDING and stop.attempts == 1 and stop.next_attempt_at > timezone.now()
    assert stop.result.startswith("stopped; attempt 1 failed: venue: ")
    order.refresh_from_db()
    assert order.status == Order.Status.OPEN and order.execution["cancel"] == "trader stopped"
    failed = Event.objects.get(trader=stopped, kind="CANCEL_FAILED")
    assert failed.level == "CRITICAL" and order.client_order_id in failed.message
    assert AlertOutbox.objects.filter(kind="CANCEL_FAILED").exists()
    assert Event.objects.filter(trader=stopped, kind="INTENT_RETRY", level="WARN").exists()


def test_a_lost_encryption_key_does_not_block_the_kill_switches(boss, settings, fast_retries):
    credential = Credential.objects.create(exchange="upbit", label="main", api_key="ak-123456",
                                           api_secret="sk-123456", created_by=boss)
    trader = live_trader(boss, "keyless", exchange="upbit", credential=credential)
    order = working_order(trader, purpose="exit")
    stop = ask(boss, IntentKind.STOP, trader)
    kill = ask(boss, IntentKind.KILL_ALL)
    emergency = ask(boss, IntentKind.EMERGENCY_STOP)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]       # the key is gone

    assert process_intents() == 3
    kill.refresh_from_db(), emergency.refresh_from_db(), stop.refresh_from_db()
    assert (kill.status, emergency.status) == (IntentStatus.DONE, IntentStatus.DONE)
    assert engaged()
    assert Trader.objects.get(pk=trader.pk).status == TraderStatus.STOPPED
    assert stop.status == IntentStatus.PENDING
    assert "credential cannot be decrypted" in stop.result
    assert Order.objects.get(pk=order.pk).execution["cancel"] == "trader stopped"

    # It keeps failing: retried after each back-off, then FAILED with its reason.
    assert process_intents(now=later(5)) == 0                      # still backing off
    assert process_intents(now=later(11)) == 1
    assert process_intents(now=later(11 + 21)) == 1
    stop.refresh_from_db()
    assert stop.status == IntentStatus.FAILED and stop.attempts == 3
    assert stop.result.startswith("stopped; venue: ") and "credential cannot be decrypted" in stop.result
    event = Event.objects.get(kind="INTENT_FAILED")
    assert event.level == "CRITICAL" and "FAILED after 3 attempts" in event.message
    assert process_intents(now=later(3600)) == 0                   # FAILED is final


def test_a_live_tick_with_a_lost_key_is_refused_with_its_reason(boss, settings, monkeypatch):
    """The tick does not crash on a credential it cannot decrypt: LIVE refused, with the reason."""
    from traders import trading

    settings.QUANTWEB_PAPER_PROTECTION_HOURS = 0
    credential = Credential.objects.create(exchange="upbit", label="main", api_key="ak-123456",
                                           api_secret="sk-123456", created_by=boss)
    trader = live_trader(boss, "keyless", exchange="upbit", credential=credential)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    monkeypatch.setattr(trading, "load_view", lambda source, bar_ts: object())   # no upbit data needed
    assert trading.run_tick(trader.pk, 1_790_000_040).outcome == "live-refused"
    event = Event.objects.get(trader=trader, kind="LIVE_REFUSED")
    assert "VENUE_UNAVAILABLE" in event.message and "cannot be decrypted" in event.message
    assert Trader.objects.get(pk=trader.pk).last_tick_ts == 1_790_000_040


def test_a_bug_in_one_intent_does_not_block_the_next(boss, monkeypatch, venue, fast_retries):
    alpha = make_trader(boss, name="alpha")
    beta = make_trader(boss, name="beta")
    real = services._apply_intent

    def broken(intent):
        if intent.trader_id == alpha.pk:
            raise RuntimeError("a bug")
        return real(intent)

    monkeypatch.setattr(services, "_apply_intent", broken)
    first = ask(boss, IntentKind.START, alpha)
    second = ask(boss, IntentKind.START, beta)
    kill = ask(boss, IntentKind.KILL_ALL)
    assert process_intents() == 3
    first.refresh_from_db(), second.refresh_from_db(), kill.refresh_from_db()
    assert first.status == IntentStatus.PENDING and first.result == "not applied: attempt 1 failed: RuntimeError: a bug"
    assert second.status == IntentStatus.DONE and kill.status == IntentStatus.DONE
    assert Trader.objects.get(pk=beta.pk).status == TraderStatus.RUNNING
    assert Trader.objects.get(pk=alpha.pk).status == TraderStatus.STOPPED

    monkeypatch.setattr(services, "_apply_intent", real)          # fixed: the retry applies it
    assert process_intents(now=later(11)) == 1
    first.refresh_from_db()
    assert first.status == IntentStatus.DONE and first.attempts == 2
    assert Trader.objects.get(pk=alpha.pk).status == TraderStatus.RUNNING


def test_kill_switches_go_first(boss, monkeypatch, venue):
    traders = [make_trader(boss, name=f"t{i}") for i in range(3)]
    starts = [ask(boss, IntentKind.START, t) for t in traders]
    kill = ask(boss, IntentKind.KILL_ALL)
    emergency = ask(boss, IntentKind.EMERGENCY_STOP)
    order: list[str] = []
    real = services._apply_intent

    def recording(intent):
        order.append(intent.kind)
        return real(intent)

    monkeypatch.setattr(services, "_apply_intent", recording)
    assert process_intents() == 5
    assert order == [IntentKind.KILL_ALL, IntentKind.EMERGENCY_STOP] + [IntentKind.START] * 3
    assert all(Intent.objects.get(pk=i.pk).status == IntentStatus.DONE for i in [*starts, kill, emergency])


def test_kill_switch_order_among_themselves_is_kept(boss, venue):
    """A release asked after the kill switch is applied after it: the operator's last word wins."""
    ask(boss, IntentKind.KILL_ALL)
    ask(boss, IntentKind.RELEASE_KILL)
    assert process_intents() == 2
    assert not engaged()


def test_a_retried_kill_switch_never_undoes_a_later_release(boss, monkeypatch, venue, fast_retries):
    real = services._apply_intent
    failures = iter([RuntimeError("database hiccup")])

    def flaky(intent):
        if intent.kind == IntentKind.KILL_ALL:
            exc = next(failures, None)
            if exc is not None:
                raise exc
        return real(intent)

    monkeypatch.setattr(services, "_apply_intent", flaky)
    kill = ask(boss, IntentKind.KILL_ALL)
    release = ask(boss, IntentKind.RELEASE_KILL)
    assert process_intents() == 2
    assert Intent.objects.get(pk=release.pk).status == IntentStatus.DONE and not engaged()
    assert process_intents(now=later(11)) == 1
    kill.refresh_from_db()
    assert kill.status == IntentStatus.REJECTED and kill.result == f"superseded by intent #{release.pk}"
    assert not engaged()                                            # the operator's last word stands


# -- the kill switches' venue work ------------------------------------------------------------------------

def test_kill_switch_is_engaged_when_the_venue_fails_and_its_cancels_are_retried(boss, venue, fast_retries):
    trader = live_trader(boss, "live")
    entry = working_order(trader, 1)
    exit_order = working_order(trader, 2, purpose="exit")
    venue.fail = TransientExchangeError("upbit: 503")
    kill = ask(boss, IntentKind.KILL_ALL, reason="flash crash")

    assert process_intents() == 1
    assert engaged()                                               # committed despite the venue
    kill.refresh_from_db()
    assert kill.status == IntentStatus.PENDING and kill.processed_at is not None
    assert kill.result.startswith("kill switch engaged; attempt 1 failed: venue: ")
    assert venue.cancels == [entry.client_order_id]                # entries only: exits are kept
    assert Order.objects.get(pk=entry.pk).execution["cancel"] == "master kill switch"
    assert Event.objects.filter(trader=trader, kind="CANCEL_FAILED", level="CRITICAL").exists()
    retry = Event.objects.get(kind="INTENT_RETRY")
    assert retry.level == "CRITICAL" and "retrying in 10 s" in retry.message

    venue.fail = None                                              # the venue is back
    assert process_intents(now=later(11)) == 1
    kill.refresh_from_db()
    assert kill.status == IntentStatus.DONE and kill.result == "kill switch engaged" and kill.attempts == 2
    assert Order.objects.get(pk=entry.pk).status == Order.Status.CANCELLED
    assert Order.objects.get(pk=exit_order.pk).status == Order.Status.OPEN
    assert KillSwitch.objects.get(pk=1).engaged                     # applied once, not re-applied
    assert Event.objects.filter(kind=IntentKind.KILL_ALL).count() == 1
    assert venue.in_transaction and not any(venue.in_transaction)  # never a venue call in a transaction


def test_emergency_stop_is_applied_and_failed_with_its_reason_when_the_venue_keeps_failing(
        boss, venue, client, fast_retries):
    trader = live_trader(boss, "live")
    working_order(trader)
    venue.fail = ValueError("Expecting value: line 1 column 1 (char 0)")    # unparsable, every time
    emergency = ask(boss, IntentKind.EMERGENCY_STOP)
    assert process_intents() == 1
    assert engaged() and TraderSafetyState.objects.get(trader=trader).state.get("liquidate") is True
    assert process_intents(now=later(11)) == 1
    assert process_intents(now=later(11 + 21)) == 1
    emergency.refresh_from_db()
    assert emergency.status == IntentStatus.FAILED and emergency.attempts == 3
    assert emergency.result.startswith("kill switch engaged; venue: ")
    assert "ValueError: Expecting value" in emergency.result
    assert engaged()                                                # still engaged: only the venue work failed
    client.force_login(boss)
    page = client.get(reverse("dashboard")).content.decode()
    assert "FAILED after 3 attempts" in page                       # the reason is in the action log


def test_a_stop_retry_is_dropped_once_the_trader_runs_again(boss, venue, fast_retries):
    trader = live_trader(boss, "live")
    working_order(trader)
    venue.fail = TransientExchangeError("timeout")
    stop = ask(boss, IntentKind.STOP, trader)
    assert process_intents() == 1
    Trader.objects.filter(pk=trader.pk).update(status=TraderStatus.RUNNING)   # started again
    assert process_intents(now=later(11)) == 1
    stop.refresh_from_db()
    assert stop.status == IntentStatus.DONE and len(venue.cancels) == 1


def test_a_crashed_claim_is_retried_after_its_lease_and_counted(boss, venue, fast_retries):
    trader = make_trader(boss)
    intent = ask(boss, IntentKind.START, trader)
    # A worker claimed it and died: attempts counted, lease set, nothing applied.
    Intent.objects.filter(pk=intent.pk).update(attempts=3, next_attempt_at=timezone.now() + timedelta(seconds=120))
    assert process_intents() == 0
    assert process_intents(now=later(121)) == 1
    intent.refresh_from_db()
    assert intent.status == IntentStatus.FAILED and "worker crashed or timed out" in intent.result
    assert Trader.objects.get(pk=trader.pk).status == TraderStatus.STOPPED


def test_a_stop_cancels_on_the_venue_after_its_commit(boss, venue):
    trader = live_trader(boss, "live")
    order = working_order(trader)
    stop = ask(boss, IntentKind.STOP, trader)
    assert process_intents() == 1
    stop.refresh_from_db()
    assert stop.status == IntentStatus.DONE and stop.result == "stopped"
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and "cancel" not in order.execution
    assert venue.in_transaction == [False]


# -- dispatch goes on ---------------------------------------------------------------------------------------

@pytest.fixture
def queued(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(tasks, "async_task", lambda func, *a, **k: calls.append(func))
    monkeypatch.setattr(tasks, "collect_market_data", lambda now: 7)
    monkeypatch.setattr("execution.marketdata.latest_bar", lambda exchange: 1_790_000_000)
    return calls


def test_dispatch_goes_on_when_intent_processing_raises(boss, monkeypatch, queued):
    trader = make_trader(boss)
    Trader.objects.filter(pk=trader.pk).update(status=TraderStatus.RUNNING)

    def broken(**kwargs):
        raise RuntimeError("the intents table is on fire")

    monkeypatch.setattr(tasks, "process_intents", broken)
    summary = tasks.dispatch(now=1_790_000_030.0)
    assert summary["bars"] == 7 and summary["ticks_queued"] == 1
    assert summary["failed"] == {"intents": "RuntimeError: the intents table is on fire"}
    assert "traders.tasks.tick_trader" in queued
    assert Event.objects.filter(kind="DISPATCH_STEP_FAILED", level="CRITICAL").exists()


def test_dispatch_goes_on_past_a_failing_intent(boss, venue, queued, fast_retries):
    trader = live_trader(boss, "live")
    working_order(trader)
    venue.fail = ValueError("unparsable")
    ask(boss, IntentKind.STOP, trader)
    other = make_trader(boss, name="other")
    ask(boss, IntentKind.START, other)
    summary = tasks.dispatch(now=1_790_000_030.0)
    assert summary["intents"] == 2 and summary["bars"] == 7 and summary["ticks_queued"] == 1
    assert "failed" not in summary
    assert Trader.objects.get(pk=other.pk).status == TraderStatus.RUNNING
    assert Trader.objects.get(pk=trader.pk).status == TraderStatus.STOPPED
    # The dispatcher never waits on a venue: the STOP's cancels are a task of their own.
    assert venue.cancels == [] and "traders.tasks.process_intents" in queued
    assert tasks.process_intents() == 1                              # that task: the venue fails...
    assert venue.cancels and Intent.objects.get(kind=IntentKind.STOP).status == IntentStatus.PENDING
