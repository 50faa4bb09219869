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

from execution.engine.types import (
    CALENDAR_TIMEFRAMES,
    TIMEFRAME_SECONDS,
    Candles,
    MarketDataError,
    OrderBook,
    Ticker,
)

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
    def __init__(self, count_from: int | None = None) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[int]] = {}
        self.count_from = count_from

    def add(self, kind: str, ts: np.ndarray) -> None:
        if self.count_from is not None:
            ts = ts[ts >= self.count_from]
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
                grid_offset: int | None = None, count_from: int | None = None) -> tuple[OhlcvSeries, MarketQuality]:
    """Repair or drop every problem in one market's rows and count it.

    ``count_from``: rows before this timestamp are context (already stored and counted, e.g. the
    last hours before an incremental update): they are cleaned the same way and give the outlier
    statistics and the gap boundary their history, but only problems at or after ``count_from``
    are counted (a hole counts when the bar that ends it is counted)."""
    tf = series.timeframe
    if tf not in TIMEFRAME_SECONDS:
        raise MarketDataError(f"unknown timeframe {tf!r}")
    n_in = len(series)
    arrays = [np.asarray(a) for a in (series.ts, series.open, series.high, series.low, series.close, series.volume)]
    if any(len(a) != n_in for a in arrays):
        raise MarketDataError(f"{series.symbol}: columns have different lengths")
    ts = arrays[0].astype(np.int64)
    o, h, lo, c, v = (a.astype(np.float64) for a in arrays[1:])
    ctr = _Counter(count_from)

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
        if count_from is not None:
            holes &= ts[1:] >= count_from
        ctr.add("gaps", ts[:-1][holes] if count_from is None else ts[1:][holes])
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


# ----------------------------------------------------------------------------- operator view [EX-5]
#
# The problem kinds above are detailed; operators see them grouped by what went wrong
# (``QUALITY_KINDS``) and what was done about it (``QUALITY_ACTIONS``): ``rejected`` (dropped,
# never stored), ``repaired`` (fixed, then stored) or ``flagged`` (kept as is and counted: real
# gaps and real large moves). Order books and tickers are checked by ``check_book`` /
# ``check_ticker``; a rejected book or ticker is not stored (the previous one stays, with its
# own, older timestamp).

QUALITY_KINDS: tuple[str, ...] = ("ohlc", "duplicate", "out_of_order", "off_grid", "gap", "outlier", "stale", "book")
QUALITY_ACTIONS: tuple[str, ...] = ("rejected", "repaired", "flagged")
#: What each candle problem counts as; ``gaps`` (holes) is counted through ``missing_bars`` and
#: ``zero_volume`` / ``volume_missing`` are informational only.
PROBLEM_QUALITY: dict[str, tuple[str, str]] = {
    "nan_price": ("ohlc", "rejected"),
    "non_positive_price": ("ohlc", "rejected"),
    "negative_volume": ("ohlc", "rejected"),
    "high_below_body": ("ohlc", "repaired"),
    "low_above_body": ("ohlc", "repaired"),
    "duplicate_ts": ("duplicate", "rejected"),
    "out_of_order": ("out_of_order", "repaired"),
    "off_grid": ("off_grid", "rejected"),
    "reverting_spike": ("outlier", "rejected"),
    "return_outlier": ("outlier", "flagged"),
    "missing_bars": ("gap", "flagged"),
}

#: The (kind, action) pairs that can occur (what ``/metrics`` exports per market).
QUALITY_PAIRS: tuple[tuple[str, str], ...] = tuple(sorted(set(PROBLEM_QUALITY.values()) | {
    ("stale", "rejected"), ("book", "rejected"), ("book", "repaired")}, key=lambda p: (
    QUALITY_ACTIONS.index(p[1]), QUALITY_KINDS.index(p[0]))))

QualityCounts = dict[str, dict[str, int]]


def empty_counts() -> QualityCounts:
    """``{kind: {action: 0}}`` for every kind and action."""
    return {kind: dict.fromkeys(QUALITY_ACTIONS, 0) for kind in QUALITY_KINDS}


def add_counts(total: QualityCounts, more: QualityCounts) -> QualityCounts:
    """``total + more`` per kind and action (a new dict; unknown kinds are refused)."""
    out = {kind: dict(actions) for kind, actions in total.items()}
    for kind, actions in more.items():
        if kind not in QUALITY_KINDS:
            raise KeyError(kind)
        slot = out.setdefault(kind, dict.fromkeys(QUALITY_ACTIONS, 0))
        for action, n in actions.items():
            if action not in QUALITY_ACTIONS:
                raise KeyError(action)
            slot[action] = slot.get(action, 0) + int(n)
    return out


def quality_counts(mq: MarketQuality) -> QualityCounts:
    """One market's validation result as operator counts (see ``PROBLEM_QUALITY``)."""
    out = empty_counts()
    for problem, n in mq.counts.items():
        mapped = PROBLEM_QUALITY.get(problem)
        if mapped is not None and n:
            kind, action = mapped
            out[kind][action] += int(n)
    return out


@dataclass(frozen=True, slots=True)
class SnapshotCheck:
    """Result of ``check_book`` / ``check_ticker``: the value to store (None = rejected), the
    counts, and a short description of the problems (empty when clean)."""

    value: OrderBook | Ticker | None
    counts: QualityCounts
    problems: tuple[str, ...] = ()


def _side(levels: np.ndarray, descending: bool) -> tuple[np.ndarray, int, bool]:
    """Drop non-finite / non-positive levels, sort best first, merge equal prices.
    Returns (levels, dropped, reordered)."""
    arr = np.asarray(levels, dtype=np.float64).reshape(-1, 2)
    ok = np.all(np.isfinite(arr), axis=1) & (arr[:, 0] > 0) & (arr[:, 1] > 0)
    dropped = int((~ok).sum())
    arr = arr[ok]
    order = np.argsort(-arr[:, 0] if descending else arr[:, 0], kind="stable")
    reordered = bool(np.any(order != np.arange(len(arr))))
    arr = arr[order]
    if len(arr) > 1:
        same = np.r_[False, arr[1:, 0] == arr[:-1, 0]]
        if same.any():
            reordered = True
            starts = np.flatnonzero(~same)
            qty = np.add.reduceat(arr[:, 1], starts)
            arr = np.column_stack([arr[starts, 0], qty])
    return arr, dropped, reordered


def check_book(book: OrderBook, now: float, max_age: float = 120.0) -> SnapshotCheck:
    """Validate one order book: stale (older than ``max_age`` seconds) or crossed books and
    books with an empty side are rejected; bad levels (NaN, price or size <= 0) are dropped and
    unsorted / repeated levels are put in order (repaired)."""
    counts = empty_counts()
    age = now - book.ts
    if age > max_age:
        counts["stale"]["rejected"] += 1
        return SnapshotCheck(None, counts, (f"book {age:.0f} s old",))
    bids, bad_b, moved_b = _side(book.bids, descending=True)
    asks, bad_a, moved_a = _side(book.asks, descending=False)
    if not len(bids) or not len(asks):
        counts["book"]["rejected"] += 1
        return SnapshotCheck(None, counts, ("book has an empty side",))
    if bids[0, 0] >= asks[0, 0]:
        counts["book"]["rejected"] += 1
        return SnapshotCheck(None, counts, (f"crossed book: bid {bids[0, 0]:g} >= ask {asks[0, 0]:g}",))
    problems = []
    if bad_b or bad_a:
        problems.append(f"{bad_b + bad_a} bad levels dropped")
    if moved_b or moved_a:
        problems.append("levels reordered")
    if problems:
        counts["book"]["repaired"] += 1
    return SnapshotCheck(OrderBook(book.symbol, book.ts, bids, asks), counts, tuple(problems))


def check_ticker(ticker: Ticker, now: float, max_age: float = 120.0) -> SnapshotCheck:
    """Validate one ticker: a stale ticker or one without a positive last price is rejected;
    a crossed or non-positive bid / ask and a negative 24 h value are blanked (NaN, repaired).
    A ticker's time is its last trade, so ``max_age`` must allow for quiet markets."""
    counts = empty_counts()
    age = now - ticker.ts
    if age > max_age:
        counts["stale"]["rejected"] += 1
        return SnapshotCheck(None, counts, (f"ticker {age:.0f} s old",))
    if not (np.isfinite(ticker.last) and ticker.last > 0):
        counts["book"]["rejected"] += 1
        return SnapshotCheck(None, counts, (f"ticker last price {ticker.last!r}",))
    bid, ask, value = ticker.bid, ticker.ask, ticker.value_24h
    problems = []
    if not (np.isnan(bid) or bid > 0) or not (np.isnan(ask) or ask > 0) or (bid >= ask):
        if not (np.isnan(bid) and np.isnan(ask)):
            problems.append(f"ticker bid/ask {bid:g}/{ask:g} blanked")
            bid = ask = float("nan")
    if not np.isnan(value) and value < 0:
        problems.append(f"ticker value_24h {value:g} blanked")
        value = float("nan")
    if problems:
        counts["book"]["repaired"] += 1
    out = Ticker(ticker.symbol, ticker.ts, ticker.last, bid, ask, value, ticker.change_24h_pct)
    return SnapshotCheck(out, counts, tuple(problems))
