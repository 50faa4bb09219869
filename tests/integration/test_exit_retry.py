"""A liquidation the book cannot absorb in one go is retried on the next tick, and a remainder
below the venue minimum becomes dust instead of looping forever."""

from __future__ import annotations

from decimal import Decimal

import pytest

from execution.marketdata import latest_bar
from execution.models import MarketSnapshot, Order, Position
from risk.engine.positions import PositionState
from risk.models import TraderSafetyState
from strategies.engine.types import Direction
from tests.factories import make_trader, staff_user
from traders import tasks
from traders.models import Event, TraderStatus
from traders.trading import run_tick

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(settings):
    from execution import marketdata

    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS = 1600, 4
    marketdata._view_cache.clear()
    user = staff_user(username="boss")
    trader = make_trader(user)
    trader.status = TraderStatus.RUNNING
    trader.save()
    now = 1_790_000_000.0
    tasks.collect_market_data(now)
    return trader, now


def _hold(trader, symbol: str, qty: Decimal, price: Decimal) -> Position:
    cost = qty * price
    trader.cash -= cost
    trader.save()
    state = PositionState.open(symbol, Direction.LONG, float(price), float(qty), float(price) * 0.9, 0)
    return Position.objects.create(trader=trader, symbol=symbol, qty=qty, avg_entry=price, cost=cost, opened_ts=0,
                                   last_price=price, plan={"state": state.to_dict()})


def _thin_book(symbol: str, bid_qty: float) -> None:
    snap = MarketSnapshot.objects.get(exchange="sim", symbol=symbol)
    bids = snap.book["bids"]
    snap.book = {"bids": [[bids[0][0], bid_qty]], "asks": snap.book["asks"][:1]}
    snap.save()


def test_partial_liquidation_is_retried_then_completes(setup):
    trader, now = setup
    symbol = "KRW-ETH"
    price = Decimal(str(MarketSnapshot.objects.get(exchange="sim", symbol=symbol).book["bids"][0][0]))
    position = _hold(trader, symbol, Decimal("2"), price)
    TraderSafetyState.objects.filter(trader=trader).update(state={"liquidate": True})
    _thin_book(symbol, 0.5)
    from execution import marketdata

    marketdata._view_cache.clear()
    bar = latest_bar("sim")
    run_tick(trader.pk, bar)
    position.refresh_from_db()
    assert position.qty == Decimal("1.5") and position.status == Position.Status.OPEN
    assert Event.objects.filter(trader=trader, kind="EXIT_INCOMPLETE").count() == 1
    assert position.plan["state"]["closing"] is False
    # Next bar: the collector restores a deep book, the manager asks again and the rest goes.
    tasks.collect_market_data(now + 60)
    run_tick(trader.pk, latest_bar("sim"))
    position.refresh_from_db()
    assert position.qty == 0 and position.status == Position.Status.CLOSED
    assert Order.objects.filter(trader=trader, purpose="exit").count() == 2


def test_dust_below_minimum_is_kept_but_not_managed(setup):
    trader, now = setup
    symbol = "KRW-ETH"
    price = Decimal(str(MarketSnapshot.objects.get(exchange="sim", symbol=symbol).book["bids"][0][0]))
    dust_qty = (Decimal("1000") / price).quantize(Decimal("1e-8"))   # ~1,000 KRW < 5,000 minimum
    position = _hold(trader, symbol, dust_qty, price)
    TraderSafetyState.objects.filter(trader=trader).update(state={"liquidate": True})
    run_tick(trader.pk, latest_bar("sim"))
    position.refresh_from_db()
    assert position.plan.get("dust") is True and position.qty == dust_qty
    assert Order.objects.get(trader=trader, purpose="exit").error == "below_min_notional"
    tasks.collect_market_data(now + 60)
    run_tick(trader.pk, latest_bar("sim"))
    assert Order.objects.filter(trader=trader, purpose="exit").count() == 1   # no loop
