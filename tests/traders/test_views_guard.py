"""The runtime guard on the trader page and the staff reset of a manual-clear trip [RK-4, issue 5]."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from rest_framework.test import APIClient

from risk.engine.guard import (
    CONSECUTIVE_LOSSES,
    MAX_DRAWDOWN,
    PANIC_REGIME,
    GuardInputs,
    GuardState,
    TradingState,
    evaluate,
)
from risk.models import TraderSafetyState
from strategies.services import effective_profile
from tests.factories import make_trader
from traders import services
from traders.models import AuditLog, Event, Trader, TraderStatus

pytestmark = pytest.mark.django_db

NOW = 1_767_225_600
PEAK = 10_000_000.0


def trip_guard(trader, *, equity: float = 8_000_000.0, **inputs) -> GuardState:
    """Run the real guard on a 20 % drawdown (and whatever ``inputs`` add) and store its verdict
    the way the tick does (traders.trading._run_guard)."""
    profile = effective_profile(trader.profile, params=trader.config_version.params)
    decision = evaluate(GuardInputs(now_ts=NOW, equity=equity, **inputs), profile,
                        GuardState(peak_equity=PEAK, last_ts=NOW - 60))
    safety = trader.safety
    safety.trading_state = decision.trading_state.value
    safety.trips = [t.to_dict() for t in decision.trips]
    safety.reason = "; ".join(f"{t.code}: {t.detail}" for t in decision.trips)
    safety.state = {**safety.state, "guard": decision.state.to_dict()}
    safety.save()
    Trader.objects.filter(pk=trader.pk).update(status=TraderStatus.PAUSED, status_reason=safety.reason,
                                               equity=Decimal(str(equity)))
    trader.refresh_from_db()
    return decision.state


@pytest.fixture
def halted(admin_user):
    trader = make_trader(admin_user, name="dd")
    state = trip_guard(trader)
    assert [t.code for t in state.trips] == [MAX_DRAWDOWN]
    return trader


def test_trader_page_shows_the_guard_state_and_which_trips_need_a_reset(admin_client, halted):
    trip_guard(halted, regime=None, consecutive_losses=9)
    response = admin_client.get(reverse("trader-detail", args=[halted.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="guard-state">HALTED<' in html
    assert '<tr data-code="MAX_DRAWDOWN">' in html and '<tr data-code="CONSECUTIVE_LOSSES">' in html
    assert "drawdown 20.00% from peak reached the limit" in html
    assert "2026-01-01 00:00" in html                                     # since, UTC
    row = html.split('<tr data-code="MAX_DRAWDOWN">')[1].split("</tr>")[0]
    assert "needs a manual reset" in row and "only by a staff reset" in row
    row = html.split('<tr data-code="CONSECUTIVE_LOSSES">')[1].split("</tr>")[0]
    assert "needs a manual reset" not in row and "at the time shown" in row
    assert 'id="reset-guard"' in html and "data-confirm=" in html.split('id="reset-guard"')[1][:300]
    assert '<option value="MAX_DRAWDOWN">' in html and '<option value="">all 2 resettable trips</option>' in html


def test_a_clear_guard_says_so_and_offers_no_reset(admin_client, admin_user):
    trader = make_trader(admin_user, name="calm")
    html = admin_client.get(reverse("trader-detail", args=[trader.pk])).content.decode()
    assert 'id="guard-clear"' in html and 'id="reset-guard"' not in html


def test_reset_clears_max_drawdown_with_audit_and_event(admin_user, halted):
    assert services.reset_guard(user=admin_user, trader=halted, reason="  loss accepted after review ") == [MAX_DRAWDOWN]
    safety = TraderSafetyState.objects.get(trader=halted)
    assert (safety.trading_state, safety.trips, safety.reason) == ("ACTIVE", [], "")
    state = GuardState.from_dict(safety.state["guard"])
    assert state.peak_equity == 8_000_000.0                    # rebased: the loss is accepted
    halted.refresh_from_db()
    assert (halted.status, halted.status_reason) == (TraderStatus.RUNNING, "")
    row = AuditLog.objects.get(kind="GUARD_RESET")
    assert row.actor == "boss" and row.trader_id == halted.pk
    assert row.payload["reason"] == "loss accepted after review" and row.payload["codes"] == [MAX_DRAWDOWN]
    assert row.payload["cleared"][0]["code"] == MAX_DRAWDOWN
    event = Event.objects.get(kind="GUARD_RESET")
    assert event.trader_id == halted.pk and event.level == "WARN"
    assert "boss reset MAX_DRAWDOWN (loss accepted after review); guard now ACTIVE" == event.message
    # The next tick's guard, with the same equity, does not trip again.
    profile = effective_profile(halted.profile, params=halted.config_version.params)
    again = evaluate(GuardInputs(now_ts=NOW + 60, equity=8_000_000.0), profile, state)
    assert again.trips == () and again.trading_state is TradingState.ACTIVE


def test_reset_keeps_trips_it_was_not_asked_for(admin_user, halted):
    trip_guard(halted, consecutive_losses=9)
    assert services.reset_guard(user=admin_user, trader=halted, reason="review", codes=[MAX_DRAWDOWN]) == [MAX_DRAWDOWN]
    safety = TraderSafetyState.objects.get(trader=halted)
    assert [t["code"] for t in safety.trips] == [CONSECUTIVE_LOSSES] and safety.trading_state == "HALTED"
    halted.refresh_from_db()
    assert halted.status == TraderStatus.PAUSED                 # still halted by the other trip


def test_reset_refuses_without_reason_role_or_a_resettable_trip(admin_user, operator, halted):
    with pytest.raises(PermissionDenied, match="only staff"):
        services.reset_guard(user=operator, trader=halted, reason="please")
    with pytest.raises(ValidationError) as exc:
        services.reset_guard(user=admin_user, trader=halted, reason="   ")
    assert "reason" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        services.reset_guard(user=admin_user, trader=halted, reason="x", codes=[PANIC_REGIME, "NOPE"])
    assert exc.value.message_dict["codes"] == ["PANIC_REGIME: not tripped", "NOPE: not a guard trip code"]
    trip_guard(halted, regime=__import__("regime.engine.types", fromlist=["RegimeLabel"]).RegimeLabel.PANIC)
    with pytest.raises(ValidationError) as exc:
        services.reset_guard(user=admin_user, trader=halted, reason="x", codes=[PANIC_REGIME])
    assert "clears by itself once the condition is gone" in exc.value.message_dict["codes"][0]
    assert not AuditLog.objects.filter(kind="GUARD_RESET").exists()
    assert TraderSafetyState.objects.get(trader=halted).trading_state == "REDUCING"


def test_reset_guard_page_action(admin_client, halted):
    url = reverse("trader-reset-guard", args=[halted.pk])
    response = admin_client.post(url, {"code": "", "reason": ""})
    assert response.status_code == 400
    assert "Guard not reset" in response.content.decode() and "This field is required" in response.content.decode()
    response = admin_client.post(url, {"code": "", "reason": "drawdown reviewed"}, follow=True)
    assert response.redirect_chain[-1] == (reverse("trader-detail", args=[halted.pk]), 302)
    assert "Guard reset: MAX_DRAWDOWN" in response.content.decode()
    assert TraderSafetyState.objects.get(trader=halted).trading_state == "ACTIVE"
    response = admin_client.post(url, {"code": "MAX_DRAWDOWN", "reason": "again"})
    assert response.status_code == 400 and "MAX_DRAWDOWN: not tripped" in response.content.decode()


@pytest.mark.parametrize("role", ["operator", "viewer"])
def test_only_staff_reset_the_guard(client, request, role, halted):
    client.force_login(request.getfixturevalue(role))
    Trader.objects.filter(pk=halted.pk).update(owner=request.getfixturevalue(role))   # their own trader
    html = client.get(reverse("trader-detail", args=[halted.pk])).content.decode()
    assert '<tr data-code="MAX_DRAWDOWN">' in html and 'id="reset-guard"' not in html
    response = client.post(reverse("trader-reset-guard", args=[halted.pk]), {"reason": "let me"})
    assert response.status_code == 403 and "Only staff may reset a guard trip." in response.content.decode()
    api = APIClient()
    api.force_authenticate(request.getfixturevalue(role))
    response = api.post(f"/api/traders/{halted.pk}/reset-guard/", {"reason": "let me"}, format="json")
    assert response.status_code == 403 and response.json() == {"detail": "Only staff may do this."}
    assert TraderSafetyState.objects.get(trader=halted).trading_state == "HALTED"


def test_guard_api(admin_user, halted):
    api = APIClient()
    api.force_authenticate(admin_user)
    guard = api.get(f"/api/traders/{halted.pk}/guard/").json()
    assert guard["trading_state"] == "HALTED" and guard["drawdown_peak"] == PEAK
    (trip,) = guard["trips"]
    assert (trip["code"], trip["severity"], trip["clear_mode"], trip["needs_manual_reset"], trip["resettable"]) == (
        MAX_DRAWDOWN, "HALT", "MANUAL", True, True)
    assert trip["since"] == "2026-01-01T00:00:00Z"
    assert api.get(f"/api/traders/{halted.pk}/").json()["guard_trips"] == [MAX_DRAWDOWN]
    response = api.post(f"/api/traders/{halted.pk}/reset-guard/", {}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    response = api.post(f"/api/traders/{halted.pk}/reset-guard/", {"reason": "ok", "codes": ["MAX_DRAWDOWN"]},
                        format="json")
    assert response.status_code == 200
    assert response.json()["trading_state"] == "ACTIVE" and response.json()["trips"] == []
    assert response.json()["drawdown_peak"] == 8_000_000.0
