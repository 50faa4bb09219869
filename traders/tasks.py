"""django-q2 task entry points: thin, take ids, call services (STYLE.md).

``dispatch`` runs every minute on the trading cluster from the schedule ``bootstrap`` creates:
it applies pending intents, advances the market data, then enqueues one short tick task per
running trader whose exchange may tick now (rate-limit back-off, ``traders.runbook``). A tick
is never a loop; a trader's row lock makes a duplicate delivery a no-op, and a tick that waited
in the queue for longer than a bar is skipped (the next dispatch has already queued a newer one).

Slow work (backtests, tuning, the daily self-test) goes to the slow cluster:
``async_task(..., cluster=settings.QUANTWEB_SLOW_QUEUE)`` (``enqueue_slow``), so it never holds a
worker the ticks need.

Every entry point runs inside ``runbook.database_guard``: a database outage makes the task
return (after alerting without the database) instead of raising into a failure storm [AL-3].
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django_q.tasks import async_task

from traders import runbook

logger = logging.getLogger(__name__)

DB_UNREACHABLE = "db-unreachable"


def enqueue_slow(func: str, *args, **kwargs) -> str:
    """Queue ``func`` on the slow cluster (backtests, tuning, self-test); returns the task id.

    ``q_options`` and the other django-q2 options are passed through; ``cluster`` is forced."""
    q_options = dict(kwargs.pop("q_options", {}) or {})
    q_options["cluster"] = settings.QUANTWEB_SLOW_QUEUE
    kwargs.pop("cluster", None)
    return async_task(func, *args, q_options=q_options, **kwargs)


def process_intents(venue: bool = True) -> int:
    """Apply due intents (``traders.services.process_intents``); ``venue=False`` applies their
    state only and leaves venue calls to a task of their own (the dispatcher never waits on a
    venue)."""
    from traders.services import process_intents as apply

    return apply(venue=venue)


def collect_market_data(now: float | None = None) -> int:
    """One collector per market-data source, not per trader [EX-6]: the embedded sim inline
    (it is fast and every trader may read it), every real venue a running trader reads as its
    own task (``execution.tasks.collect_exchange``: paging, rate limits, validation)."""
    from execution.collectors import collect, running_sources
    from execution.marketdata import SIM as SIM_SOURCE

    now = now if now is not None else time.time()
    bars = collect(SIM_SOURCE, now).bars
    for source in running_sources():
        if source != SIM_SOURCE:
            async_task("execution.tasks.collect_exchange", source, now, group="collect",
                       task_name=f"collect-{source}-{int(now) // 60}", q_options={"timeout": 50})
    return bars


def dispatch(now: float | None = None) -> dict:
    """One dispatcher cycle. During a database outage it waits for the database with back-off
    (``QUANTWEB_DB_RETRY_SECONDS``, well inside the task timeout) and runs the cycle if it
    comes back; otherwise it returns ``{"db": "unreachable"}`` and the next schedule tries again."""
    try:
        with runbook.database_guard("dispatcher"):
            return _dispatch(now)
    except runbook.DatabaseUnavailable as exc:
        if not runbook.wait_for_database("dispatcher"):
            return {"db": "unreachable", "error": str(exc)}
    try:
        with runbook.database_guard("dispatcher"):
            return _dispatch(now)
    except runbook.DatabaseUnavailable as exc:
        return {"db": "unreachable", "error": str(exc)}


def _dispatch(now: float | None) -> dict:
    from datetime import UTC, datetime

    from execution.collectors import market_source
    from execution.marketdata import SIM, latest_bar
    from traders import alerts
    from traders.models import Trader

    now = now if now is not None else time.time()
    failed: dict[str, str] = {}
    _step("alert channel", alerts.remember_channel, None, failed)  # what send_direct uses if the database fails later
    # The control plane never holds up the data and the ticks, whatever an intent does (issue 21):
    # the intents' state here (the kill switches first), their venue calls in a task of their own.
    intents = _step("intents", lambda: process_intents(venue=False), 0, failed)
    try:
        bars = collect_market_data(now)
    except runbook.rate_limit_errors() as exc:   # a collector hit the venue's limit [AL-3]
        runbook.report_rate_limited(getattr(exc, "exchange", None) or SIM, exc)
        bars = 0
    except Exception as exc:
        bars = _step_failed("market data", exc, failed)
    running = []   # (trader id, market-data source): ccxt traders read ccxt:<id> [EX-6]
    for trader_id, exchange, ccxt_id in Trader.objects.running().values_list("id", "exchange", "credential__ccxt_id"):
        try:
            running.append((trader_id, market_source(exchange, ccxt_id or "")))
        except ValueError as exc:
            logger.warning("trader %s is not ticked: %s", trader_id, exc)
    plan = runbook.tick_plan((exchange for _, exchange in running), now=datetime.fromtimestamp(now, UTC))
    queued, held_back = 0, {}
    bars_by_exchange: dict[str, int | None] = {}
    for trader_id, exchange in running:
        decision = plan[exchange]
        if not decision.tick:
            held_back[exchange] = decision.reason
            continue
        if exchange not in bars_by_exchange:
            bars_by_exchange[exchange] = latest_bar(exchange)
        bar_ts = bars_by_exchange[exchange]
        if bar_ts is None:
            continue
        async_task("traders.tasks.tick_trader", trader_id, bar_ts, exchange=exchange, enqueued_at=time.time(),
                   task_name=f"tick-{trader_id}-{bar_ts}", group="ticks", q_options={"timeout": 50})
        queued += 1
    _step("intent venue work", _enqueue_venue_work, None, failed)
    _step("alert drain", lambda: async_task("traders.alerts.drain", q_options={
        "task_name": "alerts-drain", "group": "alerts", "save": False, "timeout": 45}), None, failed)
    summary = {"intents": intents, "bars": bars, "ticks_queued": queued}
    if held_back:
        summary["held_back"] = held_back
    if failed:
        summary["failed"] = failed
    return summary


def _enqueue_venue_work() -> None:
    from traders.services import venue_work_due

    if venue_work_due():
        async_task("traders.tasks.process_intents", task_name="process-intents", q_options={"timeout": 50})


def _step(name: str, func, default, failed: dict[str, str]):
    """Run one dispatcher step; a failure is logged, alerted and noted in the summary, and the
    cycle goes on. A database outage is left to ``runbook.database_guard`` (the next step would
    fail the same way)."""
    try:
        return func()
    except Exception as exc:
        return _step_failed(name, exc, failed, default)


def _step_failed(name: str, exc: Exception, failed: dict[str, str], default=0):
    from django.db import DatabaseError

    if isinstance(exc, DatabaseError) and runbook.probe_database() is not None:
        raise exc                        # an outage: the guard reports it and waits [AL-3]
    from quantweb.logging import redact

    text = f"{type(exc).__name__}: {redact(str(exc))}"[:200]
    failed[name] = text
    logger.error("dispatcher: %s failed (%s); the cycle goes on", name, text, exc_info=exc)
    try:
        from traders.models import EventLevel
        from traders.services import log_event

        log_event(None, "DISPATCH_STEP_FAILED", f"dispatcher: {name} failed ({text}); the cycle went on",
                  level=EventLevel.CRITICAL if name == "intents" else EventLevel.WARN, data={"step": name})
    except Exception:
        logger.warning("could not record the failed dispatcher step", exc_info=True)
    return default


def tick_trader(trader_id: int, bar_ts: int, exchange: str | None = None, enqueued_at: float | None = None) -> str:
    """One trader's tick. Skips a tick that waited longer than a bar; reports a venue rate limit
    (widening the exchange's tick interval) and a database outage instead of raising."""
    from traders.trading import run_tick

    if enqueued_at is not None:
        waited = time.time() - enqueued_at
        if waited > runbook.cadence_seconds():
            logger.warning("tick of trader %s on bar %s waited %.0f s in the queue; skipped", trader_id, bar_ts, waited)
            return f"stale: waited {waited:.0f} s in the queue, skipped (the next bar is queued)"
    try:
        with runbook.database_guard(f"tick of trader {trader_id}"):
            report = run_tick(trader_id, bar_ts)
    except runbook.DatabaseUnavailable as exc:
        return f"{DB_UNREACHABLE}: no order placed ({exc})"
    except runbook.rate_limit_errors() as exc:
        if exchange is None:
            from traders.models import Trader

            exchange = Trader.objects.filter(pk=trader_id).values_list("exchange", flat=True).first() or "unknown"
        runbook.report_rate_limited(exchange, exc)
        return f"rate-limited: {type(exc).__name__}; {exchange} ticks less often"
    return f"{report.outcome}: {report.entries} entries, {report.exits} exits, {report.fills} fills"


def selftest(trigger: str = "schedule") -> str:
    """The daily self-test (slow cluster, schedule ``quantweb-selftest`` at 00:00 UTC)."""
    try:
        with runbook.database_guard("self-test"):
            run = runbook.run_selftest(trigger=trigger)
    except runbook.DatabaseUnavailable as exc:
        return f"{DB_UNREACHABLE}: self-test not run ({exc})"
    return f"{run.status}: {run.summary}"
