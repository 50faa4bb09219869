"""Owners [issue 21 #4]: traders and credentials belong to a user; non-staff see and act on their
own only, and the pages, the API, the exports, admin and the worker all apply the same scoping.
Also: accumulated PAPER time for the paper protection, and EMERGENCY_STOP on stopped LIVE
traders."""

from __future__ import annotations

import importlib
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.admin.sites import site
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from execution.models import Order, Position
from risk.models import KillSwitch, TraderSafetyState
from tests.factories import UserFactory, make_trader, profile, staff_user
from traders.models import (
    Credential,
    EquitySnapshot,
    Event,
    Intent,
    IntentKind,
    IntentStatus,
    Trader,
    TraderMode,
    TraderStatus,
)
from traders.services import log_event, process_intents, request_intent

pytestmark = pytest.mark.django_db


@pytest.fixture
def ann():
    return UserFactory(username="ann", operator=True)


@pytest.fixture
def bob():
    return UserFactory(username="bob", operator=True)


@pytest.fixture
def boss():
    return staff_user(username="boss")


@pytest.fixture
def desk(ann, bob):
    """ann and bob each own a trader with an event, an order, a position and a signal."""
    out = {}
    for user in (ann, bob):
        trader = make_trader(user, name=f"{user.username}-1")
        log_event(trader, "TEST", f"{user.username}'s event")
        Order.objects.create(trader=trader, symbol="KRW-BTC", side="buy", purpose="entry", qty="1", price="1",
                             client_order_id=f"c-{user.username}")
        Position.objects.create(trader=trader, symbol="KRW-BTC", qty="1", avg_entry="1", opened_ts=0)
        out[user.username] = trader
    return out


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids(response) -> set[int]:
    assert response.status_code == 200, response.content[:300]
    return {row["id"] for row in response.json()["results"]}


# -- creation sets the owner ------------------------------------------------------------------

def test_creating_sets_the_owner(ann, client):
    response = api(ann).post("/api/traders/", {"name": "via-api", "profile": "STANDARD", "seed_money": "1000000"},
                             format="json")
    assert response.status_code == 201 and Trader.objects.get(name="via-api").owner == ann
    client.force_login(ann)
    client.post(reverse("traders"), {"name": "via-page", "profile": profile().pk, "seed_money": "1000000"})
    assert Trader.objects.get(name="via-page").owner == ann


def test_staff_credentials_are_owned_by_their_creator(boss, client):
    response = api(boss).post("/api/credentials/", {"exchange": "upbit", "label": "api", "api_key": "k" * 12,
                                                    "api_secret": "s" * 12}, format="json")
    assert response.status_code == 201 and Credential.objects.get(label="api").owner == boss
    client.force_login(boss)
    client.post(reverse("config"), {"exchange": "upbit", "label": "page", "api_key": "k" * 12, "api_secret": "s" * 12})
    assert Credential.objects.get(label="page").owner == boss


def test_a_trader_is_created_with_ones_own_credential_only(ann, bob, client):
    mine = Credential.objects.create(exchange="upbit", label="ann", api_key="k" * 12, api_secret="s" * 12, owner=ann)
    theirs = Credential.objects.create(exchange="upbit", label="bob", api_key="k" * 12, api_secret="s" * 12, owner=bob)
    body = {"name": "t", "profile": "STANDARD", "seed_money": "1000000"}
    response = api(ann).post("/api/traders/", {**body, "credential": theirs.pk}, format="json")
    assert response.status_code == 400 and "credential" in response.json()
    assert api(ann).post("/api/traders/", {**body, "credential": mine.pk}, format="json").status_code == 201
    client.force_login(ann)
    html = client.get(reverse("traders")).content.decode()
    choices = html.split('name="credential"', 1)[1].split("</select>", 1)[0]
    assert f'value="{mine.pk}"' in choices and f'value="{theirs.pk}"' not in choices
    response = client.post(reverse("traders"), {"name": "t2", "profile": profile().pk, "seed_money": "1000000",
                                                "credential": theirs.pk})
    assert response.status_code == 400 and not Trader.objects.filter(name="t2").exists()


# -- the API ------------------------------------------------------------------------------------

def test_api_lists_and_rows_are_scoped(ann, bob, boss, desk):
    a, b = desk["ann"], desk["bob"]
    assert ids(api(ann).get("/api/traders/")) == {a.pk}
    assert ids(api(boss).get("/api/traders/")) == {a.pk, b.pk}
    for endpoint in ("orders", "positions"):
        rows = api(ann).get(f"/api/{endpoint}/").json()["results"]
        assert {r["trader"] for r in rows} == {a.pk}, endpoint
        assert {r["trader"] for r in api(boss).get(f"/api/{endpoint}/").json()["results"]} == {a.pk, b.pk}
    events = api(ann).get("/api/events/").json()["results"]
    assert {e["trader"] for e in events} == {a.pk}
    log_event(None, "PLATFORM", "kill switch engaged")
    assert None in {e["trader"] for e in api(ann).get("/api/events/").json()["results"]}   # platform rows
    metrics = api(ann).get("/api/metrics/").json()
    assert {t["id"] for t in metrics["traders"]} == {a.pk}


def test_someone_elses_trader_is_a_404_in_the_api(ann, desk):
    b = desk["bob"]
    client = api(ann)
    assert client.get(f"/api/traders/{b.pk}/").status_code == 404
    assert client.get(f"/api/traders/{b.pk}/guard/").status_code == 404
    order = Order.objects.get(trader=b)
    assert client.get(f"/api/orders/{order.pk}/").status_code == 404
    for action in ("run", "stop", "remove", "liquidate", "disarm"):
        assert client.post(f"/api/traders/{b.pk}/{action}/").status_code == 404, action
    assert client.post(f"/api/traders/{b.pk}/mode/", {"mode": "PAPER"}, format="json").status_code == 404
    assert not Intent.objects.exists()


def test_signals_and_fills_are_scoped(ann, desk):
    assert api(ann).get("/api/signals/").status_code == 200
    assert api(ann).get("/api/fills/").status_code == 200
    assert api(ann).get(f"/api/signals/?trader={desk['bob'].pk}").json()["results"] == []


# -- the pages ----------------------------------------------------------------------------------

def test_pages_are_scoped(ann, desk, client):
    a, b = desk["ann"], desk["bob"]
    EquitySnapshot.objects.create(trader=b, ts=1_790_000_000, equity="1", cash="1", seed_money="1")
    client.force_login(ann)
    for url in (reverse("traders"), reverse("dashboard"), reverse("config")):
        html = client.get(url).content.decode()
        assert "bob-1" not in html and "bob&#x27;s event" not in html, url
    assert "ann-1" in client.get(reverse("traders")).content.decode()
    assert client.get(reverse("trader-detail", args=[b.pk])).status_code == 404
    assert client.get(reverse("trader-detail", args=[a.pk])).status_code == 200
    assert client.post(reverse("trader-action", args=[b.pk]), {"action": "STOP"}).status_code == 404
    assert client.post(reverse("trader-mode", args=[b.pk]), {"mode": "PAPER"}).status_code == 404
    assert client.post(reverse("trader-reset-guard", args=[b.pk]), {"reason": "x"}).status_code == 404
    assert not Intent.objects.exists()


def test_staff_see_every_trader_on_the_pages(boss, desk, client):
    client.force_login(boss)
    html = client.get(reverse("traders")).content.decode()
    assert "ann-1" in html and "bob-1" in html
    assert client.get(reverse("trader-detail", args=[desk["bob"].pk])).status_code == 200


# -- exports ------------------------------------------------------------------------------------

def _jsonl(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines() if line]


def test_audit_export_non_staff_get_their_traders_rows_only(ann, boss, desk, client):
    a, b = desk["ann"], desk["bob"]
    rows = _jsonl(api(ann).get("/api/audit/export/?format=jsonl"))
    assert rows and {r["trader_id"] for r in rows} == {a.pk}
    assert api(ann).get(f"/api/audit/export/?format=jsonl&trader={b.pk}").status_code == 404
    client.force_login(ann)
    page_rows = _jsonl(client.get(reverse("audit-export"), {"format": "jsonl"}))
    assert {r["trader_id"] for r in page_rows} == {a.pk}
    assert client.get(reverse("audit-export"), {"format": "jsonl", "trader": b.pk}).status_code == 404
    staff_rows = _jsonl(api(boss).get("/api/audit/export/?format=jsonl"))
    assert {a.pk, b.pk, None} <= {r["trader_id"] for r in staff_rows}


# -- admin ---------------------------------------------------------------------------------------

def test_admin_querysets_apply_the_same_scoping(ann, boss, desk):
    request = RequestFactory().get("/admin/")
    for user, expected in ((boss, {desk["ann"].pk, desk["bob"].pk}), (ann, {desk["ann"].pk})):
        request.user = user
        assert set(site._registry[Trader].get_queryset(request).values_list("pk", flat=True)) == expected
        events = site._registry[Event].get_queryset(request)
        assert set(events.values_list("trader_id", flat=True)) == expected
    request.user = boss
    assert "paper_seconds" in site._registry[Trader].get_readonly_fields(request)   # no bypass of the protection


# -- the worker re-checks the owner ------------------------------------------------------------

def test_an_intent_is_rejected_when_the_trader_changed_hands(ann, bob, desk):
    a = desk["ann"]
    intent = request_intent(user=ann, kind=IntentKind.START, trader=a)
    Trader.objects.filter(pk=a.pk).update(owner=bob)
    process_intents()
    intent.refresh_from_db()
    assert intent.status == IntentStatus.REJECTED and "not yours" in intent.result
    assert Trader.objects.get(pk=a.pk).status == TraderStatus.STOPPED


# -- the migration ------------------------------------------------------------------------------

def test_migration_gives_existing_rows_to_the_first_superuser(boss, ann):
    trader = make_trader(boss, name="old")
    credential = Credential.objects.create(exchange="upbit", label="old", api_key="k" * 12, api_secret="s" * 12)
    Trader.objects.filter(pk=trader.pk).update(owner=None, mode=TraderMode.LIVE,
                                               paper_protection_started_at=timezone.now() - timedelta(hours=30))
    staff_user(username="later-boss")
    migration = importlib.import_module("traders.migrations.0007_owners")
    migration.assign_owners_and_paper_time(apps, None)
    trader.refresh_from_db()
    credential.refresh_from_db()
    assert trader.owner == boss and credential.owner == boss
    assert trader.paper_seconds >= 30 * 3600 - 5     # a LIVE trader keeps its old credit


# -- paper protection: accumulated PAPER running time ------------------------------------------

def _shift_run(trader, hours):
    """Pretend the current PAPER run started ``hours`` ago."""
    Trader.objects.filter(pk=trader.pk).update(paper_run_started_at=timezone.now() - timedelta(hours=hours))


def test_paper_protection_counts_paper_running_time_only(boss, settings):
    settings.QUANTWEB_PAPER_PROTECTION_HOURS = 24
    trader = make_trader(boss)
    request_intent(user=boss, kind=IntentKind.START, trader=trader)
    process_intents()
    trader.refresh_from_db()
    assert trader.status == TraderStatus.RUNNING and trader.paper_run_started_at is not None
    _shift_run(trader, 10)
    request_intent(user=boss, kind=IntentKind.STOP, trader=trader)
    process_intents()
    trader.refresh_from_db()
    assert trader.paper_run_started_at is None and 10 * 3600 - 5 <= trader.paper_seconds <= 10 * 3600 + 5
    # A long stop does not count: the first start was 3 days ago, yet only 10 h ran.
    Trader.objects.filter(pk=trader.pk).update(paper_protection_started_at=timezone.now() - timedelta(days=3))
    trader.refresh_from_db()
    assert not trader.paper_protection_passed()
    request_intent(user=boss, kind=IntentKind.START, trader=trader)
    process_intents()
    trader.refresh_from_db()
    _shift_run(trader, 13)
    trader.refresh_from_db()
    assert 23 * 3600 - 10 <= trader.paper_running_seconds() <= 23 * 3600 + 10 and not trader.paper_protection_passed()
    _shift_run(trader, 14.5)
    trader.refresh_from_db()
    assert trader.paper_protection_passed()     # 10 h + 14.5 h of the current run


def test_paper_clock_stops_on_a_mode_change_and_ignores_live_time(boss):
    credential = Credential.objects.create(exchange="upbit", label="c", api_key="k" * 12, api_secret="s" * 12,
                                           owner=boss)
    trader = make_trader(boss)
    Trader.objects.filter(pk=trader.pk).update(credential=credential, exchange="upbit")
    trader.refresh_from_db()
    trader.status = TraderStatus.RUNNING
    trader.save(update_fields=["status"])
    _shift_run(trader, 5)
    trader.refresh_from_db()
    trader.status = TraderStatus.STOPPED
    trader.save(update_fields=["status"])
    request_intent(user=boss, kind=IntentKind.SET_MODE, trader=trader, payload={"mode": "LIVE"})
    process_intents()
    trader.refresh_from_db()
    assert trader.mode == TraderMode.LIVE and 5 * 3600 - 5 <= trader.paper_seconds <= 5 * 3600 + 5
    trader.status = TraderStatus.RUNNING      # running in LIVE adds nothing
    trader.save(update_fields=["status"])
    trader.refresh_from_db()
    assert trader.paper_run_started_at is None
    assert trader.paper_running_seconds(timezone.now() + timedelta(days=2)) == trader.paper_seconds


def test_guard_pause_keeps_the_paper_clock_running(boss):
    trader = make_trader(boss)
    trader.status = TraderStatus.RUNNING
    trader.save()
    started = Trader.objects.get(pk=trader.pk).paper_run_started_at
    trader.status = TraderStatus.PAUSED
    trader.save()
    assert Trader.objects.get(pk=trader.pk).paper_run_started_at == started and trader.paper_seconds == 0


def test_arm_needs_accumulated_paper_time(boss):
    credential = Credential.objects.create(exchange="upbit", label="c", api_key="k" * 12, api_secret="s" * 12)
    trader = make_trader(boss)
    Trader.objects.filter(pk=trader.pk).update(credential=credential, exchange="upbit", mode=TraderMode.LIVE,
                                               paper_protection_started_at=timezone.now() - timedelta(days=5))
    response = api(boss).post(f"/api/traders/{trader.pk}/arm/")
    assert response.status_code == 400 and "paper protection" in json.dumps(response.json())
    Trader.objects.filter(pk=trader.pk).update(paper_seconds=24 * 3600)
    assert api(boss).post(f"/api/traders/{trader.pk}/arm/").status_code == 202


# -- EMERGENCY_STOP liquidates stopped traders' LIVE positions too ------------------------------

def test_emergency_stop_liquidates_stopped_live_traders_and_release_stops_them_again(boss):
    credential = Credential.objects.create(exchange="upbit", label="c", api_key="k" * 12, api_secret="s" * 12)
    holder, flat, paper = (make_trader(boss, name=n) for n in ("holder", "flat", "paper-holder"))
    Trader.objects.filter(pk__in=[holder.pk, flat.pk]).update(mode=TraderMode.LIVE, armed=True, credential=credential,
                                                              exchange="upbit", paper_seconds=30 * 3600)
    Position.objects.create(trader=holder, symbol="KRW-BTC", qty="0.5", avg_entry="50000000", opened_ts=0)
    Position.objects.create(trader=paper, symbol="KRW-BTC", qty="0.5", avg_entry="50000000", opened_ts=0)
    request_intent(user=boss, kind=IntentKind.EMERGENCY_STOP, payload={"reason": "test"})
    process_intents()
    assert KillSwitch.objects.get(pk=1).engaged
    holder.refresh_from_db()
    assert holder.status == TraderStatus.RUNNING
    safety = TraderSafetyState.objects.get(trader=holder)
    assert safety.state.get("liquidate") is True and safety.trading_state == "REDUCING"
    assert Event.objects.filter(trader=holder, kind="EMERGENCY_LIQUIDATE_STOPPED").exists()
    for other in (flat, paper):      # no LIVE position: untouched
        other.refresh_from_db()
        assert other.status == TraderStatus.STOPPED
        assert not TraderSafetyState.objects.get(trader=other).state.get("liquidate")
    request_intent(user=boss, kind=IntentKind.RELEASE_KILL, payload={"reason": "done"})
    process_intents()
    holder.refresh_from_db()
    assert holder.status == TraderStatus.STOPPED
    assert "emergency_restarted" not in TraderSafetyState.objects.get(trader=holder).state


def test_seed_money_decimal_sanity(ann):
    """Owners do not change the books: a new trader still starts with its seed as cash."""
    trader = make_trader(ann, seed=Decimal("2000000"))
    assert trader.owner == ann and trader.cash == Decimal("2000000")


def test_platform_metrics_are_staff_only(ann, boss, client):
    client.force_login(ann)
    assert client.get(reverse("metrics")).status_code == 403
    client.force_login(boss)
    assert client.get(reverse("metrics")).status_code == 200
