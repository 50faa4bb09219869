"""django-q2 task entry points of the market data service: thin, take a source name.

``collect_exchange(source)`` runs one collection of ``sim``, ``upbit`` or ``ccxt:<id>``
(``execution.collectors.collect``). The dispatcher (``traders.tasks``) enqueues it once a minute
for every source a running trader reads (``execution.collectors.running_sources``). A venue
rate limit or ban is reported to the runbook (the exchange ticks less often) and returned, not
raised, so django-q does not log it as a crash; any other failure raises and is recorded by
django-q as a failed task.
"""

from __future__ import annotations

import logging
import time

logger = logging.getLogger(__name__)


def collect_exchange(exchange_name: str, now: float | None = None) -> str:
    from execution.adapters.base import BannedError, RateLimitedError
    from execution.collectors import collect

    try:
        report = collect(exchange_name, time.time() if now is None else now)
    except (RateLimitedError, BannedError) as exc:
        logger.warning("collector %s stopped by the venue: %s", exchange_name, exc)
        _report_rate_limited(exchange_name, exc)
        return f"{exchange_name}: stopped by the venue ({type(exc).__name__}); what was read is stored"
    return report.summary()


def _report_rate_limited(exchange_name: str, exc: Exception) -> None:
    from traders import runbook

    runbook.report_rate_limited(exchange_name, exc)
