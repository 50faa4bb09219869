"""``manage.py dispatch``: run the dispatcher now, synchronously ("tick now").

One cycle does what the 1-minute schedule does (``traders.tasks.dispatch``): apply pending
intents, bring the sim exchange up to the clock, then tick every running trader on the newest
bar, except that the ticks run inline in this process instead of being queued for the workers.
Each cycle prints a one-line JSON summary; the exit code is 1 if any tick raised.

Ticks are idempotent per bar (the trader row lock and ``last_tick_ts``), so running this
beside the worker cluster is safe: whoever ticks a bar first wins, the other finds it stale.

``--advance-bars N`` fast-forwards the simulated clock: each cycle moves the sim exchange N
bars past its newest bar (or to the wall clock, if that is further on). The sim then runs
ahead of the wall clock, and the scheduled dispatcher produces no new bars until real time
catches up; its ticks on an already-ticked bar are no-ops. Useful for demos and tests that
need time to pass; it only affects the embedded sim exchange.

    python manage.py dispatch                          # one cycle on the wall clock
    python manage.py dispatch --loop 0 --sleep 60      # a foreground dispatcher (Ctrl-C stops)
    python manage.py dispatch --loop 5 --advance-bars 1  # five simulated minutes, right now
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from execution.marketdata import BAR, SIM, latest_bar
from traders import runbook, tasks
from traders.models import Trader
from traders.trading import run_tick

logger = logging.getLogger(__name__)


def clock(advance_bars: int | None, wall: float | None = None) -> float:
    """The ``now`` a cycle runs at: the wall clock, or ``advance_bars`` past the sim's newest bar."""
    wall = time.time() if wall is None else wall
    if not advance_bars:
        return wall
    newest = latest_bar(SIM)
    if newest is None:           # the first cycle creates the sim at the wall clock
        return wall
    # advance_sim() fills up to the last bar *closed* at ``now``: newest + N bars closes at +1 bar.
    return max(wall, float(newest + (advance_bars + 1) * BAR))


def dispatch_inline(now: float) -> dict:
    """``traders.tasks.dispatch`` with the ticks run here instead of enqueued (the same
    rate-limit back-off applies: a held-back exchange's traders are listed as ``held-back``)."""
    intents = tasks.process_intents()
    bars = tasks.collect_market_data(now)
    ticks = []
    running = list(Trader.objects.running().order_by("id").values_list("id", "exchange"))
    plan = runbook.tick_plan((exchange for _, exchange in running), now=datetime.fromtimestamp(now, UTC))
    for trader_id, exchange in running:
        if not plan[exchange].tick:   # the exchange is under rate-limit back-off or banned [AL-3]
            ticks.append({"trader": trader_id, "outcome": "held-back", "reason": plan[exchange].reason})
            continue
        bar_ts = latest_bar(exchange)
        if bar_ts is None:
            ticks.append({"trader": trader_id, "outcome": "no-data"})
            continue
        try:
            report = run_tick(trader_id, bar_ts)
        except Exception as exc:  # one broken trader must not stop the others (as in the worker)
            logger.exception("tick of trader %s on bar %s failed", trader_id, bar_ts)
            ticks.append({"trader": trader_id, "bar_ts": bar_ts, "outcome": "error", "error": repr(exc)[:200]})
            continue
        ticks.append({"trader": trader_id, "bar_ts": bar_ts, "outcome": report.outcome, "entries": report.entries,
                      "exits": report.exits, "fills": report.fills})
    return {"now": int(now), "intents": intents, "bars": bars, "sim_bar_ts": latest_bar(SIM), "ticks": ticks}


class Command(BaseCommand):
    help = "Run the dispatcher synchronously: apply intents, advance the sim, tick running traders inline."

    def add_arguments(self, parser):
        parser.add_argument("--loop", type=int, default=1, metavar="N",
                            help="cycles to run (default 1; 0 = until interrupted)")
        parser.add_argument("--sleep", type=float, default=0.0, metavar="S",
                            help="seconds to wait between cycles (default 0)")
        parser.add_argument("--advance-bars", type=int, default=None, metavar="N",
                            help="fast-forward the sim exchange N bars per cycle instead of following the wall clock")

    def handle(self, *args, **options):
        loop, pause, advance = options["loop"], options["sleep"], options["advance_bars"]
        if loop < 0:
            raise CommandError("--loop must be >= 0")
        if pause < 0:
            raise CommandError("--sleep must be >= 0")
        if advance is not None and advance < 1:
            raise CommandError("--advance-bars must be >= 1")
        failed = False
        cycle = 0
        try:
            while loop == 0 or cycle < loop:
                if cycle and pause:
                    time.sleep(pause)
                cycle += 1
                started = time.perf_counter()
                summary = dispatch_inline(clock(advance))
                summary = {"cycle": cycle, **summary, "seconds": round(time.perf_counter() - started, 3)}
                failed = failed or any(t["outcome"] == "error" for t in summary["ticks"])
                self.stdout.write(json.dumps(summary, separators=(",", ":")))
                self.stdout.flush()
        except KeyboardInterrupt:
            self.stderr.write(f"interrupted after {cycle} cycle(s)")
        if failed:
            raise CommandError("at least one tick failed; see the log")
