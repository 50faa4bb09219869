"""The dashboard's compact market-data quality table [EX-5].

    {% load quality_tags %}{% data_quality_table %}            (every source, 12 rows)
    {% data_quality_table exchange="upbit" limit=30 %}

Markets with rejected or repaired rows come first (most first); a summary line per source
counts every market, including those not listed. One query.
"""

from __future__ import annotations

from django import template

register = template.Library()

STALE_AFTER_SECONDS = 5 * 60


@register.inclusion_tag("execution/_data_quality.html")
def data_quality_table(exchange: str | None = None, limit: int = 12) -> dict:
    from execution import quality

    rows = quality.rows(exchange or None)
    sources: dict[str, dict[str, int]] = {}
    for r in rows:
        s = sources.setdefault(r.exchange, {"markets": 0, "rejected": 0, "repaired": 0, "flagged": 0,
                                            "with_problems": 0, "quiet": 0})
        s["markets"] += 1
        s["rejected"] += r.rejected
        s["repaired"] += r.repaired
        s["flagged"] += r.flagged
        s["with_problems"] += bool(r.rejected or r.repaired)
        s["quiet"] += r.age_seconds is not None and r.age_seconds > STALE_AFTER_SECONDS
    limit = max(1, int(limit))
    return {"rows": rows[:limit], "hidden": max(0, len(rows) - limit), "sources": sorted(sources.items()),
            "stale_after": STALE_AFTER_SECONDS}


@register.filter
def age(seconds: float | None) -> str:
    """``95`` -> ``1m 35s``; ``None`` -> an em dash."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@register.filter
def utc_time(ts: int | None) -> str:
    """Epoch seconds -> ``2026-01-01 09:30`` (UTC)."""
    if ts is None:
        return "—"
    from datetime import UTC, datetime

    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%d %H:%M")
