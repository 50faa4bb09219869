"""Candle replay data [EX-3]: parse candle tables, validate them and align many markets.

Pure functions (no file access: ``execution/adapters/replay.py`` reads the files and calls
these). Accepted inputs:

* tables (CSV / feather read into a ``pandas.DataFrame``) with a time column (``timestamp``,
  ``date``, ``datetime``, ``time``, ``candle_date_time_utc`` or an unnamed first column) and
  open/high/low/close/volume in any letter case; times may be ISO strings (UTC or naive UTC),
  dates, pandas datetimes, or epoch seconds / milliseconds;
* freqtrade JSON: a list of ``[ms, open, high, low, close, volume]``;
* Upbit REST candle JSON: a list of objects with ``candle_date_time_utc``, ``opening_price``,
  ``high_price``, ``low_price``, ``trade_price``, ``candle_acc_trade_volume``.

``build_replay`` validates every market (``validation.clean_ohlcv``) and aligns them on one grid
(continuous from the earliest to the latest bar, NaN where a market has no bar); the result
carries the ``DataQualityReport``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from execution.engine.types import CALENDAR_TIMEFRAMES, TIMEFRAME_SECONDS, Candles, MarketDataError
from execution.engine.validation import DataQualityReport, OhlcvSeries, clean_ohlcv, detect_grid_offset

_TIME_COLUMNS = ("timestamp", "date", "datetime", "time", "candle_date_time_utc", "open_time", "")
_MAX_CELLS = 80_000_000


@dataclass(frozen=True, slots=True)
class CandleFileName:
    """What a candle file's name says: ``EXCHANGE_SYMBOL_TF.csv.gz`` or freqtrade ``BASE_QUOTE-TF.ext``."""

    exchange: str
    symbol: str
    timeframe: str | None
    quote: str


@dataclass(frozen=True, slots=True)
class ReplayData:
    candles: Candles
    report: DataQualityReport
    sources: tuple[str, ...] = ()


_OUR_NAME = re.compile(r"^(?P<ex>[a-z0-9]+)_(?P<sym>[A-Za-z0-9]+-[A-Za-z0-9]+)_(?P<tf>\d+[mhdwM])$")
_FT_NAME = re.compile(r"^(?:(?P<mode>[a-z]+)__)?(?P<pair>[A-Z0-9]+(?:_[A-Z0-9]+)+)-(?P<tf>\d+[mhdwM])"
                      r"(?:-(?P<kind>[a-z_]+))?$")


def parse_candle_filename(name: str) -> CandleFileName | None:
    """Exchange, symbol and timeframe from a file name, or None when it follows no known pattern.

    Upbit symbols keep Upbit's code (``KRW-BTC``: quote first); others are ``BASE-QUOTE``;
    freqtrade pairs become ccxt symbols (``XRP/USDT``, futures ``XRP/USDT:USDT``).
    """
    stem = name.split("/")[-1]
    for ext in (".gz", ".csv", ".json", ".feather", ".parquet"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    for ext in (".csv", ".json"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    m = _OUR_NAME.match(stem)
    if m:
        tf = m["tf"] if m["tf"] in TIMEFRAME_SECONDS else None
        a, b = m["sym"].split("-")
        quote = a if m["ex"].startswith("upbit") else b
        return CandleFileName(m["ex"], m["sym"], tf, quote)
    m = _FT_NAME.match(stem)
    if m:
        parts = m["pair"].split("_")
        symbol = f"{parts[0]}/{parts[1]}" + (f":{parts[2]}" if len(parts) > 2 else "")
        tf = m["tf"] if m["tf"] in TIMEFRAME_SECONDS else None
        kind = m["kind"] or ""
        if kind and kind not in ("futures", "spot"):
            symbol += f"#{kind}"       # mark / index / funding_rate candles are not tradable prices
        return CandleFileName(m["mode"] or "freqtrade", symbol, tf, parts[1])
    return None


def infer_timeframe(ts: np.ndarray) -> str:
    """Timeframe from the most common spacing of bar times (28-31 days -> ``1M``)."""
    ts = np.unique(np.asarray(ts, dtype=np.int64))
    if len(ts) < 2:
        raise MarketDataError("cannot infer a timeframe from fewer than two bars")
    diffs, counts = np.unique(np.diff(ts), return_counts=True)
    step = int(diffs[np.argmax(counts)])
    for tf, seconds in TIMEFRAME_SECONDS.items():
        if seconds == step and tf not in CALENDAR_TIMEFRAMES:
            return tf
    if 28 * 86400 <= step <= 31 * 86400:
        return "1M"
    raise MarketDataError(f"bar spacing of {step}s matches no known timeframe")


def _to_epoch_seconds(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(col):
        dt = pd.to_datetime(col, utc=True)
    elif pd.api.types.is_numeric_dtype(col):
        values = col.to_numpy(dtype=np.float64)
        if np.any(~np.isfinite(values)):
            raise MarketDataError("timestamp column has missing values")
        unit = "ms" if np.nanmedian(np.abs(values)) > 1e11 else "s"
        dt = pd.to_datetime(values, unit=unit, utc=True)
    else:
        dt = pd.to_datetime(col.astype(str), utc=True, format="mixed")
    if pd.isna(dt).any():
        raise MarketDataError("timestamp column has unparseable values")
    ns = pd.DatetimeIndex(dt).as_unit("ns").asi8
    if np.any(ns % 1_000_000_000):
        # sub-second bar times (e.g. funding events stamped at .017 s) are floored to the second
        ns = ns - ns % 1_000_000_000
    return (ns // 1_000_000_000).astype(np.int64)


def frame_to_series(df: pd.DataFrame, symbol: str, timeframe: str | None = None) -> OhlcvSeries:
    """One market's raw rows from a table (see the module docstring for accepted columns)."""
    cols = {str(c).strip().lower(): c for c in df.columns}
    time_col = next((cols[c] for c in _TIME_COLUMNS if c in cols), None)
    if time_col is None:
        unnamed = [c for c in df.columns if str(c).lower().startswith("unnamed")]
        time_col = unnamed[0] if unnamed else df.columns[0]
    missing = [c for c in ("open", "high", "low", "close") if c not in cols]
    if missing:
        raise MarketDataError(f"{symbol}: columns {missing} not found in {list(df.columns)}")
    ts = _to_epoch_seconds(df[time_col])

    def num(name: str) -> np.ndarray:
        if name not in cols:
            return np.full(len(df), np.nan)
        return pd.to_numeric(df[cols[name]], errors="coerce").to_numpy(dtype=np.float64)

    tf = timeframe or infer_timeframe(ts)
    return OhlcvSeries(symbol, tf, ts, num("open"), num("high"), num("low"), num("close"), num("volume"))


def records_to_series(records: list[Any], symbol: str | None = None, timeframe: str | None = None) -> OhlcvSeries:
    """One market's raw rows from freqtrade JSON or Upbit REST candle JSON."""
    if not isinstance(records, list) or not records:
        raise MarketDataError("candle JSON must be a non-empty list")
    first = records[0]
    if isinstance(first, list | tuple):
        if any(len(r) < 6 for r in records):
            raise MarketDataError("freqtrade candles need [ms, open, high, low, close, volume]")
        arr = np.array([r[:6] for r in records], dtype=np.float64)
        df = pd.DataFrame({"timestamp": arr[:, 0], "open": arr[:, 1], "high": arr[:, 2], "low": arr[:, 3],
                           "close": arr[:, 4], "volume": arr[:, 5]})
        return frame_to_series(df, symbol or "UNKNOWN", timeframe)
    if isinstance(first, dict) and "trade_price" in first:
        times = [r["candle_date_time_utc"] for r in records]
        if len(times) > 1 and all(a > b for a, b in zip(times, times[1:], strict=False)):
            records = records[::-1]     # the REST API returns newest first: that is its format
        df = pd.DataFrame({
            "timestamp": [r["candle_date_time_utc"] for r in records],
            "open": [r["opening_price"] for r in records], "high": [r["high_price"] for r in records],
            "low": [r["low_price"] for r in records], "close": [r["trade_price"] for r in records],
            "volume": [r.get("candle_acc_trade_volume") for r in records]})
        return frame_to_series(df, symbol or str(first.get("market", "UNKNOWN")), timeframe)
    raise MarketDataError("unrecognised candle JSON layout")


def concat_series(parts: Sequence[OhlcvSeries]) -> OhlcvSeries:
    """Several raw pieces of one market (e.g. consecutive downloads) as one (not yet cleaned)."""
    if not parts:
        raise MarketDataError("nothing to concatenate")
    if len({(p.symbol, p.timeframe) for p in parts}) != 1:
        raise MarketDataError("pieces must share symbol and timeframe")
    cat = [np.concatenate([getattr(p, f) for p in parts]) for f in ("ts", "open", "high", "low", "close", "volume")]
    return OhlcvSeries(parts[0].symbol, parts[0].timeframe, *cat)


def align_series(series: Sequence[OhlcvSeries]) -> Candles:
    """Cleaned markets on one grid: continuous from the first to the last bar (union for ``1M``)."""
    if not series:
        raise MarketDataError("no markets to align")
    tfs = {s.timeframe for s in series}
    if len(tfs) != 1:
        raise MarketDataError(f"markets have different timeframes: {sorted(tfs)}")
    tf = tfs.pop()
    symbols = tuple(s.symbol for s in series)
    if len(set(symbols)) != len(symbols):
        raise MarketDataError("duplicate symbols")
    non_empty = [s for s in series if len(s)]
    if not non_empty:
        raise MarketDataError("every market is empty after validation")
    if tf in CALENDAR_TIMEFRAMES:
        grid = np.unique(np.concatenate([s.ts for s in non_empty]))
    else:
        step = TIMEFRAME_SECONDS[tf]
        offsets = {detect_grid_offset(s.ts, tf) for s in non_empty}
        if len(offsets) != 1:
            raise MarketDataError(f"markets sit on different {tf} grids (offsets {sorted(offsets)})")
        start = min(int(s.ts[0]) for s in non_empty)
        end = max(int(s.ts[-1]) for s in non_empty)
        grid = np.arange(start, end + step, step, dtype=np.int64)
    if len(grid) * len(series) > _MAX_CELLS:
        raise MarketDataError(f"aligned grid too large: {len(series)} markets x {len(grid)} bars")
    out = {f: np.full((len(series), len(grid)), np.nan) for f in ("open", "high", "low", "close", "volume")}
    for i, s in enumerate(series):
        pos = np.searchsorted(grid, s.ts)
        if len(pos) and (pos.max() >= len(grid) or np.any(grid[pos] != s.ts)):
            raise MarketDataError(f"{s.symbol}: bars off the common grid")
        for f in out:
            out[f][i, pos] = getattr(s, f)
    return Candles(symbols, tf, grid, out["open"], out["high"], out["low"], out["close"], out["volume"])


def build_replay(series: Sequence[OhlcvSeries], *, sources: Sequence[str] = (), **clean_kwargs: float) -> ReplayData:
    """Validate every market, then align them; the report counts every repair and drop."""
    cleaned, reports = [], []
    for s in series:
        c, q = clean_ohlcv(s, **clean_kwargs)
        cleaned.append(c)
        reports.append(q)
    return ReplayData(align_series(cleaned), DataQualityReport(tuple(reports)), tuple(sources))
