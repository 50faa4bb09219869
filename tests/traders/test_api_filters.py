"""REST API list filters [issue 7 #6]: documented, validated (400 with a message per parameter,
never a 500, never silently ignored) and applied."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from execution.models import Fill, Order, Position
from regime.models import MarketRegime
from strategies.models import Signal
from tests.factories import SEED_T0, seed_platform, staff_user
from traders.models import Event, Trader

pytestmark = pytest.mark.django_db

LIST_ENDPOINTS = ["traders", "events", "orders", "fills", "positions", "signals", "regimes", "profiles"]


@pytest.fixture
def api():
    client = APIClient()
    client.force_authenticate(staff_user(username="filter-boss"))
    return client


@pytest.fixture
def data(api):
    from django.contrib.auth import get_user_model

    return seed_platform(get_user_model().objects.get(username="filter-boss"), traders=3, events=90,
                         snapshots_per_trader=5, signals_per_trader=12, orders_per_trader=6, regimes=10)


def get(api, endpoint, **params):
    response = api.get(f"/api/{endpoint}/", params, HTTP_ACCEPT="application/json")
    return response, response.json()


def ids(body) -> list[int]:
    return [row["id"] for row in body["results"]]


def test_every_list_endpoint_documents_its_filters(api):
    schema = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    expected = {
        "traders": {"mode", "status", "profile", "exchange", "armed"},
        "events": {"trader", "level", "kind", "after", "since", "until"},
        "orders": {"trader", "symbol", "status", "side", "purpose", "mode", "since", "until"},
        "fills": {"trader", "order", "symbol", "side", "since", "until"},
        "positions": {"trader", "symbol", "status", "since", "until"},
        "signals": {"trader", "symbol", "action", "regime", "since", "until"},
        "regimes": {"exchange", "label", "since", "until"},
        "profiles": {"key"},
    }
    for endpoint, names in expected.items():
        params = {p["name"]: p for p in schema["paths"][f"/api/{endpoint}/"]["get"]["parameters"]}
        assert names | {"limit", "offset"} == set(params), endpoint
        assert params["limit"]["schema"]["maximum"] == 500 and params["limit"]["schema"]["minimum"] == 1
        assert "400" in schema["paths"][f"/api/{endpoint}/"]["get"]["responses"], endpoint
    mode = {p["name"]: p for p in schema["paths"]["/api/traders/"]["get"]["parameters"]}["mode"]
    assert mode["schema"]["enum"] == ["PAPER", "LIVE"]


def test_events_filter_by_trader_level_kind_time_and_after(api, data):
    trader = data[1]
    _, body = get(api, "events", trader=trader.pk, limit=500)
    assert body["count"] == Event.objects.filter(trader=trader).count() > 0
    assert {row["trader"] for row in body["results"]} == {trader.pk}
    _, body = get(api, "events", level="CRITICAL", kind="POSITION_OPENED", limit=500)
    assert body["count"] == Event.objects.filter(level="CRITICAL", kind="POSITION_OPENED").count() > 0
    assert {(r["level"], r["kind"]) for r in body["results"]} == {("CRITICAL", "POSITION_OPENED")}
    since, until = "2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"
    _, body = get(api, "events", since=since, until=until, limit=500)
    stamps = sorted(datetime.fromisoformat(r["ts"]) for r in body["results"])
    assert len(stamps) == 10 and stamps[0] == datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)
    newest = Event.objects.order_by("-id").values_list("id", flat=True)[3]
    _, body = get(api, "events", after=newest)
    assert sorted(ids(body)) == sorted(Event.objects.filter(id__gt=newest).values_list("id", flat=True))
    assert len(ids(body)) == 3


def test_orders_fills_positions_signals_regimes_filters(api, data):
    trader = data[0]
    _, body = get(api, "orders", trader=trader.pk, status="rejected", side="sell", limit=500)
    expected = Order.objects.filter(trader=trader, status="rejected", side="sell")
    assert sorted(ids(body)) == sorted(expected.values_list("id", flat=True)) and expected.exists()
    _, body = get(api, "orders", symbol="KRW-BTC", purpose="entry", mode="PAPER", limit=500)
    assert body["count"] == Order.objects.filter(symbol="KRW-BTC", purpose="entry").count() > 0

    order = Fill.objects.first().order
    _, body = get(api, "fills", order=order.pk)
    assert ids(body) == list(Fill.objects.filter(order=order).values_list("id", flat=True))
    first_bar = datetime.fromtimestamp(SEED_T0 + 2 * 60, UTC).isoformat()
    _, body = get(api, "fills", since=first_bar, limit=500)
    assert body["count"] == Fill.objects.filter(ts__gte=SEED_T0 + 120).count() > 0

    _, body = get(api, "positions", status="open", trader=trader.pk)
    assert body["count"] == Position.objects.filter(trader=trader, status="open").count() == 2
    _, body = get(api, "positions", symbol="KRW-XRP", status="closed", limit=500)
    assert body["count"] == 3 and {r["symbol"] for r in body["results"]} == {"KRW-XRP"}

    _, body = get(api, "signals", trader=trader.pk, action="SKIP", regime="TREND")
    assert body["count"] == Signal.objects.filter(trader=trader, action="SKIP").count() > 0
    until = datetime.fromtimestamp(SEED_T0 + 3 * 60, UTC).isoformat()
    _, body = get(api, "signals", until=until, limit=500)
    assert body["count"] == Signal.objects.filter(bar_ts__lt=SEED_T0 + 180).count() == 9

    _, body = get(api, "regimes", label="PANIC", exchange="sim")
    assert body["count"] == MarketRegime.objects.filter(label="PANIC").count() == 2


def test_traders_and_profiles_filters(api, data):
    Trader.objects.filter(pk=data[0].pk).update(mode="LIVE", status="running")
    _, body = get(api, "traders", mode="LIVE")
    assert ids(body) == [data[0].pk]
    _, body = get(api, "traders", status="stopped", profile="PROFIT_FIRST")
    assert ids(body) == [data[2].pk]
    _, body = get(api, "traders", armed="false", exchange="sim")
    assert body["count"] == 3
    _, body = get(api, "profiles", key="CRAZY")
    assert [r["key"] for r in body["results"]] == ["CRAZY"]


@pytest.mark.parametrize("endpoint,params,field", [
    ("events", {"trader": "abc"}, "trader"),
    ("events", {"trader": "0"}, "trader"),
    ("events", {"trader": str(2**70)}, "trader"),
    ("events", {"level": "LOUD"}, "level"),
    ("events", {"kind": "no spaces!"}, "kind"),
    ("events", {"since": "yesterday"}, "since"),
    ("events", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
    ("events", {"after": "-1"}, "after"),
    ("orders", {"status": "FILLED"}, "status"),
    ("orders", {"side": "short"}, "side"),
    ("orders", {"symbol": "KRW BTC"}, "symbol"),
    ("fills", {"order": "x"}, "order"),
    ("positions", {"status": "half"}, "status"),
    ("signals", {"action": "BUY"}, "action"),
    ("signals", {"regime": "BULL"}, "regime"),
    ("regimes", {"label": "trend"}, "label"),
    ("traders", {"mode": "paper"}, "mode"),
    ("traders", {"armed": "maybe"}, "armed"),
    ("profiles", {"key": "YOLO"}, "key"),
    ("events", {"limit": "0"}, "limit"),
    ("events", {"limit": "501"}, "limit"),
    ("events", {"limit": "ten"}, "limit"),
    ("events", {"offset": "-5"}, "offset"),
    ("events", {"offset": str(2**40)}, "offset"),
    ("orders", {"stauts": "open"}, "stauts"),             # a typo is not silently ignored
    ("signals", {"symbol": ""}, "symbol"),
])
def test_bad_filter_values_are_a_400_naming_the_parameter(api, data, endpoint, params, field):
    response, body = get(api, endpoint, **params)
    assert response.status_code == 400, (endpoint, params, body)
    assert field in body and body[field], body
    assert all(isinstance(m, str) and m for m in body[field])


def test_a_repeated_parameter_is_refused(api, data):
    response = api.get("/api/events/?level=INFO&level=WARN", HTTP_ACCEPT="application/json")
    assert response.status_code == 400 and response.json() == {"level": ["give this parameter once"]}


def test_unknown_parameter_message_lists_what_the_endpoint_takes(api):
    response, body = get(api, "positions", colour="blue")
    assert response.status_code == 400
    assert body["colour"] == ["unknown query parameter; this endpoint takes limit, offset, since, status, symbol, "
                              "trader, until"]


def test_filters_apply_to_lists_not_to_detail(api, data):
    event = Event.objects.first()
    assert api.get(f"/api/events/{event.pk}/", HTTP_ACCEPT="application/json").status_code == 200


def test_every_list_endpoint_paginates_and_answers_json(api, data):
    for endpoint in LIST_ENDPOINTS:
        response, body = get(api, endpoint, limit=2, offset=1)
        assert response.status_code == 200, endpoint
        assert set(body) == {"count", "next", "previous", "results"} and len(body["results"]) <= 2


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/no-such-thing/1/", HTTP_ACCEPT="application/json")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert "No API endpoint" in response.json()["detail"]
    response = api.get("/api/events/1.5/", HTTP_ACCEPT="application/json")
    assert response.status_code == 404 and response["Content-Type"] == "application/json"


def test_audit_export_api_validates_its_query(api, data):
    response = api.get(reverse("api-audit-export"), {"format": "jsonl", "trader": ""})
    assert response.status_code == 400 and "trader" in response.json()
    response = api.get(reverse("api-audit-export"), {"format": "xml"})
    assert response.status_code == 400 and "format" in response.json()
    response = api.get(reverse("api-audit-export"), {"format": "jsonl", "kind": "TRADER_CREATED", "trader": data[0].pk})
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 1 and '"kind": "TRADER_CREATED"' in lines[0]
