"""No code path sends a live order unless the trader is LIVE, ARMED and past its paper protection
[EXE-4].

Every order-changing method of every venue adapter (the simulated account, Upbit, ccxt) is
wrapped to record its calls, and the venue factory the LIVE broker uses
(``execution.live.exchange_for``) is replaced by one that records which traders asked for a
venue. Real ticks (``traders.trading.run_tick``, transactions committed as in a worker, so
anything queued for after commit runs) on the sim market for a PAPER trader, a LIVE trader that
is not armed and an armed LIVE trader whose paper protection has not passed: the venues see zero
calls and no venue client is even built, while the PAPER trader really trades. ``broker_for`` is
checked directly for the same traders. An eligible LIVE trader's ticks do reach the venue: that
test proves the tick routes through ``broker_for`` (traders/trading.py).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from execution import live
from execution.adapters.ccxt_adapter import CcxtExchange
from execution.adapters.sim import SimulatedVenue
from execution.adapters.upbit import UpbitExchange
from execution.live import LiveBroker, LiveRefused, PersistentSimExchange, broker_for
from execution.marketdata import latest_bar, load_view
from execution.models import Order
from execution.paper import PaperBroker
from strategies.models import StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import staff_user
from traders import tasks
from traders.models import IntentKind, Trader, TraderMode
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

T0 = 1_790_000_000.0
MAX_TICKS = 60
ORDER_METHODS = {
    SimulatedVenue: ("create_order", "cancel_order", "create_stop_order", "cancel_stop_order"),
    UpbitExchange: ("create_order", "cancel_order", "test_order"),
    CcxtExchange: ("create_order", "cancel_order", "create_stop_order", "cancel_stop_order"),
}


class Venues:
    """Records every venue order call and every venue client the LIVE path builds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.built: list[int] = []

    def factory(self, trader, view=None):
        self.built.append(trader.pk)
        return PersistentSimExchange(trader, view)


@pytest.fixture
def venues(monkeypatch):
    rec = Venues()
    for cls, names in ORDER_METHODS.items():
        for name in names:
            def wrapper(self, *args, _original=getattr(cls, name), _name=f"{cls.__name__}.{name}", **kwargs):
                first = args[0] if args else None
                rec.calls.append((_name, getattr(first, "client_order_id", None) or str(args[1:2])))
                return _original(self, *args, **kwargs)
            monkeypatch.setattr(cls, name, wrapper)
    monkeypatch.setattr(live, "exchange_for", rec.factory)
    return rec


@pytest.fixture
def desk(settings):
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    boss = staff_user(username="boss")
    profile = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(profile).to_dict()
    params.pop("name")
    params.update(entry_threshold=30.0, exit_threshold=15.0)        # an active profile: entries come quickly
    update_profile(profile=profile, params=params, user=boss, comment="live gating test")
    profile.refresh_from_db()
    traders = {name: create_trader(user=boss, name=name, profile=profile, seed_money=Decimal("10000000"))
               for name in ("paper", "unarmed", "unprotected", "eligible")}
    for trader in traders.values():
        request_intent(user=boss, kind=IntentKind.START, trader=trader)
    assert process_intents() == 4
    now = timezone.now()
    Trader.objects.filter(pk=traders["unarmed"].pk).update(mode=TraderMode.LIVE, armed=False,
                                                            paper_protection_started_at=now - timedelta(hours=48),
                                                            paper_seconds=48 * 3600)
    Trader.objects.filter(pk=traders["unprotected"].pk).update(mode=TraderMode.LIVE, armed=True,
                                                                paper_protection_started_at=now - timedelta(hours=1),
                                                                paper_seconds=3600)
    Trader.objects.filter(pk=traders["eligible"].pk).update(mode=TraderMode.LIVE, armed=True,
                                                             paper_protection_started_at=now - timedelta(hours=25),
                                                             paper_seconds=25 * 3600)
    tasks.collect_market_data(T0)
    return {name: Trader.objects.get(pk=t.pk) for name, t in traders.items()}


def tick_until(trader_ids, *, stop=lambda: False) -> list[str]:
    outcomes = []
    now = T0
    for _ in range(MAX_TICKS):
        now += 60
        tasks.collect_market_data(now)
        bar = latest_bar("sim")
        outcomes += [run_tick(pk, bar).outcome for pk in trader_ids]
        if stop():
            break
    return outcomes


def test_ticks_of_ineligible_traders_send_nothing(desk, venues):
    ids = [desk[name].pk for name in ("paper", "unarmed", "unprotected")]
    paper = desk["paper"]
    outcomes = tick_until(ids, stop=lambda: Order.objects.filter(trader=paper, purpose="exit").exists())
    assert "ok" in outcomes                                             # the PAPER trader ran its ticks...
    assert Order.objects.filter(trader=paper, mode="PAPER").exists()    # ...and really traded
    assert not Order.objects.filter(mode="LIVE").exists()
    assert venues.calls == [] and venues.built == []


@pytest.mark.parametrize("name,code", [("unarmed", "NOT_ARMED"), ("unprotected", "PAPER_PROTECTION_PENDING")])
def test_broker_for_refuses_ineligible_live_traders(desk, venues, name, code):
    view = load_view("sim", latest_bar("sim"))
    with pytest.raises(LiveRefused) as exc:
        broker_for(desk[name], view)
    assert exc.value.code == code
    assert isinstance(broker_for(desk["paper"], view), PaperBroker)
    assert venues.calls == [] and venues.built == []


def test_broker_for_builds_the_venue_only_for_an_eligible_live_trader(desk, venues):
    view = load_view("sim", latest_bar("sim"))
    broker = broker_for(desk["eligible"], view)
    assert isinstance(broker, LiveBroker) and venues.built == [desk["eligible"].pk]


def test_an_eligible_live_traders_ticks_reach_the_venue(desk, venues):
    eligible = desk["eligible"]
    tick_until([eligible.pk], stop=lambda: Order.objects.filter(trader=eligible, mode="LIVE").exists())
    live_orders = set(Order.objects.filter(trader=eligible, mode="LIVE").values_list("client_order_id", flat=True))
    assert live_orders and venues.built
    created = [cid for name, cid in venues.calls if name == "SimulatedVenue.create_order"]
    assert created and set(created) <= live_orders
    assert all(cid.startswith(f"qw{eligible.pk}-") for cid in created)
