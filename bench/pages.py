"""Benchmark of the pages' server time [issue 7 #5]: prints JSON.

    .venv/bin/python bench/pages.py [--traders 50] [--events 10000] [--snapshots 720] [--runs 20]

Migrates a throw-away SQLite database in a temporary directory, fills it with
``tests.factories.seed_platform`` (traders with 12 h of one-minute equity, open and closed
positions, orders, fills, trades, signals, regime rows and the action log), logs in as staff
and renders DASHBOARD, TRADERS, STRATEGY, CONFIG and one trader page through Django's test
client with ``DEBUG`` off. For each page: the first render (cold caches: templates, URL
resolver), then p50 / p95 / max of ``--runs`` renders, in milliseconds of server time (request
in, full response body out; no network, no browser), and the number of queries. The issue's
target is a first render under 300 ms with 50 traders and 10,000 events.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGES = ["dashboard", "traders", "strategy", "config", "trader-detail"]


def _setup(var_dir: str) -> None:
    os.environ["QUANTWEB_VAR_DIR"] = var_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DEBUG", "false")
    os.environ["DJANGO_SETTINGS_MODULE"] = "quantweb.settings_test"   # local-memory cache, no Redis
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _render(client, url: str) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        started = time.perf_counter()
        response = client.get(url)
        body = b"".join(response) if response.streaming else response.content
        elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url}: HTTP {response.status_code}")
    return elapsed, len(ctx.captured_queries), len(body)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--traders", type=int, default=50)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--snapshots", type=int, default=720, help="equity points per trader (one a minute)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="quantweb-bench-pages-") as var_dir:
        _setup(var_dir)
        from django.test import Client
        from django.test.utils import setup_test_environment
        from django.urls import reverse

        from tests.factories import seed_platform, staff_user

        setup_test_environment()            # the test client needs it; DEBUG stays off
        started = time.perf_counter()
        boss = staff_user(username="bench")
        traders = seed_platform(boss, traders=args.traders, events=args.events,
                                snapshots_per_trader=args.snapshots)
        seeded = time.perf_counter() - started
        client = Client()
        client.force_login(boss)
        pages: dict[str, dict[str, float | int]] = {}
        for page in PAGES:
            url = reverse(page, args=[traders[len(traders) // 2].pk]) if page == "trader-detail" else reverse(page)
            first, queries, size = _render(client, url)
            times = [_render(client, url)[0] for _ in range(args.runs)]
            pages[page] = {
                "first_ms": round(first, 1),
                "p50_ms": round(statistics.median(times), 1),
                "p95_ms": round(_percentile(times, 0.95), 1),
                "max_ms": round(max(times), 1),
                "queries": queries,
                "html_kb": round(size / 1024, 1),
            }
        result = {
            "bench": "pages",
            "traders": args.traders,
            "events": args.events,
            "equity_points_per_trader": args.snapshots,
            "runs": args.runs,
            "seed_seconds": round(seeded, 1),
            "target_first_render_ms": 300,
            "pages": pages,
            "slowest_first_ms": max(p["first_ms"] for p in pages.values()),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
