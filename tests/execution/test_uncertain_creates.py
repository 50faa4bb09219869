"""Uncertain creates (issue 21, item 1): a create whose outcome is not a definite venue rejection
stays UNKNOWN, is looked up by client order id until resolved, and never closes or reopens its
position meanwhile; reconciliation re-checks REJECTED and UNKNOWN orders by client id and
compares balances both ways with a CRITICAL alert.

Against the local fake HTTP server with recorded Upbit and Binance (a real ccxt ``binance``
client) shapes, through the real LIVE send phase (``LiveBroker`` -> ``send`` after commit) and
``reconcile_trader``. The fake venue is a small account: what the venue really did (took the
order and filled it, or not) is separate from what its answer says, so every fault can be
played with the order placed.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from datetime import timedelta
from decimal import Decimal as D
from typing import Any

import pytest
from django.utils import timezone

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderRejectedError,
    RateLimitedError,
    is_definite_rejection,
)
from execution.adapters.upbit import UpbitExchange
from execution.engine.policy import Decision, Step
from execution.engine.ratelimit import LimiterRegistry
from execution.engine.types import OrderRequest, OrderType, Side
from execution.live import LiveBroker, sync_stops
from execution.models import ExecutionFailure, Order, Position
from execution.paper import order_from_request
from execution.reconcile import ReconcilePolicy, reconcile_trader
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Recorded, Reply
from tests.execution.test_ccxt_adapter import bn
from tests.execution.test_ccxt_adapter import make as make_ccxt
from tests.execution.test_live_broker import SEED, tick, trader, venue, view_of  # noqa: F401  (fixtures)
from tests.execution.test_live_ccxt_stops import info_with_stop_loss
from tests.execution.test_upbit_adapter import ACCESS, SECRET
from traders.models import Event, Trader
from traders.models_alerts import AlertOutbox

NOW = 1717200630.5
SOL = "KRW-SOL"
PRICE = D("200000")          # on every KRW tick grid
QTY = D("80")
FUNDS = PRICE * QTY
FEE = FUNDS * D("0.0005")


@pytest.fixture
def server():
    with FakeExchangeServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def alert_channel(settings):
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID = "123:abc", "42"


def fresh(t) -> Trader:
    return Trader.objects.get(pk=t.pk)


def reconcile(t, exchange, view, *, after: float = 60, **policy):
    return reconcile_trader(fresh(t), exchange, now=time.time() + after, view=view,
                            policy=ReconcilePolicy(**policy))


def buy_entry(t, view, n: int, symbol: str = SOL, qty: D = QTY, price: D = PRICE) -> tuple[Order, OrderRequest]:
    position = Position.objects.create(trader=t, symbol=symbol, opened_ts=view.bar_ts + 60)
    request = OrderRequest(f"qw{t.pk}-s{n}-0", symbol, Side.BUY, OrderType.LIMIT, qty=qty, price=price)
    return order_from_request(t, request, purpose="entry", bar_ts=view.bar_ts, position=position), request


def send_entry(t, view, exchange, capture, n: int = 1, **kw) -> Order:
    """A tick that queues an entry; the send phase runs after its commit."""
    cid = tick(t, view, exchange, lambda tr, b: b.submit(*buy_entry(tr, view, n, **kw)) or
               f"qw{tr.pk}-s{n}-0", capture)
    return Order.objects.get(client_order_id=cid)


def held_by_the_tick(t, view, exchange) -> set[str]:
    """The markets the real tick's port treats as held: entries skip them (``run_core``)."""
    from risk.models import TraderSafetyState
    from traders.trading import PaperPort, trader_profile

    t = fresh(t)
    safety, _ = TraderSafetyState.objects.get_or_create(trader=t, defaults={"peak_equity": t.seed_money})
    broker = LiveBroker(t, view, exchange)
    return set(PaperPort(t, view, trader_profile(t), safety, None, view.bar_ts, broker).held())


# -- a scripted Upbit account -----------------------------------------------------------------------

def upbit_order(cid: str, *, state: str = "done", executed: D = QTY, volume: D = QTY, price: D = PRICE,
                side: str = "bid", market: str = SOL, uuid: str | None = None) -> dict[str, Any]:
    funds = price * executed
    trades = [{"market": market, "uuid": f"tr-{cid}", "price": str(price), "volume": str(executed),
               "funds": str(funds), "created_at": "2024-06-01T09:10:31+09:00", "side": side}] if executed else []
    return {"uuid": uuid or f"u-{cid}", "side": side, "ord_type": "limit", "price": str(price), "state": state,
            "market": market, "created_at": "2024-06-01T09:10:30+09:00", "volume": str(volume),
            "remaining_volume": str(volume - executed), "paid_fee": str(funds * D("0.0005")),
            "executed_volume": str(executed), "executed_funds": str(funds), "trades_count": len(trades),
            "identifier": cid, "trades": trades}


class UpbitAccount:
    """What Upbit really holds, and what its answers say. ``accept``: a create is placed (and
    filled at once); ``answer``: the reply to a create (a ``Reply`` or None for the real one);
    ``lookups``: "ok", "error" (500) or "missing" (404: the venue does not show it)."""

    def __init__(self, server: FakeExchangeServer) -> None:
        self.server = server
        self.orders: dict[str, dict[str, Any]] = {}
        self.accept = True
        self.fill = True
        self.answer: Reply | None = None
        self.lookups = "ok"
        self.cancel_answer: Reply | None = None
        self.krw = SEED
        server.add("POST", "/v1/orders", self._create)
        server.add("GET", "/v1/order", self._lookup)
        server.add("DELETE", "/v1/order", self._cancel)
        server.add("GET", "/v1/accounts", self._accounts)
        server.add("GET", "/v1/orders/open", lambda rec: Reply([o for o in self.orders.values()
                                                                if o["state"] == "wait"]))
        server.add("GET", "/v1/orderbook/instruments", Reply([]))

    def client(self) -> UpbitExchange:
        clock = FakeClock(NOW)
        return UpbitExchange(ACCESS, SECRET, base_url=self.server.url, clock=clock, sleep=clock.sleep,
                             limiter_registry=LimiterRegistry(rng=random.Random(3)), rng=random.Random(5),
                             timeout=(1.0, 0.3), lookup_delay=0.01)

    def _create(self, rec: Recorded) -> Reply:
        cid, side = rec.body["identifier"], rec.body["side"]
        if self.accept and not self.fill:
            self.orders[cid] = upbit_order(cid, state="wait", executed=D(0), side=side)
        elif self.accept:
            self.orders[cid] = upbit_order(cid, side=side)
            self.krw += FUNDS - FEE if side == "ask" else -(FUNDS + FEE)
        answer = self.answer or Reply(self.orders.get(cid), 201)
        if answer.raw == "RESET":
            raise ConnectionResetError("the venue dropped the connection")
        return answer

    def _lookup(self, rec: Recorded) -> Reply:
        if self.lookups == "error":
            return Reply({"error": {"name": "server_error", "message": "try later"}}, 500)
        order = self.orders.get(rec.query["identifier"][0])
        if order is None or self.lookups == "missing":
            return Reply({"error": {"name": "order_not_found", "message": "주문을 찾지 못했습니다."}}, 404)
        return Reply(order)

    def _cancel(self, rec: Recorded) -> Reply:
        cid = rec.query["identifier"][0]
        order = self.orders.get(cid)
        if order is None:
            return Reply({"error": {"name": "order_not_found", "message": "not found"}}, 404)
        if self.cancel_answer is not None:
            order["state"] = "cancel"
            return self.cancel_answer
        answer = dict(order)
        order["state"] = "cancel"
        return Reply(answer)

    def _accounts(self, rec: Recorded) -> Reply:
        sol = sum((D(o["executed_volume"]) * (1 if o["side"] == "bid" else -1) for o in self.orders.values()
                   if o["market"] == SOL), D(0))
        return Reply([{"currency": "KRW", "balance": str(self.krw), "locked": "0"},
                      {"currency": "SOL", "balance": str(sol), "locked": "0"}])


UPBIT_FAULTS = {
    "read_timeout": lambda: Reply(None, 201, delay=0.8),
    "connection_reset": lambda: Reply(raw="RESET"),
    "5xx": lambda: Reply({"error": {"name": "server_error", "message": "internal"}}, 500),
    "502_html": lambda: Reply(raw="<html>502 Bad Gateway</html>", status=502),
    "unparsable_2xx": lambda: Reply(raw="<html>upstream reset</html>", status=201),
    "2xx_without_uuid": lambda: Reply({"state": "wait", "market": SOL, "side": "bid"}, 201),
    "2xx_unknown_state": lambda: Reply({**upbit_order("x"), "state": "pending_review"}, 201),
    "duplicate_identifier": lambda: Reply({"error": {"name": "duplicate_identifier", "message": "dup"}}, 400),
}


def _fill_answer(account: UpbitAccount, fault: str) -> None:
    account.answer = UPBIT_FAULTS[fault]()       # the venue takes and fills it; this is what we hear


def assert_holds_80_sol(t, order: Order) -> None:
    order.refresh_from_db()
    assert order.status == Order.Status.FILLED and order.filled_qty == QTY
    position = Position.objects.get(pk=order.position_id)
    assert position.status == Position.Status.OPEN and position.qty == QTY
    t = fresh(t)
    assert t.cash == SEED - FUNDS - FEE


# -- create faults: the adapter resolves them by identifier ------------------------------------------

@pytest.mark.parametrize("fault", sorted(UPBIT_FAULTS))
def test_upbit_uncertain_create_is_looked_up_by_identifier_and_booked(trader, venue, server, fault,  # noqa: F811
                                                                     django_capture_on_commit_callbacks):
    account = UpbitAccount(server)
    _fill_answer(account, fault)
    order = send_entry(trader, view_of(venue), account.client(), django_capture_on_commit_callbacks)
    assert len(server.calls("POST", "/v1/orders")) == 1                 # never sent twice
    assert server.calls("GET", "/v1/order")[0].query == {"identifier": [order.client_order_id]}
    assert_holds_80_sol(trader, order)
    assert not ExecutionFailure.objects.filter(trader=trader).exists()


# -- the reproduction of issue 21 ---------------------------------------------------------------------

@pytest.mark.parametrize("fault", sorted(UPBIT_FAULTS))
def test_upbit_fills_80_sol_behind_an_unreadable_answer_then_reconciliation_books_them(
        trader, venue, server, fault, django_capture_on_commit_callbacks):  # noqa: F811
    """Upbit takes and fills 80 SOL; the answer is lost or unreadable and the lookups fail too.
    The order is UNKNOWN (never REJECTED), its position stays open so the trader does not buy
    SOL again, and the next reconciliation finds it by identifier and books the 80 SOL."""
    account = UpbitAccount(server)
    _fill_answer(account, fault)
    account.lookups = "error"
    view = view_of(venue)
    exchange = account.client()
    order = send_entry(trader, view, exchange, django_capture_on_commit_callbacks)
    order.refresh_from_db()
    assert order.status == Order.Status.UNKNOWN and order.error.startswith("UNKNOWN_STATE")
    position = Position.objects.get(pk=order.position_id)
    assert position.status == Position.Status.OPEN and position.qty == 0          # not closed
    assert SOL in held_by_the_tick(trader, view, exchange)                        # no second buy
    assert Event.objects.filter(trader=trader, kind="ORDER_UNKNOWN", level="CRITICAL").count() == 1
    assert AlertOutbox.objects.filter(kind="ORDER_UNKNOWN", level="CRITICAL").exists()
    assert ExecutionFailure.objects.filter(order=order, code="ORDER_UNKNOWN").exists()
    assert fresh(trader).cash == SEED

    report = reconcile(trader, exchange, view)                   # the venue still cannot be asked
    assert report.unknown == 1 and not report.complete
    assert Order.objects.get(pk=order.pk).status == Order.Status.UNKNOWN
    assert SOL in held_by_the_tick(trader, view, exchange)

    account.lookups = "ok"
    report = reconcile(trader, exchange, view)
    assert report.complete and report.fills == 1 and not report.mismatches, report.to_dict()
    assert_holds_80_sol(trader, order)
    assert len(server.calls("POST", "/v1/orders")) == 1
    again = reconcile(trader, exchange, view)
    assert not again.changed and not again.mismatches and again.complete


def test_unknown_order_the_venue_hides_raises_a_critical_balance_alert(trader, venue, server,  # noqa: F811
                                                                       django_capture_on_commit_callbacks):
    """The venue holds 80 SOL but its order lookup does not show the order: while the order is
    UNKNOWN the venue holds more than the books, which is a CRITICAL alert."""
    account = UpbitAccount(server)
    account.answer = Reply(raw="<html>oops</html>", status=200)
    account.lookups = "missing"
    view = view_of(venue)
    exchange = account.client()
    order = send_entry(trader, view, exchange, django_capture_on_commit_callbacks)
    assert Order.objects.get(pk=order.pk).status == Order.Status.UNKNOWN
    report = reconcile(trader, exchange, view)
    assert report.unknown == 1 and report.mismatches == ["SOL: venue 80 > books 0"]
    assert Order.objects.get(pk=order.pk).status == Order.Status.UNKNOWN          # within the grace
    assert Position.objects.get(pk=order.position_id).status == Position.Status.OPEN
    event = Event.objects.filter(trader=trader, kind="RECONCILED").first()
    assert event.level == "CRITICAL" and "venue 80 > books 0" in event.message
    assert AlertOutbox.objects.filter(kind="RECONCILED", level="CRITICAL").exists()


def test_unknown_order_never_found_is_rejected_after_the_grace_and_found_later_by_the_recheck(
        trader, venue, server, django_capture_on_commit_callbacks):  # noqa: F811
    account = UpbitAccount(server)
    account.answer = Reply({"error": {"name": "server_error", "message": "x"}}, 503)
    account.lookups = "missing"
    view = view_of(venue)
    exchange = account.client()
    order = send_entry(trader, view, exchange, django_capture_on_commit_callbacks)
    sent = order.submitted_at.timestamp()
    report = reconcile_trader(fresh(trader), exchange, now=sent + 1000, view=view)
    order.refresh_from_db()
    assert report.not_placed == 1 and order.status == Order.Status.REJECTED
    assert order.error == "NOT_PLACED: the venue never got it"
    assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED
    assert report.mismatches == ["SOL: venue 80 > books 0"]                     # and it alerts

    account.lookups = "ok"                                       # the venue shows it after all
    lookups = len(server.calls("GET", "/v1/order"))
    report = reconcile_trader(fresh(trader), exchange, now=sent + 1100, view=view)
    assert len(server.calls("GET", "/v1/order")) == lookups      # re-checked at most every 10 min
    report = reconcile_trader(fresh(trader), exchange, now=sent + 1700, view=view)
    assert report.recovered == [order.client_order_id] and not report.mismatches, report.to_dict()
    assert_holds_80_sol(trader, order)
    assert Event.objects.filter(trader=trader, kind="ORDER_FOUND", level="CRITICAL").count() == 1
    again = reconcile_trader(fresh(trader), exchange, now=sent + 2400, view=view)
    assert not again.changed and not again.mismatches


def test_an_order_booked_rejected_by_the_old_bug_is_found_and_booked(trader, venue, server):  # noqa: F811
    """Rows the old code booked REJECTED on an unreadable answer are looked up for 24 h."""
    account = UpbitAccount(server)
    view = view_of(venue)
    order, _ = buy_entry(trader, view, 7)
    account.orders[order.client_order_id] = upbit_order(order.client_order_id)
    account.krw -= FUNDS + FEE
    Order.objects.filter(pk=order.pk).update(status=Order.Status.REJECTED, submitted_at=timezone.now(),
                                             error="ORDER_ERROR: upbit: unexpected order payload")
    Position.objects.filter(pk=order.position_id).update(status=Position.Status.CLOSED, closed_ts=view.bar_ts,
                                                         plan={"never_filled": True})
    report = reconcile(trader, account.client(), view)
    assert report.recovered == [order.client_order_id] and report.fills == 1 and not report.mismatches
    assert_holds_80_sol(trader, order)
    assert Order.objects.get(pk=order.pk).error.startswith("FOUND_ON_VENUE after ORDER_ERROR")
    old = Order.objects.filter(pk=order.pk)
    old.update(submitted_at=timezone.now() - timedelta(hours=25))
    assert reconcile(trader, account.client(), view, after=700).rechecked == 0     # older than 24 h: left


@pytest.mark.parametrize(("status", "body", "exc_type"), [
    (400, {"error": {"name": "invalid_price_bid", "message": "tick"}}, InvalidOrderError),
    (400, {"error": {"name": "insufficient_funds_bid", "message": "funds"}}, InsufficientFundsError),
    (401, {"error": {"name": "jwt_verification", "message": "jwt"}}, AuthenticationError),
    (429, {"error": {"name": "too_many_requests", "message": "slow down"}}, RateLimitedError),
])
def test_upbit_definite_rejections_are_rejected_without_lookups(trader, venue, server, status, body,  # noqa: F811
                                                               exc_type, django_capture_on_commit_callbacks):
    """Upbit answered no: 4xx with an error name (400 parameters or funds, 401 keys) and 429
    (its rate limit refuses the request before it is processed): not placed, position closed."""
    account = UpbitAccount(server)
    account.accept = False
    account.answer = Reply(body, status)
    exchange = account.client()
    with pytest.raises(exc_type) as exc:
        exchange.create_order(OrderRequest("probe-1", SOL, Side.BUY, OrderType.LIMIT, qty=QTY, price=PRICE))
    assert is_definite_rejection(exc.value)
    order = send_entry(trader, view_of(venue), exchange, django_capture_on_commit_callbacks)
    order.refresh_from_db()
    assert order.status == Order.Status.REJECTED
    assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED
    assert server.calls("GET", "/v1/order") == []
    assert len(server.calls("POST", "/v1/orders")) == 2


# -- cancel and replace on Upbit ------------------------------------------------------------------------

def resting_upbit_order(t, view, account: UpbitAccount, n: int = 1) -> Order:
    order, _ = buy_entry(t, view, n)
    account.orders[order.client_order_id] = upbit_order(order.client_order_id, state="wait", executed=D(0))
    Order.objects.filter(pk=order.pk).update(status=Order.Status.OPEN, submitted_at=timezone.now(),
                                             exchange_order_id=f"u-{order.client_order_id}")
    return Order.objects.get(pk=order.pk)


def test_upbit_cancel_with_no_readable_answer_keeps_the_order_and_reconciliation_cancels_it(
        trader, venue, server, django_capture_on_commit_callbacks):  # noqa: F811
    account = UpbitAccount(server)
    view = view_of(venue)
    exchange = account.client()
    order = resting_upbit_order(trader, view, account)
    account.lookups = "error"                                  # no answer, no lookup: the cancel is unknown
    server.routes[("DELETE", "/v1/order")] = lambda rec: Reply(raw="<html>oops</html>", status=502)
    tick(trader, view, exchange, lambda t, b: b.cancel(Order.objects.get(pk=order.pk), "TIMEOUT"),
         django_capture_on_commit_callbacks)
    order.refresh_from_db()
    assert order.status == Order.Status.OPEN and order.execution["cancel"] == "TIMEOUT"
    assert Event.objects.filter(trader=trader, kind="CANCEL_FAILED").exists()
    assert Position.objects.get(pk=order.position_id).status == Position.Status.OPEN

    account.lookups = "ok"
    server.routes[("DELETE", "/v1/order")] = account._cancel
    report = reconcile(trader, exchange, view)
    order.refresh_from_db()
    assert report.cancels_sent == 1 and order.status == Order.Status.CANCELLED
    assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED   # nothing filled


def test_stop_intent_cancels_an_unknown_order_by_identifier(trader, venue, server,  # noqa: F811
                                                             django_capture_on_commit_callbacks):
    """Applying a STOP intent to a trader with an UNKNOWN entry: the cancel goes out by
    identifier, finds the order resting on Upbit, cancels it and only then closes the position."""
    from execution.live import cancel_live_orders

    account = UpbitAccount(server)
    account.fill = False
    account.answer = Reply(raw="<html>oops</html>", status=500)
    account.lookups = "error"
    view = view_of(venue)
    exchange = account.client()
    order = send_entry(trader, view, exchange, django_capture_on_commit_callbacks)
    assert Order.objects.get(pk=order.pk).status == Order.Status.UNKNOWN
    account.lookups = "ok"
    cancel_live_orders(fresh(trader), "STOP", exchange=exchange)
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED and account.orders[order.client_order_id]["state"] == "cancel"
    assert [r.query["identifier"] for r in server.calls("DELETE", "/v1/order")] == [[order.client_order_id]]
    assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED   # confirmed empty


def test_an_uncertain_exit_never_reopens_the_position_or_sells_twice(trader, venue, server,  # noqa: F811
                                                                    django_capture_on_commit_callbacks):
    account = UpbitAccount(server)
    account.orders["bought"] = upbit_order("bought")                    # the venue holds 80 SOL
    account.krw -= FUNDS + FEE
    account.answer = Reply({"error": {"name": "server_error", "message": "x"}}, 500)
    account.lookups = "error"
    view = view_of(venue)
    exchange = account.client()
    Trader.objects.filter(pk=trader.pk).update(cash=SEED - FUNDS - FEE)
    position = Position.objects.create(trader=trader, symbol=SOL, opened_ts=view.bar_ts, qty=QTY, avg_entry=PRICE,
                                       cost=FUNDS + FEE, plan={"state": {"qty": 80.0, "closing": True}})

    def exit_order(n: int):
        def run(t, broker):
            request = OrderRequest(f"qw{t.pk}-x{position.pk}-{view.bar_ts}-{n}", SOL, Side.SELL, OrderType.MARKET,
                                   qty=QTY)
            broker.submit(order_from_request(t, request, purpose="exit", bar_ts=view.bar_ts, position=position,
                                             execution={"reason": "SCORE_EXIT"}), request)
            return request.client_order_id
        return Order.objects.get(client_order_id=tick(trader, view, exchange, run, django_capture_on_commit_callbacks))

    first = exit_order(0)
    assert first.status == Order.Status.UNKNOWN
    position.refresh_from_db()
    assert position.status == Position.Status.OPEN and position.plan["state"]["closing"] is True   # not reopened
    second = exit_order(1)                                     # even if something asked again...
    assert second.status == Order.Status.CANCELLED and second.error == "nothing left to sell: not sent"
    assert len(server.calls("POST", "/v1/orders")) == 1        # ...the venue is asked to sell once
    account.lookups = "ok"
    report = reconcile(trader, exchange, view)
    assert report.complete and not report.mismatches, report.to_dict()
    first.refresh_from_db()
    position.refresh_from_db()
    assert first.status == Order.Status.FILLED and position.status == Position.Status.CLOSED and position.qty == 0
    assert fresh(trader).cash == account.krw


def test_upbit_unreadable_cancel_answer_is_resolved_by_lookup(server):
    account = UpbitAccount(server)
    account.orders["c-1"] = upbit_order("c-1", state="wait", executed=D(0))
    account.cancel_answer = Reply(raw="not json", status=200)
    state = account.client().cancel_order(SOL, "c-1")
    assert state.status.value == "cancelled" and len(server.calls("DELETE", "/v1/order")) == 1


def test_upbit_replace_whose_successor_create_is_uncertain_stays_unknown(trader, venue, server,  # noqa: F811
                                                                        django_capture_on_commit_callbacks):
    """A re-price: the parent is cancelled on the venue, its successor ``...r1`` is sent; the
    successor's answer is lost. It is UNKNOWN, the position stays open, reconciliation books it."""
    account = UpbitAccount(server)
    view = view_of(venue)
    exchange = account.client()
    parent = resting_upbit_order(trader, view, account)
    account.answer = Reply(raw="<html>oops</html>", status=504)
    request = OrderRequest(f"{parent.client_order_id}r1", SOL, Side.BUY, OrderType.LIMIT, qty=QTY, price=PRICE)

    def replace(t, broker):
        # The policy's re-price step: the parent's cancel is confirmed, the successor is queued...
        broker._continue(Order.objects.get(pk=parent.pk), Decision(Step.REPLACE, "TIMEOUT", request))
        account.lookups = "error"                              # ...and sent after commit into an outage

    tick(trader, view, exchange, replace, django_capture_on_commit_callbacks)
    parent.refresh_from_db()
    child = Order.objects.get(parent=parent)
    assert parent.status == Order.Status.CANCELLED and child.client_order_id == request.client_order_id
    assert child.status == Order.Status.UNKNOWN
    assert [r.body["identifier"] for r in server.calls("POST", "/v1/orders")] == [child.client_order_id]
    assert Position.objects.get(pk=parent.position_id).status == Position.Status.OPEN
    account.lookups = "ok"
    reconcile(trader, exchange, view)
    assert_holds_80_sol(trader, child)


# -- ccxt (Binance) ---------------------------------------------------------------------------------------

BTC = "BTC/USDT"
BTC_QTY = D("0.01234")
BTC_PRICE = D("67000")


def binance_order(cid: str, *, status: str = "FILLED", executed: D = BTC_QTY, order_id: int = 28,
                  kind: str = "LIMIT") -> dict[str, Any]:
    return {**bn("order_new"), "orderId": order_id, "clientOrderId": cid, "status": status, "type": kind,
            "origQty": str(BTC_QTY), "executedQty": str(executed), "cummulativeQuoteQty": str(executed * BTC_PRICE),
            "price": str(BTC_PRICE), "updateTime": 1717200640000}


class BinanceAccount:
    """The Binance twin of ``UpbitAccount`` (spot ``/private/order`` and ``/private/account``)."""

    def __init__(self, server: FakeExchangeServer, info: dict | None = None) -> None:
        self.server = server
        self.orders: dict[str, dict[str, Any]] = {}
        self.accept = True
        self.fill = True
        self.answer: Reply | None = None
        self.lookups = "ok"
        self.cancel_answer: Reply | None = None
        server.add("GET", "/public/exchangeInfo", Reply(info or bn("exchange_info_spot")))
        server.add("POST", "/private/order", self._create)
        server.add("GET", "/private/order", self._lookup)
        server.add("DELETE", "/private/order", self._cancel)
        server.add("GET", "/private/account", self._account)
        server.add("GET", "/private/openOrders", Reply([]))

    def client(self):
        return make_ccxt(self.server, FakeClock(NOW))

    @staticmethod
    def _params(rec: Recorded) -> dict[str, str]:
        if isinstance(rec.body, str):
            return dict(p.split("=", 1) for p in rec.body.split("&"))
        return {k: v[0] for k, v in rec.query.items()}

    def _create(self, rec: Recorded) -> Reply:
        params = self._params(rec)
        cid = params["newClientOrderId"]
        if self.accept:
            kind = params.get("type", "LIMIT")
            self.orders[cid] = binance_order(cid, order_id=28 + len(self.orders), kind=kind,
                                             status="FILLED" if self.fill else "NEW",
                                             executed=BTC_QTY if self.fill else D(0))
        return self.answer or Reply(self.orders.get(cid))

    def _lookup(self, rec: Recorded) -> Reply:
        if self.lookups == "error":
            return Reply({"code": -1001, "msg": "Internal error; unable to process your request."}, 503)
        order = self.orders.get(rec.query.get("origClientOrderId", [""])[0])
        if order is None or self.lookups == "missing":
            return Reply({"code": -2013, "msg": "Order does not exist."}, 400)
        return Reply(order)

    def _cancel(self, rec: Recorded) -> Reply:
        if self.cancel_answer is not None:
            return self.cancel_answer
        for order in self.orders.values():
            if str(order["orderId"]) == rec.query.get("orderId", [""])[0]:
                order["status"] = "CANCELED"
                return Reply(order)
        return Reply({"code": -2011, "msg": "Unknown order sent."}, 400)

    def _account(self, rec: Recorded) -> Reply:
        btc = sum((D(o["executedQty"]) for o in self.orders.values() if o["side"] == "BUY"), D(0))
        return Reply({**bn("account"), "balances": [{"asset": "BTC", "free": str(btc), "locked": "0"},
                                                     {"asset": "USDT", "free": "1000", "locked": "0"}]})


BINANCE_FAULTS = {
    "read_timeout": Reply(None, delay=0.8),
    "5xx": Reply({"code": -1001, "msg": "Internal error"}, 500),
    "503_html": Reply(raw="<html>503 Service Unavailable</html>", status=503),
    "unparsable_2xx": Reply(raw="<html>oops</html>"),
    "2xx_without_id": Reply({}),
    "2xx_unknown_status": Reply({**bn("order_new"), "status": "PENDING_REVIEW"}),
    "-1000_UNKNOWN": Reply({"code": -1000, "msg": "An unknown error occured while processing the request."}, 400),
    "-1001_DISCONNECTED": Reply({"code": -1001, "msg": "Internal error; unable to process your request."}, 400),
    "-1006_UNEXPECTED_RESP": Reply({"code": -1006, "msg": "An unexpected response was received from the message "
                                    "bus. Execution status unknown."}, 400),
    "-1007_TIMEOUT": Reply({"code": -1007, "msg": "Timeout waiting for response from backend server. Send status "
                            "unknown; execution status unknown."}, 400),
}


@pytest.mark.parametrize("fault", sorted(BINANCE_FAULTS))
def test_binance_fills_behind_an_uncertain_answer_then_reconciliation_books_it(
        trader, venue, server, fault, django_capture_on_commit_callbacks):  # noqa: F811
    account = BinanceAccount(server)
    account.answer = BINANCE_FAULTS[fault]
    account.lookups = "missing"                 # the adapter's own lookups do not see it yet
    view = view_of(venue)
    exchange = account.client()
    order = send_entry(trader, view, exchange, django_capture_on_commit_callbacks, symbol=BTC, qty=BTC_QTY,
                       price=BTC_PRICE)
    order.refresh_from_db()
    assert order.status == Order.Status.UNKNOWN, order.error
    assert len(server.calls("POST", "/private/order")) == 1
    assert Position.objects.get(pk=order.position_id).status == Position.Status.OPEN
    assert BTC in held_by_the_tick(trader, view, exchange)
    report = reconcile(trader, exchange, view)
    assert report.unknown == 1 and report.mismatches == [f"BTC: venue {BTC_QTY} > books 0"]
    account.lookups = "ok"
    report = reconcile(trader, exchange, view)
    order.refresh_from_db()
    assert order.status == Order.Status.FILLED and order.filled_qty == BTC_QTY, report.to_dict()
    assert Position.objects.get(pk=order.position_id).qty == BTC_QTY
    assert not report.mismatches and report.complete
    assert len(server.calls("POST", "/private/order")) == 1


@pytest.mark.parametrize(("reply", "exc_type"), [
    (Reply({"code": -2010, "msg": "Account has insufficient balance for requested action."}, 400),
     InsufficientFundsError),
    (Reply({"code": -1013, "msg": "Filter failure: LOT_SIZE"}, 400), InvalidOrderError),
    (Reply({"code": -1121, "msg": "Invalid symbol."}, 400), InvalidOrderError),
    (Reply({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."}, 401), AuthenticationError),
    (Reply({"code": -1003, "msg": "Too many requests."}, 429), RateLimitedError),
])
def test_binance_definite_rejections_are_not_looked_up(server, reply, exc_type):
    account = BinanceAccount(server)
    account.accept = False
    account.answer = reply
    with pytest.raises(exc_type) as exc:
        account.client().create_order(OrderRequest("t1-s1-0", BTC, Side.BUY, OrderType.LIMIT, qty=BTC_QTY,
                                                   price=BTC_PRICE))
    assert is_definite_rejection(exc.value)
    assert server.calls("GET", "/private/order") == []


def test_ccxt_error_classes_and_codes_map_to_unknown_or_rejected(server):
    import ccxt

    ex = BinanceAccount(server).client()
    limiter = ex._registry.get(ex._account_id, "order")

    def mapped(exc):
        return ex._map(exc, "create_order t", True, limiter)

    for unknown in (ccxt.RequestTimeout("t"), ccxt.NetworkError("n"), ccxt.ExchangeNotAvailable("502"),
                    ccxt.OnMaintenance("m"), ccxt.BadResponse("binance -1006"), ccxt.OperationFailed("-1000"),
                    ccxt.DuplicateOrderId("dup"), ccxt.ExchangeError('binance {"code":-1001,"msg":"Internal"}')):
        assert isinstance(mapped(unknown), AmbiguousOrderError), unknown
        assert not is_definite_rejection(mapped(unknown))
    for definite, ours in ((ccxt.InvalidOrder("x"), InvalidOrderError), (ccxt.InsufficientFunds("x"),
                           InsufficientFundsError), (ccxt.BadSymbol("x"), InvalidOrderError),
                           (ccxt.AuthenticationError("x"), AuthenticationError),
                           (ccxt.PermissionDenied("x"), AuthenticationError),
                           (ccxt.ExchangeError('binance {"code":-2099,"msg":"no"}'), OrderRejectedError)):
        assert isinstance(mapped(definite), ours) and is_definite_rejection(mapped(definite)), definite
    assert not isinstance(ex._map(ccxt.BadResponse("x"), "fetch_order", False, limiter), AmbiguousOrderError)


def test_binance_cancel_with_an_ambiguous_code_is_resolved_by_lookup(server):
    account = BinanceAccount(server)
    account.orders["c-1"] = binance_order("c-1", status="NEW", executed=D(0))
    account.cancel_answer = Reply({"code": -1007, "msg": "Timeout waiting for response from backend server."}, 400)
    ex = account.client()
    account.orders["c-1"]["status"] = "NEW"

    def lookup(rec):
        reply = Reply(copy.deepcopy(account.orders["c-1"]))
        account.orders["c-1"]["status"] = "CANCELED"          # the cancel did go through
        return reply

    server.routes[("GET", "/private/order")] = lookup
    state = ex.cancel_order(BTC, "c-1")
    assert state.status.value == "cancelled" and len(server.calls("DELETE", "/private/order")) == 1


# -- resting stops on ccxt: placement and sync ----------------------------------------------------------

def stop_view(venue, exchange):  # noqa: F811
    view = view_of(venue)
    return dataclasses.replace(view, markets={**view.markets, BTC: exchange.market_info(BTC)})


def open_btc_position(t, view, stop: D) -> Position:
    return Position.objects.create(trader=t, symbol=BTC, opened_ts=view.bar_ts, qty=BTC_QTY, avg_entry=BTC_PRICE,
                                   cost=BTC_QTY * BTC_PRICE, stop_price=stop, initial_stop=stop)


def test_stop_placement_with_an_uncertain_answer_is_unknown_and_never_doubled(trader, venue, server):  # noqa: F811
    account = BinanceAccount(server, info_with_stop_loss())
    account.fill = False
    account.answer = Reply({"code": -1006, "msg": "Execution status unknown."}, 500)
    account.lookups = "missing"
    exchange = account.client()
    view = stop_view(venue, exchange)
    position = open_btc_position(trader, view, D("60000"))
    assert sync_stops(trader.pk, exchange, view) == 0
    stop = Order.objects.get(position=position, purpose="stop")
    assert stop.status == Order.Status.UNKNOWN
    for tighter in (D("60000"), D("61000")):                 # same stop, then a tighter one
        Position.objects.filter(pk=position.pk).update(stop_price=tighter)
        sync_stops(trader.pk, exchange, view)
    assert len(server.calls("POST", "/private/order")) == 1  # never a second stop while one is unknown
    assert Order.objects.filter(position=position, purpose="stop").count() == 1
    assert Position.objects.get(pk=position.pk).status == Position.Status.OPEN
    account.lookups = "ok"
    reconcile(trader, exchange, view, check_balances=False)
    stop.refresh_from_db()
    assert stop.status == Order.Status.OPEN and stop.exchange_order_id


def test_stop_sync_whose_cancel_is_uncertain_places_no_second_stop(trader, venue, server):  # noqa: F811
    account = BinanceAccount(server, info_with_stop_loss())
    account.fill = False
    exchange = account.client()
    view = stop_view(venue, exchange)
    position = open_btc_position(trader, view, D("60000"))
    assert sync_stops(trader.pk, exchange, view) == 1
    first = Order.objects.get(position=position, purpose="stop")
    assert first.status == Order.Status.OPEN
    Position.objects.filter(pk=position.pk).update(stop_price=D("61000"))
    account.cancel_answer = Reply({"code": -1007, "msg": "Timeout; execution status unknown."}, 400)
    account.lookups = "error"
    sync_stops(trader.pk, exchange, view)
    first.refresh_from_db()
    assert first.status == Order.Status.OPEN                  # not confirmed cancelled...
    assert Order.objects.filter(position=position, purpose="stop").count() == 1   # ...so no second stop
    assert len(server.calls("POST", "/private/order")) == 1
    account.cancel_answer, account.lookups = None, "ok"
    assert sync_stops(trader.pk, exchange, view) == 1         # confirmed: the tighter stop replaces it
    first.refresh_from_db()
    assert first.status == Order.Status.CANCELLED
    assert Order.objects.filter(position=position, purpose="stop", status=Order.Status.OPEN).count() == 1


# -- crashes at every step, on the recorded shapes ----------------------------------------------------

class Crash(BaseException):
    """The worker process dies here (nothing catches a BaseException)."""


class Dying:
    """A real adapter whose worker dies once at ``point``: ``before_call`` (claimed, the request
    never leaves), ``after_call`` (the venue took it, the answer dies with the worker) or
    ``lookup`` (in the middle of a reconciliation)."""

    def __init__(self, adapter, point: str | None) -> None:
        self.venue, self.point = adapter, point
        self.name = adapter.name

    def __getattr__(self, name):
        return getattr(self.venue, name)

    def _maybe(self, point: str) -> None:
        if self.point == point:
            self.point = None
            raise Crash(point)

    def create_order(self, request):
        self._maybe("before_call")
        state = self.venue.create_order(request)
        self._maybe("after_call")
        return state

    def create_stop_order(self, request, stop_price):
        self._maybe("before_call")
        state = self.venue.create_stop_order(request, stop_price)
        self._maybe("after_call")
        return state

    def fetch_order(self, symbol, client_order_id):
        state = self.venue.fetch_order(symbol, client_order_id)
        self._maybe("lookup")
        return state


def venue_account(kind: str, server):
    if kind == "upbit":
        return UpbitAccount(server), {"symbol": SOL}, "SOL", QTY
    return BinanceAccount(server), {"symbol": BTC, "qty": BTC_QTY, "price": BTC_PRICE}, "BTC", BTC_QTY


def assert_books_equal_venue(t, exchange, base: str, kind: str) -> None:
    totals = ({c: free + locked for c, (free, locked) in exchange.balances_detail().items()} if kind == "upbit"
              else exchange.total_balances())
    held = sum(Position.objects.filter(trader=t, status=Position.Status.OPEN).values_list("qty", flat=True), D(0))
    assert held == totals.get(base, D(0))
    if kind == "upbit":
        assert fresh(t).cash == totals["KRW"]


@pytest.mark.parametrize("kind", ["upbit", "binance"])
@pytest.mark.parametrize("point", ["before_call", "after_call", "after_store"])
def test_a_crash_at_any_step_of_a_create_is_repaired_by_reconciliation(trader, venue, server, kind, point,  # noqa: F811
                                                                      monkeypatch, django_capture_on_commit_callbacks):
    from execution import live

    account, where, base, qty = venue_account(kind, server)
    view = view_of(venue)
    real = account.client()
    exchange = Dying(real, point)
    if point == "after_store":
        def die(order):
            raise Crash("after_store")
        monkeypatch.setattr(live, "_after_store", die)
    with pytest.raises(Crash):
        send_entry(trader, view, exchange, django_capture_on_commit_callbacks, **where)
    monkeypatch.undo()
    order = Order.objects.get(trader=trader, purpose="entry")
    assert Position.objects.get(pk=order.position_id).status == Position.Status.OPEN   # nothing closed it
    report = reconcile(trader, real, view, after=10_000)                  # a restarted worker
    assert report.complete and not report.mismatches, report.to_dict()
    order.refresh_from_db()
    posts = server.calls("POST", "/v1/orders" if kind == "upbit" else "/private/order")
    if point == "before_call":
        assert posts == [] and order.status == Order.Status.REJECTED and order.error.startswith("NOT_PLACED")
        assert Position.objects.get(pk=order.position_id).status == Position.Status.CLOSED
    else:
        assert len(posts) == 1 and order.status == Order.Status.FILLED and order.filled_qty == qty
    assert_books_equal_venue(trader, real, base, kind)
    again = reconcile(trader, real, view, after=10_000)
    assert not again.changed and not again.mismatches


@pytest.mark.parametrize("kind", ["upbit", "binance"])
def test_a_crash_in_the_middle_of_reconciliation_is_repaired_by_the_next_one(trader, venue, server, kind,  # noqa: F811
                                                                           django_capture_on_commit_callbacks):
    account, where, base, qty = venue_account(kind, server)
    view = view_of(venue)
    real = account.client()
    with pytest.raises(Crash):
        send_entry(trader, view, Dying(real, "after_call"), django_capture_on_commit_callbacks, **where)
    with pytest.raises(Crash):
        reconcile(trader, Dying(real, "lookup"), view, after=10_000)
    assert not Order.objects.get(trader=trader).fills.exists()            # rolled back as a whole
    report = reconcile(trader, real, view, after=10_000)
    assert report.complete and report.fills == 1 and not report.mismatches
    assert Order.objects.get(trader=trader).filled_qty == qty
    assert_books_equal_venue(trader, real, base, kind)


@pytest.mark.parametrize("point", ["before_call", "after_call"])
def test_a_crash_while_placing_a_stop_never_doubles_it(trader, venue, server, point):  # noqa: F811
    account = BinanceAccount(server, info_with_stop_loss())
    account.fill = False
    real = account.client()
    view = stop_view(venue, real)
    position = open_btc_position(trader, view, D("60000"))
    with pytest.raises(Crash):
        sync_stops(trader.pk, Dying(real, point), view)
    stop = Order.objects.get(position=position, purpose="stop")
    assert stop.status == Order.Status.NEW and stop.submitted_at is not None          # claimed
    sync_stops(trader.pk, real, view)                        # the next send phase: in flight, left alone
    assert Order.objects.filter(position=position, purpose="stop").count() == 1
    assert len(server.calls("POST", "/private/order")) == (0 if point == "before_call" else 1)
    reconcile(trader, real, view, after=10_000, check_balances=False)
    stop.refresh_from_db()
    if point == "before_call":
        assert stop.status == Order.Status.REJECTED                # never placed: the next sync places t2
        assert sync_stops(trader.pk, real, view) == 1
    else:
        assert stop.status == Order.Status.OPEN and sync_stops(trader.pk, real, view) == 0
    assert Order.objects.filter(position=position, purpose="stop", status=Order.Status.OPEN).count() == 1
