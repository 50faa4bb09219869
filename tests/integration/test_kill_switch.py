"""The operator's switches, end to end [RK-4], [RT-1]: the web records an intent, a worker applies
it, and the traders' next ticks obey.

* Master kill switch: staff POST to the dashboard's kill-switch view -> KILL_ALL intent ->
  ``process_intents`` engages the KillSwitch -> every trader's next tick trips MASTER_KILL
  (HALTED, PAUSED with the reason), opens nothing and says why on the denied signals; release
  clears the trip and entries resume.
* Emergency stop: liquidates every running trader's positions at market on its next tick
  (LIQUIDATED event), blocks entries while engaged; release restores trading.
* Nobody but staff can do either: the request is refused and no intent is recorded.

The market is the sim with the embedded defaults' seed (as tests/integration/test_paper_trading.py);
the loops are bounded and wait for the state they need (positions held, an entry proposal) rather
than trusting a bar count.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from execution.marketdata import latest_bar
from execution.models import Order, Position, Trade
from risk.models import KillSwitch, TraderSafetyState, TradingState
from strategies.models import Signal, StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import UserFactory, staff_user
from traders import audit, tasks
from traders.models import Event, Intent, IntentKind, IntentStatus, TraderStatus
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

T0 = 1_790_000_000.0


@pytest.fixture
def sim_settings(settings):
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    return settings


class Desk:
    """Two running PAPER traders on the sim, ticked bar by bar like the worker does."""

    def __init__(self, boss) -> None:
        profile = StrategyProfile.objects.get(key="CRAZY")
        params = effective_profile(profile).to_dict()
        params.pop("name")
        params.update(entry_threshold=30.0, exit_threshold=15.0)
        update_profile(profile=profile, params=params, user=boss, comment="kill switch integration test")
        profile.refresh_from_db()
        self.traders = [create_trader(user=boss, name=name, profile=profile, seed_money=Decimal("10000000"))
                        for name in ("alpha", "beta")]
        for trader in self.traders:
            request_intent(user=boss, kind=IntentKind.START, trader=trader)
        assert process_intents() == 2
        self.now = T0
        tasks.collect_market_data(self.now)
        self.bar = latest_bar("sim")

    def tick(self) -> int:
        self.now += 60
        tasks.collect_market_data(self.now)
        self.bar = latest_bar("sim")
        for trader in self.traders:
            assert run_tick(trader.pk, self.bar).outcome == "ok"
        return self.bar

    def tick_until(self, done, limit: int) -> int:
        for _ in range(limit):
            self.tick()
            if done():
                return self.bar
        raise AssertionError(f"not reached within {limit} ticks")

    def open_positions(self, trader) -> list[Position]:
        return list(Position.objects.filter(trader=trader, status=Position.Status.OPEN, qty__gt=0))

    def all_hold_positions(self) -> bool:
        return all(self.open_positions(t) for t in self.traders)

    def safety(self, trader) -> TraderSafetyState:
        return TraderSafetyState.objects.get(trader=trader)

    def codes(self, trader) -> list[str]:
        return [t["code"] for t in self.safety(trader).trips]

    def entries_at(self, bar: int) -> int:
        return Order.objects.filter(trader__in=self.traders, purpose="entry", bar_ts=bar).count()


def post_kill_switch(client, action: str, reason: str = ""):
    return client.post(reverse("kill-switch"), {"action": action, "reason": reason, "next": reverse("dashboard")},
                       follow=True)


@pytest.mark.django_db
def test_only_staff_reach_the_kill_switches(client, sim_settings):
    operator = UserFactory(username="operator", operator=True)     # may run traders, not the switches
    viewer = UserFactory(username="viewer")
    for user in (operator, viewer):
        client.force_login(user)
        for action in ("engage", "release", "emergency"):
            response = post_kill_switch(client, action, "not mine to pull")
            assert response.status_code == 403
            assert "only staff may arm LIVE trading or use the kill switches" in response.content.decode()
        dashboard = client.get(reverse("dashboard")).content.decode()
        assert 'id="kill-switch-controls"' not in dashboard          # no controls for non-staff
    assert not Intent.objects.exists() and not KillSwitch.objects.filter(engaged=True).exists()
    assert not audit.filtered(kind="INTENT_KILL_ALL").exists()

    client.force_login(staff_user(username="boss"))
    assert client.post(reverse("kill-switch"), {"action": "detonate"}).status_code == 400
    assert client.get(reverse("kill-switch")).status_code == 405
    client.logout()
    assert client.post(reverse("kill-switch"), {"action": "engage"}).status_code == 302   # to the login page
    assert not Intent.objects.exists()


@pytest.mark.django_db
def test_master_kill_switch_then_emergency_stop_then_release(client, sim_settings):
    boss = staff_user(username="boss")
    desk = Desk(boss)
    alpha, beta = desk.traders
    client.force_login(boss)
    desk.tick_until(desk.all_hold_positions, limit=40)

    # -- the master kill switch -------------------------------------------------------------
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert 'value="engage"' in dashboard and 'value="emergency"' in dashboard and 'value="release"' not in dashboard
    response = post_kill_switch(client, "engage", "exchange maintenance")
    assert response.redirect_chain[-1][0] == reverse("dashboard")
    intent = Intent.objects.get(kind=IntentKind.KILL_ALL)
    assert (intent.kind, intent.status, intent.created_by) == (IntentKind.KILL_ALL, IntentStatus.PENDING, boss)
    assert not KillSwitch.objects.filter(engaged=True).exists()    # the web only records the wish
    assert audit.filtered(kind="INTENT_KILL_ALL").get().payload == {"reason": "exchange maintenance"}

    assert process_intents() == 1
    switch = KillSwitch.objects.get(pk=1)
    assert switch.engaged and switch.reason == "exchange maintenance" and switch.changed_by == boss
    assert Event.objects.filter(trader=None, kind=IntentKind.KILL_ALL, level="CRITICAL").exists()
    held_at_kill = {t.pk: {p.pk for p in desk.open_positions(t)} for t in desk.traders}

    kill_bar = desk.tick()
    denied = []
    for _ in range(30):
        for trader in desk.traders:
            trader.refresh_from_db()
            safety = desk.safety(trader)
            assert safety.trading_state == TradingState.HALTED and desk.codes(trader) == ["MASTER_KILL"]
            assert trader.status == TraderStatus.PAUSED
            assert trader.status_reason == "MASTER_KILL: master kill switch is on" == safety.reason
        assert desk.entries_at(desk.bar) == 0
        denied += [c for s in Signal.objects.filter(trader__in=desk.traders, bar_ts=desk.bar)
                   for c in s.checks if c.get("check") == "risk_manager"]
        if len(denied) >= 2:
            break
        desk.tick()
    # Entry proposals still come; the checklist refuses them and says why.
    assert denied and all(not c["passed"] and c["code"] == "GUARD_HALTED" and "MASTER_KILL" in c["detail"]
                          for c in denied)
    for trader in desk.traders:
        trip = Event.objects.get(trader=trader, kind="GUARD_TRIP")
        assert trip.data["code"] == "MASTER_KILL" and trip.data["since_ts"] == kill_bar + 60
        assert audit.filtered(trader_id=trader.pk, kind="GUARD_TRIP").get().payload["code"] == "MASTER_KILL"
    # HALTED is not liquidation: nothing was closed by the switch itself.
    assert not Trade.objects.filter(trader__in=desk.traders, exit_reason="EMERGENCY_LIQUIDATE").exists()
    assert any(Position.objects.filter(pk__in=held_at_kill[t.pk], status=Position.Status.OPEN).exists()
               for t in desk.traders)

    dashboard = client.get(reverse("dashboard")).content.decode()
    assert "MASTER KILL SWITCH ENGAGED: exchange maintenance" in dashboard
    assert 'value="release"' in dashboard and 'value="engage"' not in dashboard
    guard_states = dashboard.split('id="guard-states"', 1)[1].split("</table>", 1)[0]
    for trader in desk.traders:                      # each trader's guard state, with the reason
        assert f'<tr data-trader="{trader.pk}">' in guard_states
    assert guard_states.count("Paused by guard</span> MASTER_KILL: master kill switch is on") == 2

    # -- release: the trip clears on the next tick and entries resume --------------------------
    post_kill_switch(client, "release")
    assert process_intents() == 1
    assert not KillSwitch.objects.get(pk=1).engaged
    release_bar = desk.tick()
    for trader in desk.traders:
        trader.refresh_from_db()
        assert desk.safety(trader).trading_state == TradingState.ACTIVE and desk.codes(trader) == []
        assert trader.status == TraderStatus.RUNNING and trader.status_reason == ""
        assert Event.objects.get(trader=trader, kind="GUARD_CLEARED").data["code"] == "MASTER_KILL"
    assert not Order.objects.filter(trader__in=desk.traders, purpose="entry", bar_ts__gte=kill_bar,
                                    bar_ts__lt=release_bar).exists()
    desk.tick_until(lambda: desk.entries_at(desk.bar) > 0, limit=40)
    assert 'value="engage"' in client.get(reverse("dashboard")).content.decode()

    # -- the emergency stop: every running trader is flattened on its next tick ----------------
    desk.tick_until(desk.all_hold_positions, limit=40)
    held = {t.pk: desk.open_positions(t) for t in desk.traders}
    post_kill_switch(client, "emergency", "venue incident")
    assert Intent.objects.filter(kind=IntentKind.EMERGENCY_STOP, status=IntentStatus.PENDING).count() == 1
    assert process_intents() == 1
    assert KillSwitch.objects.get(pk=1).engaged
    for trader in desk.traders:
        safety = desk.safety(trader)
        assert safety.state["liquidate"] is True and safety.trading_state == TradingState.REDUCING
        assert Event.objects.filter(trader=trader, kind="LIQUIDATION_REQUESTED").exists()

    stop_bar = desk.tick()
    for trader in desk.traders:
        assert desk.open_positions(trader) == []
        for position in held[trader.pk]:
            exit_order = Order.objects.get(position=position, purpose="exit", bar_ts=stop_bar)
            assert exit_order.type == "market" and exit_order.status == Order.Status.FILLED
            assert set(position.trades.filter(exit_ts__gte=stop_bar).values_list("exit_reason", flat=True)) == \
                {"EMERGENCY_LIQUIDATE"}
        assert Event.objects.filter(trader=trader, kind="LIQUIDATED").count() == 1
        safety = desk.safety(trader)
        assert "liquidate" not in safety.state
        assert safety.trading_state == TradingState.REDUCING
        assert sorted(desk.codes(trader)) == ["EMERGENCY_STOP", "MASTER_KILL"]
        trader.refresh_from_db()
        assert trader.status == TraderStatus.PAUSED and "EMERGENCY_STOP" in trader.status_reason
    for _ in range(5):   # still engaged: flat, and nothing new is opened
        desk.tick()
        assert desk.entries_at(desk.bar) == 0
        assert not Position.objects.filter(trader__in=desk.traders, status=Position.Status.OPEN).exists()

    # -- release after the emergency: the operator's release is the manual reset ------------
    post_kill_switch(client, "release", "incident over")
    assert process_intents() == 1
    desk.tick()
    for trader in desk.traders:
        assert desk.safety(trader).trading_state == TradingState.ACTIVE and desk.codes(trader) == []
        assert {e.data["code"] for e in Event.objects.filter(trader=trader, kind="GUARD_CLEARED")} == \
            {"MASTER_KILL", "EMERGENCY_STOP"}
    desk.tick_until(lambda: desk.entries_at(desk.bar) > 0, limit=60)
    assert audit.verify_chain() is None
