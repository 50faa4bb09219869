"""DASHBOARD key metrics live, the top bar, money formatting and the take-profit plan [issue 7]."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from execution.models import Position
from tests.conftest import REPO_ROOT
from tests.factories import make_trader, seed_platform
from traders.templatetags.quantweb_tags import tp_plan

pytestmark = pytest.mark.django_db


def metric_cells(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-metric="(\w+)"[^>]*>([^<]*)<', html))


def test_every_metric_on_the_dashboard_is_served_live_by_the_api(admin_client, admin_user):
    seed_platform(admin_user, traders=2, events=20, snapshots_per_trader=5)
    html = admin_client.get(reverse("dashboard")).content.decode()
    cells = metric_cells(html)
    assert set(cells) == {"open_positions_count", "remaining_slots", "portfolio_risk_pct", "daily_pnl_pct",
                          "failed_order_rate", "win_rate", "profit_factor"}
    assert cells["open_positions_count"] == "4"
    api = APIClient()
    api.force_authenticate(admin_user)
    overall = api.get("/api/metrics/").json()["overall"]
    assert set(cells) <= set(overall)
    assert overall["open_positions_count"] == 4
    # A change made by the workers shows up in the next fetch, without re-rendering the page.
    Position.objects.filter(status="open").first().delete()
    assert api.get("/api/metrics/").json()["overall"]["open_positions_count"] == 3
    assert 'data-refresh-seconds="15"' in html


def test_dashboard_script_refreshes_the_metrics_after_ticks_and_periodically():
    js = (REPO_ROOT / "static" / "js" / "live.js").read_text()
    assert 'fetch("/api/metrics/"' in js
    assert "setInterval(fetchNow" in js and "metrics.soon()" in js
    assert "[data-metric]" in js


def test_metrics_api_shape(admin_user):
    api = APIClient()
    api.force_authenticate(admin_user)
    body = api.get("/api/metrics/").json()
    assert set(body) == {"generated_at", "overall", "traders", "strategies", "alarms", "alerts"}
    assert body["overall"]["open_positions_count"] == 0 and body["overall"]["portfolio_risk_pct"] is None


def test_top_bar_names_the_user_once_with_the_role(client, viewer, operator):
    from tests.factories import staff_user

    client.force_login(staff_user(username="admin"))          # the account ``make run`` creates
    html = client.get(reverse("dashboard")).content.decode()
    bar = html.split('<div class="aside">')[1].split("</div>")[0]
    words = re.sub(r"<[^>]+>", " ", bar).split()
    assert words == ["●", "signed", "in", "as", "admin", "staff", "site", "admin", "logout"]
    assert 'id="site-admin"' in bar
    client.force_login(operator)
    bar = client.get(reverse("dashboard")).content.decode().split('<div class="aside">')[1].split("</div>")[0]
    assert "operator" in bar and "site admin" not in bar
    client.force_login(viewer)
    bar = client.get(reverse("dashboard")).content.decode().split('<div class="aside">')[1].split("</div>")[0]
    assert "viewer" in bar


def test_money_has_thousands_separators(admin_client, admin_user):
    trader = make_trader(admin_user, name="rich", seed=Decimal("123456789"))
    html = admin_client.get(reverse("traders")).content.decode()
    assert ">123,456,789<" in html
    html = admin_client.get(reverse("trader-detail", args=[trader.pk])).content.decode()
    assert 'id="seed-money">123,456,789<' in html and 'id="equity">123,456,789<' in html


def test_take_profit_plan_reads_as_a_plan(admin_client):
    assert tp_plan("[[1.5, 0.3], [3.0, 0.3]]") == "sell 30% at +1.5R, 30% at +3R; trail the rest (40%)"
    assert tp_plan([[1, 0.5], [2, 0.5]]) == "sell 50% at +1R, 50% at +2R"
    assert tp_plan([]) == "no scale-out; trail the whole position"
    assert tp_plan("not json") == "not json"
    html = admin_client.get(reverse("strategy")).content.decode()
    row = html.split("take_profit_plan")[1].split("</tr>")[0]
    assert "sell " in row and "% at +" in row and "[[" not in re.sub(r'title="[^"]*"', "", row)


def test_styles_and_scripts_are_local():
    for template in Path(REPO_ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        assert "://cdn" not in text and "unpkg.com" not in text and "jsdelivr" not in text, template
