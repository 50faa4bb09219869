"""The rolling window of venue calls behind the runtime guard's API error rate [RK-4]. Pure.

A window is a list of ``[minute_ts, calls, errors]`` rows (JSON-safe, one row per minute that
saw calls, oldest first): ``minute_ts`` is the epoch second the minute starts at. The Django
glue (``execution.callstats``) keeps it in ``TraderSafetyState.state["api_calls"]``; the guard
reads ``totals`` as ``(calls, errors)`` and judges the rate once ``API_MIN_CALLS`` calls are in
the window (``risk.engine.guard``).

Per-minute rows keep the stored list small (at most ``WINDOW_SECONDS / BUCKET_SECONDS + 1``
rows) and let old calls fall out of the window without remembering each call. A minute counts
while any of it lies within ``WINDOW_SECONDS`` of now, so the window reaches back between 15 and
16 minutes. The clock is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: One row per minute.
BUCKET_SECONDS = 60
#: How far back the error rate looks: long enough to gather ``API_MIN_CALLS`` calls from a trader
#: ticking once a minute, short enough that a recovered venue releases the guard within minutes.
WINDOW_SECONDS = 15 * 60

Bucket = tuple[int, int, int]          # (minute_ts, calls, errors)


def bucket_of(ts: float) -> int:
    """The start of the minute ``ts`` falls in."""
    return int(ts) // BUCKET_SECONDS * BUCKET_SECONDS


def _in_window(minute_ts: int, now: float) -> bool:
    # A row is in the window while any second of its minute is; rows from a clock slightly
    # ahead (another worker) are kept and count until they age out.
    return minute_ts + BUCKET_SECONDS > now - WINDOW_SECONDS


def parse(raw: Any) -> list[Bucket]:
    """The rows of a stored window. Malformed rows (hand edits, an older format) are dropped
    rather than failing the tick that reads them."""
    rows: list[Bucket] = []
    if not isinstance(raw, list):
        return rows
    for row in raw:
        if not isinstance(row, list | tuple) or len(row) != 3:
            continue
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in row):
            continue
        minute_ts, calls, errors = row
        if calls < 0 or errors < 0 or errors > calls:
            continue
        rows.append((minute_ts, calls, errors))
    return rows


def merge(stored: Any, new: Iterable[Bucket], now: float) -> list[list[int]]:
    """``stored`` (as kept in the state JSON) plus ``new`` rows, summed per minute, pruned to the
    window at ``now``; the JSON-safe list to store."""
    sums: dict[int, list[int]] = {}
    for minute_ts, calls, errors in [*parse(stored), *new]:
        if calls <= 0 and errors <= 0:
            continue
        if errors > calls:
            raise ValueError(f"more errors ({errors}) than calls ({calls}) in minute {minute_ts}")
        row = sums.setdefault(bucket_of(minute_ts), [0, 0])
        row[0] += calls
        row[1] += errors
    return [[m, c, e] for m, (c, e) in sorted(sums.items()) if _in_window(m, now)]


def totals(stored: Any, now: float, extra: Iterable[Bucket] = ()) -> tuple[int, int]:
    """``(calls, errors)`` in the window at ``now`` over ``stored`` and ``extra`` rows (calls
    counted but not stored yet)."""
    calls = errors = 0
    for minute_ts, c, e in [*parse(stored), *extra]:
        if _in_window(minute_ts, now):
            calls += c
            errors += e
    return calls, errors
