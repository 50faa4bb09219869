"""Paper traders at scale [issue 6 item 10]: N PAPER traders ticking on the sim exchange with an
accelerated clock; prints JSON.

    .venv/bin/python bench/traders.py [--sizes 10,50,200] [--bars 5] [--markets 30]
                                      [--warmup-bars 1600] [--profile CRAZY] [--entry-threshold 20]

Each size runs in a child process of its own with a throwaway SQLite database in a temporary
directory (never the development database; ``DATABASE_URL`` / ``REDIS_URL`` are removed from
the child's environment): migrate, create N PAPER traders with the real service calls
(``create_trader``, a START intent, ``process_intents``), then, bar after bar, advance the sim
exchange by one minute (the collector, timed apart) and run the real ``traders.trading.run_tick``
for every trader on that bar, one after the other, as one worker process would. The clock is the
simulator's: a bar takes as long as the ticks take, not a minute. The traders' profile gets a low
entry threshold so that they trade (orders, fills and positions are part of what is measured).

One extra trader ticks once before the measured ones and is left out (the process's first tick
pays for imports and caches); every tick of the N traders is measured, including each one's
first tick, when most entries happen. Per size, the JSON reports:

* ``ticks_per_second``: measured ticks / wall seconds spent in ``run_tick``;
* ``tick_ms``: p50 / p99 / max wall time of one ``run_tick`` (load -> scan -> guard -> positions
  -> checklist -> sizing -> orders and fills recorded -> commit);
* ``decision_to_order_ms``: p50 / p99 from the start of a tick to the moment each of its order
  rows was recorded (``Order.created_at``), i.e. how long a decision takes to become a stored order;
* ``cpu_ms_per_tick``: process CPU time (user + system) per measured tick;
* ``peak_rss_mb``: the child process's peak resident memory (``ru_maxrss``), which includes the
  sim exchange's warm-up and the shared market view;
* ``collector_ms_per_bar``: the sim collector per bar (not part of the tick figures);
* counts of orders, fills, entries and exits, so a run that traded nothing is visible.

In production the market view (candles, books) is loaded once per bar per worker process and
shared by every tick of that process; here all ticks share one process, as with one worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T0 = 1_790_000_040.0


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 2)


def child(args: argparse.Namespace) -> dict:
    """One size, inside a fresh process whose environment points at a throwaway database."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from decimal import Decimal

    from django.core.management import call_command

    call_command("migrate", "--noinput", verbosity=0)

    from django.contrib.auth import get_user_model

    from execution.marketdata import latest_bar
    from execution.models import Fill, Order
    from strategies.models import StrategyProfile
    from strategies.services import effective_profile, update_profile
    from traders import tasks
    from traders.models import IntentKind
    from traders.services import create_trader, process_intents, request_intent
    from traders.trading import run_tick

    user = get_user_model().objects.create_superuser("bench", "", "bench-password-123")
    profile = StrategyProfile.objects.get(key=args.profile)
    params = effective_profile(profile).to_dict()
    params.pop("name")
    params.update(entry_threshold=args.entry_threshold, exit_threshold=min(args.entry_threshold / 2, 15.0))
    update_profile(profile=profile, params=params, user=user, comment="bench: trade often")
    profile.refresh_from_db()

    started = time.perf_counter()
    now = T0
    tasks.collect_market_data(now)                # the sim exchange's warm-up history
    warmup_seconds = time.perf_counter() - started
    traders = [create_trader(user=user, name=f"bench-{i:04d}", profile=profile, seed_money=Decimal("10000000"))
               for i in range(args.size)]
    for trader in traders:
        request_intent(user=user, kind=IntentKind.START, trader=trader)
    while process_intents():
        pass
    ids = [t.pk for t in traders]
    warm = create_trader(user=user, name="bench-warm", profile=profile, seed_money=Decimal("10000000"))
    request_intent(user=user, kind=IntentKind.START, trader=warm)
    process_intents()

    tick_ms: list[float] = []
    order_ms: list[float] = []
    collector_ms: list[float] = []
    outcomes: dict[str, int] = {}
    entries = exits = 0
    tick_wall = 0.0
    cpu = 0.0
    for bar_no in range(args.bars):
        now += 60
        c0 = time.perf_counter()
        tasks.collect_market_data(now)
        collector_ms.append((time.perf_counter() - c0) * 1000)
        bar = latest_bar("sim")
        if bar_no == 0:
            run_tick(warm.pk, bar)
        for trader_id in ids:
            first_order = Order.objects.order_by("-id").values_list("id", flat=True).first() or 0
            wall_start = time.time()
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            report = run_tick(trader_id, bar)
            elapsed = time.perf_counter() - t0
            cpu += time.process_time() - cpu0
            tick_wall += elapsed
            tick_ms.append(elapsed * 1000)
            outcomes[report.outcome] = outcomes.get(report.outcome, 0) + 1
            entries += report.entries
            exits += report.exits
            for created in Order.objects.filter(id__gt=first_order, trader_id=trader_id).values_list("created_at",
                                                                                                      flat=True):
                order_ms.append((created.timestamp() - wall_start) * 1000)
    ticks = len(tick_ms)
    return {
        "traders": args.size,
        "bars": args.bars,
        "ticks": ticks,
        "outcomes": outcomes,
        "ticks_per_second": round(ticks / tick_wall, 2) if tick_wall else None,
        "tick_ms": {"p50": percentile(tick_ms, 0.50), "p99": percentile(tick_ms, 0.99),
                    "max": round(max(tick_ms), 2) if tick_ms else None,
                    "mean": round(statistics.fmean(tick_ms), 2) if tick_ms else None},
        "decision_to_order_ms": {"orders": len(order_ms), "p50": percentile(order_ms, 0.50),
                                 "p99": percentile(order_ms, 0.99)},
        "cpu_ms_per_tick": round(cpu / ticks * 1000, 2) if ticks else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "collector_ms_per_bar": round(statistics.fmean(collector_ms), 1),
        "sim_warmup_seconds": round(warmup_seconds, 2),
        "entries": entries,
        "exits": exits,
        "orders": Order.objects.exclude(trader=warm).count(),
        "fills": Fill.objects.exclude(trader=warm).count(),
        "seconds_per_bar_all_traders": round(tick_wall / args.bars, 3),
    }


def run_size(size: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="quantweb-bench-") as var_dir:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "quantweb.settings",
            "QUANTWEB_VAR_DIR": var_dir,
            "QUANTWEB_SIM_WARMUP_BARS": str(args.warmup_bars),
            "QUANTWEB_SIM_MARKETS": str(args.markets),
            "QUANTWEB_SIM_SEED": str(args.seed),
            "LOG_LEVEL": "ERROR",
            "DEBUG": "false",
        })
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(size), "--bars", str(args.bars),
               "--profile", args.profile,
               "--entry-threshold", str(args.entry_threshold)]
        started = time.perf_counter()
        result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"size {size} failed:\n{result.stderr[-4000:]}")
        figures = json.loads(result.stdout.strip().splitlines()[-1])
        figures["child_seconds"] = round(time.perf_counter() - started, 1)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,50,200", help="comma-separated trader counts")
    parser.add_argument("--bars", type=int, default=5, help="bars per size; every trader ticks once per bar")
    parser.add_argument("--markets", type=int, default=30, help="sim markets (QUANTWEB_SIM_MARKETS)")
    parser.add_argument("--warmup-bars", type=int, default=1600, help="sim history generated first (>= 1485)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", default="CRAZY")
    parser.add_argument("--entry-threshold", type=float, default=20.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bars < 1:
        parser.error("--bars must be >= 1")
    if args.child is not None:
        args.size = args.child
        print(json.dumps(child(args)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        parser.error("--sizes: positive integers, e.g. 10,50,200")
    results = [run_size(size, args) for size in sizes]
    print(json.dumps({
        "benchmark": "traders",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "database": "sqlite (throwaway, one process)",
        "markets": args.markets,
        "bars": args.bars,
        "profile": args.profile,
        "entry_threshold": args.entry_threshold,
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
