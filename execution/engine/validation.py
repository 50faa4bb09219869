"""Candle validation [EX-5]: every problem is repaired or dropped, and counted.

Invalid data never reaches a strategy silently. ``clean_ohlcv`` takes one market's raw rows (as
read from a file or an exchange) and returns the cleaned rows plus a ``MarketQuality`` with a
count per problem kind; ``validate_candles`` does the same for aligned ``Candles``. What
happens to each kind:

=====================  ==========  ============================================================
kind                   action      rule
=====================  ==========  ============================================================
nan_price              dropped     any of open/high/low/close is NaN or infinite
non_positive_price     dropped     any price <= 0
negative_volume        dropped     volume < 0
out_of_order           repaired    row earlier than a row before it (rows are sorted)
duplicate_ts           dropped     same timestamp again; the LAST row wins (exchanges revise
                                   the forming bar)
off_grid               dropped     timestamp not on the bar grid (``grid_offset`` is the most
                                   common ``ts % timeframe``; e.g. Upbit days at 01:00 UTC)
high_below_body        repaired    high < max(open, close): high raised to max(open, close)
low_above_body         repaired    low > min(open, close): low lowered to min(open, close)
reverting_spike        dropped     a close that jumps > ``spike_z`` robust sigmas and comes
                                   straight back on the next bar (a bad print)
return_outlier         flagged     |robust z| of the close-to-close log return > ``outlier_z``
                                   (kept: crypto really moves like that sometimes)
volume_missing         flagged     volume NaN (not available in the source); kept as NaN
zero_volume            flagged     volume == 0
gaps / missing_bars    flagged     holes in the grid and the number of bars they miss; bars are
                                   never invented (exchanges emit no candle without trades)
=====================  ==========  ============================================================

Calendar timeframes (``1M``) skip the grid and gap checks. The robust z-score uses the median
and MAD of log returns (falling back to the mean absolute deviation when more than half of the
returns are zero, as on illiquid 1m markets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from execution.engine.types import CALENDAR_TIMEFRAMES, TIMEFRAME_SECONDS, Candles, MarketDataError

DROPPED = ("nan_price", "non_positive_price", "negative_volume", "duplicate_ts", "off_grid", "reverting_spike")
REPAIRED = ("out_of_order", "high_below_body", "low_above_body")
FLAGGED = ("return_outlier", "volume_missing", "zero_volume", "gaps", "missing_bars")
PROBLEM_KINDS: tuple[str, ...] = DROPPED + REPAIRED + FLAGGED
_EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class OhlcvSeries:
    """One market's rows: ``ts`` int64 epoch seconds (bar open), the rest float64, same length."""

    symbol: str
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __len__(self) -> int:
        return len(self.ts)


@dataclass(frozen=True, slots=True)
class MarketQuality:
    """Data-quality counts for one market (see the module table for the kinds)."""

    symbol: str
    timeframe: str
    rows_in: int
    rows_out: int
    grid_offset: int
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)   # first few timestamps per kind

    def count(self, kind: str) -> int:
        if kind not in PROBLEM_KINDS:
            raise KeyError(kind)
        return self.counts.get(kind, 0)

    @property
    def dropped(self) -> int:
        return sum(self.counts.get(k, 0) for k in DROPPED)

    @property
    def repaired(self) -> int:
        return sum(self.counts.get(k, 0) for k in REPAIRED)

    def to_dict(self) -> dict[str, object]:
        return {"symbol": self.symbol, "timeframe": self.timeframe, "rows_in": self.rows_in,
                "rows_out": self.rows_out, "grid_offset": self.grid_offset,
                "counts": {k: self.counts.get(k, 0) for k in PROBLEM_KINDS},
                "examples": {k: list(v) for k, v in self.examples.items()}}


@dataclass(frozen=True, slots=True)
class DataQualityReport:
    """Per-market quality of one load or validation pass."""

    markets: tuple[MarketQuality, ...] = ()

    def market(self, symbol: str) -> MarketQuality:
        for mq in self.markets:
            if mq.symbol == symbol:
                return mq
        raise KeyError(symbol)

    def count(self, kind: str, symbol: str | None = None) -> int:
        if symbol is not None:
            return self.market(symbol).count(kind)
        return sum(mq.count(kind) for mq in self.markets)

    @property
    def clean(self) -> bool:
        """No row dropped or repaired (flags such as gaps do not count)."""
        return all(mq.dropped == 0 and mq.repaired == 0 for mq in self.markets)

    def to_dict(self) -> dict[str, object]:
        return {"markets": [mq.to_dict() for mq in self.markets],
                "totals": {k: self.count(k) for k in PROBLEM_KINDS}}


class _Counter:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}

    def add(self, kind: str, ts: np.ndarray) -> None:
        n = int(len(ts))
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + n
            ex = self.examples.setdefault(kind, [])
            ex.extend(int(t) for t in ts[: max(0, _EXAMPLES - len(ex))])

    def add_n(self, kind: str, n: int) -> None:
        if n:
            self.counts[kind] = self.counts.get(kind, 0) + int(n)


def detect_grid_offset(ts: np.ndarray, timeframe: str) -> int:
    """Most common ``ts % timeframe`` (0 for a UTC-aligned series)."""
    if timeframe in CALENDAR_TIMEFRAMES or not len(ts):
        return 0
    rem = np.asarray(ts, dtype=np.int64) % TIMEFRAME_SECONDS[timeframe]
    values, counts = np.unique(rem, return_counts=True)
    return int(values[np.argmax(counts)])


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD); falls back to the mean absolute deviation; 0 if flat."""
    if not len(x):
        return x.astype(np.float64)
    med = np.median(x)
    dev = np.abs(x - med)
    scale = 1.4826 * np.median(dev)
    if scale <= 0:
        scale = 1.2533 * float(dev.mean())
    if scale <= 0:
        return np.zeros_like(x, dtype=np.float64)
    return (x - med) / scale


def clean_ohlcv(series: OhlcvSeries, *, outlier_z: float = 15.0, spike_z: float = 25.0,
                grid_offset: int | None = None) -> tuple[OhlcvSeries, MarketQuality]:
    """Repair or drop every problem in one market's rows and count it."""
    tf = series.timeframe
    if tf not in TIMEFRAME_SECONDS:
        raise MarketDataError(f"unknown timeframe {tf!r}")
    n_in = len(series)
    arrays = [np.asarray(a) for a in (series.ts, series.open, series.high, series.low, series.close, series.volume)]
    if any(len(a) != n_in for a in arrays):
        raise MarketDataError(f"{series.symbol}: columns have different lengths")
    ts = arrays[0].astype(np.int64)
    o, h, lo, c, v = (a.astype(np.float64) for a in arrays[1:])
    ctr = _Counter()

    keep = np.ones(n_in, dtype=bool)
    prices = np.vstack([o, h, lo, c])
    bad = ~np.all(np.isfinite(prices), axis=0)
    ctr.add("nan_price", ts[bad])
    keep &= ~bad
    nonpos = keep & np.any(prices <= 0, axis=0)
    ctr.add("non_positive_price", ts[nonpos])
    keep &= ~nonpos
    negv = keep & (v < 0)
    ctr.add("negative_volume", ts[negv])
    keep &= ~negv
    ts, o, h, lo, c, v = (a[keep] for a in (ts, o, h, lo, c, v))

    if len(ts):
        running = np.maximum.accumulate(ts)
        late = np.zeros(len(ts), dtype=bool)
        late[1:] = ts[1:] < running[:-1]
        ctr.add("out_of_order", ts[late])
        order = np.argsort(ts, kind="stable")
        ts, o, h, lo, c, v = (a[order] for a in (ts, o, h, lo, c, v))
        last_of_run = np.ones(len(ts), dtype=bool)
        last_of_run[:-1] = ts[:-1] != ts[1:]
        ctr.add("duplicate_ts", ts[~last_of_run])
        ts, o, h, lo, c, v = (a[last_of_run] for a in (ts, o, h, lo, c, v))

    calendar = tf in CALENDAR_TIMEFRAMES
    offset = 0
    if not calendar and len(ts):
        offset = detect_grid_offset(ts, tf) if grid_offset is None else int(grid_offset)
        on = (ts - offset) % TIMEFRAME_SECONDS[tf] == 0
        ctr.add("off_grid", ts[~on])
        ts, o, h, lo, c, v = (a[on] for a in (ts, o, h, lo, c, v))

    body_hi = np.maximum(o, c)
    body_lo = np.minimum(o, c)
    hb = h < body_hi
    ctr.add("high_below_body", ts[hb])
    h = np.where(hb, body_hi, h)
    la = lo > body_lo
    ctr.add("low_above_body", ts[la])
    lo = np.where(la, body_lo, lo)

    if len(ts) > 3:
        r = np.diff(np.log(c))
        z = robust_z(r)
        big = np.abs(z) > spike_z
        spike = np.zeros(len(ts), dtype=bool)
        # bar i (close) jumped in on r[i-1] and out on r[i]
        cand = big[:-1] & big[1:] & (np.sign(r[:-1]) == -np.sign(r[1:]))
        cand &= np.abs(r[:-1] + r[1:]) < 0.2 * np.minimum(np.abs(r[:-1]), np.abs(r[1:]))
        spike[1:-1] = cand
        ctr.add("reverting_spike", ts[spike])
        ts, o, h, lo, c, v = (a[~spike] for a in (ts, o, h, lo, c, v))
        if spike.any():
            r = np.diff(np.log(c))
            z = robust_z(r)
        out = np.abs(z) > outlier_z
        ctr.add("return_outlier", ts[1:][out])

    ctr.add("volume_missing", ts[np.isnan(v)])
    ctr.add("zero_volume", ts[v == 0])
    if not calendar and len(ts) > 1:
        step = np.diff(ts) // TIMEFRAME_SECONDS[tf]
        holes = step > 1
        ctr.add("gaps", ts[:-1][holes])
        ctr.add_n("missing_bars", int((step[holes] - 1).sum()))

    cleaned = OhlcvSeries(series.symbol, tf, ts, o, h, lo, c, v)
    quality = MarketQuality(series.symbol, tf, n_in, len(ts), offset, ctr.counts, ctr.examples)
    return cleaned, quality


def validate_candles(candles: Candles, **kwargs: float) -> tuple[Candles, DataQualityReport]:
    """Validate aligned candles market by market; dropped bars become NaN (a hole, counted).

    Rows that are entirely NaN are missing bars, not problems. The grid is kept as given.
    """
    opens, highs, lows, closes, vols = (np.full_like(a, np.nan, dtype=np.float64) for a in
                                        (candles.open, candles.high, candles.low, candles.close, candles.volume))
    reports = []
    for i, sym in enumerate(candles.symbols):
        row = np.vstack([candles.open[i], candles.high[i], candles.low[i], candles.close[i], candles.volume[i]])
        present = ~np.all(np.isnan(row), axis=0)
        series = OhlcvSeries(sym, candles.timeframe, candles.ts[present], *row[:, present])
        cleaned, mq = clean_ohlcv(series, grid_offset=None, **kwargs)
        pos = np.searchsorted(candles.ts, cleaned.ts)
        opens[i, pos], highs[i, pos], lows[i, pos] = cleaned.open, cleaned.high, cleaned.low
        closes[i, pos], vols[i, pos] = cleaned.close, cleaned.volume
        reports.append(mq)
    out = Candles(candles.symbols, candles.timeframe, candles.ts.copy(), opens, highs, lows, closes, vols)
    return out, DataQualityReport(tuple(reports))
