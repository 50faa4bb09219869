"""Stored, versioned regime thresholds [RG-2]: storage, versions, audit, the admin, the STRATEGY
page, and that live scans, MarketRegime rows and backtests use the version in force."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from regime import thresholds
from regime.engine.classifier import RegimeThresholds
from regime.models import RegimeThresholdsVersion
from tests.factories import UserFactory, staff_user
from traders import audit

pytestmark = pytest.mark.django_db

ALWAYS_PANIC = {"panic_breadth": [-1.0, -0.5], "panic_atr_rel": [-1.0, -0.5]}   # membership 1 on any input


@pytest.fixture
def boss():
    return staff_user(username="boss")


@pytest.fixture
def boss_client(client, boss):
    client.force_login(boss)
    return client


def test_defaults_come_from_code_until_a_version_is_stored(boss):
    assert thresholds.current_version() is None
    assert thresholds.current_thresholds() == RegimeThresholds()
    row = thresholds.save_thresholds({"chop_atr_rel": [1.2, 1.8]}, user=boss, comment="calmer chop")
    assert row.version == 1 and row.diff == {"chop_atr_rel": [list(RegimeThresholds().chop_atr_rel), [1.2, 1.8]]}
    assert thresholds.current_thresholds().chop_atr_rel == (1.2, 1.8)
    assert row.params == thresholds.current_thresholds().to_json()        # the full set is stored


def test_every_change_is_a_new_immutable_version_and_audited(boss):
    first = thresholds.save_thresholds({"min_membership": 0.2}, user=boss)
    second = thresholds.save_thresholds({"panic_atr_rel": [2.0, 3.0]}, user=boss, comment="stricter panic")
    assert (first.version, second.version) == (1, 2)
    assert second.diff == {"panic_atr_rel": [list(RegimeThresholds().panic_atr_rel), [2.0, 3.0]]}
    assert thresholds.current_thresholds().min_membership == 0.2           # earlier edits carry over
    first.refresh_from_db()
    assert first.params["panic_atr_rel"] == list(RegimeThresholds().panic_atr_rel)   # old version untouched
    assert thresholds.save_thresholds({"min_membership": 0.2}, user=boss) is None     # nothing changed
    rows = audit.filtered(kind=thresholds.AUDIT_KIND)
    assert rows.count() == 2
    assert rows.order_by("seq").last().payload["diff"] == second.diff
    assert audit.verify_chain() is None                                       # the chain is intact


def test_bad_values_and_non_staff_are_refused(boss):
    for bad in ({"panic_atr_rel": [2.0, 2.0]}, {"trend_adx": [1, float("inf")]}, {"nope": [1, 2]},
                {"min_membership": -1}):
        with pytest.raises(ValidationError):
            thresholds.save_thresholds(bad, user=boss)
    with pytest.raises(PermissionDenied):
        thresholds.save_thresholds({"min_membership": 0.3}, user=UserFactory(username="op", operator=True))
    assert RegimeThresholdsVersion.objects.count() == 0


def test_strategy_page_shows_and_saves_the_thresholds(boss_client):
    page = boss_client.get(reverse("strategy"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="regime-thresholds"' in html and "code defaults" in html and 'name="panic_atr_rel.0"' in html
    post = {f"{k}.{i}": str(v[i]) for k, v in RegimeThresholds().to_json().items() if isinstance(v, list)
            for i in (0, 1)}
    post.update(min_membership=str(RegimeThresholds().min_membership), **{"panic_atr_rel.0": "1.8", "panic_atr_rel.1": "2.9"}, comment="page edit")
    response = boss_client.post(reverse("regime-thresholds"), post)
    assert response.status_code == 302 and response["Location"] == reverse("strategy")
    row = thresholds.current_version()
    assert row.version == 1 and row.comment == "page edit" and row.created_by.username == "boss"
    assert row.diff == {"panic_atr_rel": [list(RegimeThresholds().panic_atr_rel), [1.8, 2.9]]}
    assert "v1" in boss_client.get(reverse("strategy")).content.decode()


@pytest.mark.parametrize(("post", "message"), [
    ({"panic_atr_rel.0": "abc", "panic_atr_rel.1": "2"}, "both ends of the ramp must be numbers"),
    ({"panic_atr_rel.0": "2", "panic_atr_rel.1": "2"}, "two different end points"),
    ({"min_membership": "nan"}, "min_membership"),
    ({"trend_adx.0": "1e999", "trend_adx.1": "30"}, "finite"),
])
def test_strategy_page_rejects_bad_values_with_400_and_a_message(boss_client, post, message):
    response = boss_client.post(reverse("regime-thresholds"), post)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert RegimeThresholdsVersion.objects.count() == 0


def test_strategy_page_refuses_non_staff(client):
    client.force_login(UserFactory(username="op", operator=True))
    html = client.get(reverse("strategy")).content.decode()
    assert 'id="regime-thresholds"' in html and 'id="regime-thresholds-form"' not in html   # read-only
    response = client.post(reverse("regime-thresholds"), {"min_membership": "0.3"})
    assert response.status_code == 403
    assert RegimeThresholdsVersion.objects.count() == 0


def test_admin_adds_a_version_and_rows_are_read_only(boss_client):
    url = reverse("admin:regime_regimethresholdsversion_add")
    form = boss_client.get(url)
    assert form.status_code == 200 and "panic_atr_rel" in form.content.decode()      # prefilled
    params = {**RegimeThresholds().to_json(), "trend_adx": [12.0, 30.0]}
    response = boss_client.post(url, {"params": json.dumps(params), "comment": "admin edit"})
    assert response.status_code == 302
    row = thresholds.current_version()
    assert row.version == 1 and row.diff == {"trend_adx": [list(RegimeThresholds().trend_adx), [12.0, 30.0]]}
    assert audit.filtered(kind=thresholds.AUDIT_KIND).count() == 1
    bad = boss_client.post(url, {"params": json.dumps({"trend_adx": [5, 5]}), "comment": ""})
    assert bad.status_code == 200 and "two different end points" in bad.content.decode()
    same = boss_client.post(url, {"params": json.dumps(params), "comment": ""})
    assert "nothing changed" in same.content.decode()
    assert RegimeThresholdsVersion.objects.count() == 1
    change = boss_client.post(reverse("admin:regime_regimethresholdsversion_change", args=[row.pk]),
                              {"params": "{}", "comment": "x"})
    assert change.status_code in (302, 403) and thresholds.current_version().params == row.params
    assert boss_client.get(reverse("admin:regime_regimethresholdsversion_delete", args=[row.pk])).status_code == 403


@pytest.fixture
def sim_settings(settings):
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 8
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    return settings


def test_a_traders_scan_and_the_stored_regime_use_the_stored_thresholds(boss, sim_settings):
    from execution.marketdata import latest_bar
    from regime.models import MarketRegime
    from strategies.models import ScanRun, StrategyProfile
    from traders import tasks
    from traders.models import IntentKind
    from traders.services import create_trader, process_intents, request_intent
    from traders.trading import run_tick

    trader = create_trader(user=boss, name="alpha", profile=StrategyProfile.objects.get(key="STANDARD"),
                           seed_money=10_000_000)
    request_intent(user=boss, kind=IntentKind.START, trader=trader)
    assert process_intents() == 1
    now = 1_790_000_000.0
    tasks.collect_market_data(now)
    bar = latest_bar("sim")
    assert run_tick(trader.pk, bar).outcome == "ok"
    before = ScanRun.objects.filter(trader=trader).latest("pk").regime.label
    assert before != "PANIC"
    thresholds.save_thresholds(ALWAYS_PANIC, user=boss, comment="test: force PANIC")
    now += 60
    tasks.collect_market_data(now)
    bar = latest_bar("sim")
    assert run_tick(trader.pk, bar).outcome == "ok"
    run = ScanRun.objects.filter(trader=trader).latest("pk")
    assert run.regime.label == "PANIC"
    assert run.inputs["regime_thresholds"]["panic_atr_rel"] == [-1.0, -0.5]      # kept for the explainer
    assert MarketRegime.objects.get(exchange="sim", bar_ts=bar).label == "PANIC"


def test_backtests_are_given_the_stored_thresholds(boss):
    from strategies import backtests

    thresholds.save_thresholds({"min_membership": 0.25}, user=boss)
    assert backtests._regime_thresholds().min_membership == 0.25
