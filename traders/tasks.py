"""django-q2 task entry points: thin, take ids, call services (STYLE.md).

``dispatch`` runs every minute from the schedule ``bootstrap`` creates: it applies pending
intents, advances the market data, then enqueues one short tick task per running trader. A
tick is never a loop; a trader's row lock makes a duplicate delivery a no-op.
"""

from __future__ import annotations

import logging
import time

from django_q.tasks import async_task

logger = logging.getLogger(__name__)


def process_intents() -> int:
    from traders.services import process_intents as apply

    return apply()


def collect_market_data(now: float | None = None) -> int:
    from execution.marketdata import advance_sim

    return advance_sim(now if now is not None else time.time())


def dispatch(now: float | None = None) -> dict:
    from execution.marketdata import latest_bar
    from traders.models import Trader

    now = now if now is not None else time.time()
    intents = process_intents()
    bars = collect_market_data(now)
    queued = 0
    for trader_id, exchange in Trader.objects.running().values_list("id", "exchange"):
        bar_ts = latest_bar(exchange)
        if bar_ts is None:
            continue
        async_task("traders.tasks.tick_trader", trader_id, bar_ts, task_name=f"tick-{trader_id}-{bar_ts}",
                   group="ticks", q_options={"timeout": 50})
        queued += 1
    async_task("traders.alerts.drain", q_options={"task_name": "alerts-drain", "group": "alerts", "save": False, "timeout": 45})
    return {"intents": intents, "bars": bars, "ticks_queued": queued}


def tick_trader(trader_id: int, bar_ts: int) -> str:
    from traders.trading import run_tick

    report = run_tick(trader_id, bar_ts)
    return f"{report.outcome}: {report.entries} entries, {report.exits} exits, {report.fills} fills"
