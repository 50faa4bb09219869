"""The four pages and the trader page in a bounded number of queries [issue 7 #5].

Rendered once on a small platform (5 traders, 300 events) and once on the size the issue names
(50 traders, 10,000 events, with orders, fills, positions, signals and regime rows): the query
count must be the same, so it does not grow with traders or events, and stay under a fixed
bound. Server time for the same data set is measured by ``bench/pages.py`` (never asserted).
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import seed_platform, staff_user

pytestmark = pytest.mark.django_db

PAGES = ["dashboard", "traders", "strategy", "config", "trader-detail"]
MAX_QUERIES = {"dashboard": 25, "traders": 10, "strategy": 20, "config": 15, "trader-detail": 15}


def url(page: str, trader_id: int) -> str:
    return reverse(page, args=[trader_id]) if page == "trader-detail" else reverse(page)


def render_counts(client, trader_id: int) -> dict[str, int]:
    counts = {}
    for page in PAGES:
        client.get(url(page, trader_id))      # warm: sessions, content types, permission caches
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url(page, trader_id))
        assert response.status_code == 200, page
        counts[page] = len(ctx.captured_queries)
    return counts


@pytest.fixture
def boss(client):
    user = staff_user(username="speed-boss")
    client.force_login(user)
    return user


def test_query_count_does_not_grow_with_traders_or_events(client, boss, django_assert_max_num_queries):
    # Five traders already cover the five profiles (AI MODE reads its deployed model once).
    small = seed_platform(boss, traders=5, events=300, snapshots_per_trader=30)
    few = render_counts(client, small[0].pk)
    seed_platform(boss, traders=45, events=9_700, snapshots_per_trader=30)
    many = render_counts(client, small[0].pk)
    assert many == few, {p: (few[p], many[p]) for p in PAGES}
    for page in PAGES:
        with django_assert_max_num_queries(MAX_QUERIES[page]):
            assert client.get(url(page, small[0].pk)).status_code == 200


def test_pages_show_the_large_platform(client, boss):
    traders = seed_platform(boss, traders=50, events=10_000, snapshots_per_trader=30)
    html = client.get(reverse("traders")).content.decode()
    assert html.count("<tr data-trader=") == 50
    assert "10,000,000" in html                                    # seed money, grouped
    html = client.get(reverse("dashboard")).content.decode()
    assert html.count('<tr data-id="') == 100                      # the newest 100 log rows
    assert 'data-metric="open_positions_count">100<' in html       # 2 open positions x 50 traders
    html = client.get(reverse("trader-detail", args=[traders[7].pk])).content.decode()
    assert html.count("<tr data-id=") == 100 and 'id="seed-money">10,000,000<' in html
