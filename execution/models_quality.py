"""Data-quality records of the market data collectors [EX-5] (imported by execution.models).

One ``DataQuality`` row per (market-data source, market): what the collectors (sim, replay,
upbit, ccxt; ``execution.collectors``) rejected, repaired or flagged, grouped by kind
(``execution.engine.validation.QUALITY_KINDS``), and the newest bar that passed validation.
Counts accumulate over the life of the row for the live collectors; a replay load replaces
them (each backtest re-reads the same files). Shown on the dashboard (``quality_tags``), in
``/metrics`` and at ``/api/data-quality/``.
"""

from __future__ import annotations

from django.db import models

__all__ = ["DataQuality"]


def _empty_counts() -> dict:
    from execution.engine.validation import empty_counts

    return empty_counts()


class DataQuality(models.Model):
    exchange = models.CharField(max_length=32, help_text="market-data source: sim, replay, upbit or ccxt:<id>")
    symbol = models.CharField(max_length=32)
    counts = models.JSONField(default=_empty_counts,
                              help_text='{kind: {"rejected": n, "repaired": n, "flagged": n}}')
    rows_checked = models.BigIntegerField(default=0, help_text="candles, books and tickers validated")
    rows_rejected = models.BigIntegerField(default=0)
    rows_repaired = models.BigIntegerField(default=0)
    rows_flagged = models.BigIntegerField(default=0, help_text="kept but counted: missing bars, large real moves")
    last_good_ts = models.BigIntegerField(null=True, blank=True,
                                          help_text="bar-open epoch seconds of the newest 1m candle that passed")
    last_snapshot_ts = models.BigIntegerField(null=True, blank=True,
                                              help_text="epoch seconds of the newest book / ticker that passed")
    last_problem = models.CharField(max_length=300, blank=True)
    last_problem_at = models.DateTimeField(null=True, blank=True)
    fetched_to = models.BigIntegerField(null=True, blank=True,
                                        help_text="collector bookkeeping: bar-open time up to which the venue has been "
                                                  "read (a market without trades has no candle to show it)")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["exchange", "symbol"]
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="data_quality_unique_market")]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} rejected {self.rows_rejected} repaired {self.rows_repaired}"

    def count(self, kind: str, action: str) -> int:
        return int((self.counts or {}).get(kind, {}).get(action, 0))
