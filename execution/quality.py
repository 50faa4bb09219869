"""Recording market-data quality [EX-5]: what every collector rejected, repaired or flagged.

Collectors (``execution.marketdata`` for the sim, ``execution.collectors`` for Upbit, ccxt and
replay files) validate everything with ``execution.engine.validation`` and hand the result per
market to ``record``, which adds it to that market's ``DataQuality`` row in one transaction
(rows are locked, so concurrent collectors never lose a count). ``rows`` gives the table the
dashboard, the API and ``/metrics`` show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from execution.engine.validation import (
    QUALITY_ACTIONS,
    QUALITY_KINDS,
    MarketQuality,
    QualityCounts,
    SnapshotCheck,
    add_counts,
    empty_counts,
    quality_counts,
)
from execution.models import DataQuality


@dataclass
class MarketResult:
    """One market's validation outcome in one collection pass."""

    counts: QualityCounts = field(default_factory=empty_counts)
    checked: int = 0
    last_good_ts: int | None = None
    last_snapshot_ts: int | None = None
    problems: list[str] = field(default_factory=list)
    fetched_to: int | None = None

    def add_candles(self, mq: MarketQuality, newest_ts: int | None, rows_checked: int | None = None) -> None:
        """Add a candle validation (``clean_ohlcv`` / ``validate_candles``); ``newest_ts`` is the
        newest bar that passed. ``rows_checked`` defaults to the rows that went in."""
        counts = quality_counts(mq)
        self.counts = add_counts(self.counts, counts)
        self.checked += mq.rows_in if rows_checked is None else rows_checked
        if newest_ts is not None:
            self.last_good_ts = max(self.last_good_ts or newest_ts, newest_ts)
        described = [f"{n} {kind} {action}" for kind, actions in counts.items() for action, n in actions.items()
                     if n and action != "flagged"]
        if described:
            self.problems.append("candles: " + ", ".join(described))

    def add_snapshot(self, check: SnapshotCheck, what: str) -> None:
        self.counts = add_counts(self.counts, check.counts)
        self.checked += 1
        if check.value is not None:
            ts = int(check.value.ts)
            self.last_snapshot_ts = max(self.last_snapshot_ts or ts, ts)
        if check.problems:
            self.problems.append(f"{what}: " + "; ".join(check.problems))

    def add(self, kind: str, action: str, n: int = 1, problem: str = "") -> None:
        """Count problems found outside the validators (e.g. rows the venue sent unreadable)."""
        if kind not in QUALITY_KINDS or action not in QUALITY_ACTIONS:
            raise KeyError((kind, action))
        if n:
            self.counts = add_counts(self.counts, {kind: {action: n}})
            self.checked += n
        if problem:
            self.problems.append(problem)

    def note(self, problem: str) -> None:
        """A problem that is not a row count (a failed request for this market)."""
        self.problems.append(problem)


def _totals(counts: QualityCounts) -> dict[str, int]:
    return {action: sum(int(actions.get(action, 0)) for actions in counts.values()) for action in QUALITY_ACTIONS}


def record(exchange: str, results: dict[str, MarketResult], *, replace: bool = False) -> int:
    """Add (or with ``replace``, set) each market's counts to its DataQuality row; returns the
    number of rows written. Runs in its own transaction (or the caller's)."""
    if not results:
        return 0
    now = timezone.now()
    with transaction.atomic():
        existing = {row.symbol: row for row in
                    DataQuality.objects.select_for_update().filter(exchange=exchange, symbol__in=list(results))}
        new, changed = [], []
        for symbol, res in results.items():
            row = existing.get(symbol)
            if row is None:
                row = DataQuality(exchange=exchange, symbol=symbol, counts=empty_counts())
                new.append(row)
            else:
                changed.append(row)
            base = empty_counts() if replace else row.counts or empty_counts()
            row.counts = add_counts(base, res.counts)
            totals = _totals(row.counts)
            row.rows_rejected, row.rows_repaired, row.rows_flagged = (totals["rejected"], totals["repaired"],
                                                                      totals["flagged"])
            row.rows_checked = (0 if replace else row.rows_checked) + res.checked
            if res.last_good_ts is not None and (replace or row.last_good_ts is None
                                                 or res.last_good_ts > row.last_good_ts):
                row.last_good_ts = res.last_good_ts
            if res.last_snapshot_ts is not None and (row.last_snapshot_ts is None
                                                     or res.last_snapshot_ts > row.last_snapshot_ts):
                row.last_snapshot_ts = res.last_snapshot_ts
            if res.fetched_to is not None:
                row.fetched_to = res.fetched_to
            if res.problems:
                row.last_problem = "; ".join(res.problems)[:300]
                row.last_problem_at = now
            row.updated_at = now
        DataQuality.objects.bulk_create(new)
        DataQuality.objects.bulk_update(changed, ["counts", "rows_checked", "rows_rejected", "rows_repaired",
                                                  "rows_flagged", "last_good_ts", "last_snapshot_ts", "fetched_to",
                                                  "last_problem", "last_problem_at", "updated_at"])
    return len(results)


def cursors(exchange: str, symbols: list[str]) -> dict[str, int | None]:
    """The collector's read position per market (``DataQuality.fetched_to``)."""
    return dict(DataQuality.objects.filter(exchange=exchange, symbol__in=symbols).values_list("symbol", "fetched_to"))


@dataclass(frozen=True)
class QualityRow:
    """One market's line of the data-quality table (dashboard, API)."""

    exchange: str
    symbol: str
    rows_checked: int
    rejected: int
    repaired: int
    flagged: int
    by_kind: dict[str, dict[str, int]]
    last_good_ts: int | None
    age_seconds: float | None
    last_problem: str
    last_problem_at: object

    @property
    def gaps(self) -> int:
        return self.by_kind.get("gap", {}).get("flagged", 0)

    @property
    def outliers(self) -> int:
        kind = self.by_kind.get("outlier", {})
        return kind.get("rejected", 0) + kind.get("flagged", 0)

    @property
    def stale(self) -> int:
        return self.by_kind.get("stale", {}).get("rejected", 0)


def rows(exchange: str | None = None, now: float | None = None, limit: int | None = None) -> list[QualityRow]:
    """The table: markets with rejected or repaired rows first (most first), then by exchange and
    market. ``age_seconds``: now minus the close of the newest good 1m bar."""
    now = time.time() if now is None else now
    qs = DataQuality.objects.all()
    if exchange:
        qs = qs.filter(exchange=exchange)
    out = []
    for row in qs:
        counts = row.counts or empty_counts()
        age = None if row.last_good_ts is None else max(0.0, now - (row.last_good_ts + 60))
        out.append(QualityRow(row.exchange, row.symbol, row.rows_checked, row.rows_rejected, row.rows_repaired,
                              row.rows_flagged, counts, row.last_good_ts, age, row.last_problem,
                              row.last_problem_at))
    out.sort(key=lambda r: (-(r.rejected + r.repaired), r.exchange, r.symbol))
    return out[:limit] if limit else out
