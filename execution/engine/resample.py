"""Resampling of candles to a coarser timeframe [EX-6] (1m -> 5m/15m/1h/4h/1d, or any multiple).

A target bar ``[T, T + tf)`` with ``T = offset + k * tf`` (UTC grid; ``offset`` shifts it, e.g.
3600 for Upbit's days that start at 01:00 UTC) takes the first open, the highest high, the
lowest low, the last close and the summed volume of the source bars inside it, skipping
missing (NaN) source bars. A bucket with no source bar at all is NaN (a gap stays a gap), and
the output grid is continuous from the first to the last bucket that has data in any market.
A bucket whose source bars all lack volume gets NaN volume.

With ``complete_only=True`` the last bucket is dropped when the source data ends before the
bucket does (a still-forming bar).
"""

from __future__ import annotations

import numpy as np

from execution.engine.types import CALENDAR_TIMEFRAMES, TIMEFRAME_SECONDS, Candles, MarketDataError


def resample(candles: Candles, timeframe: str, *, offset: int = 0, complete_only: bool = False) -> Candles:
    """``candles`` aggregated to ``timeframe`` (see the module docstring)."""
    if timeframe not in TIMEFRAME_SECONDS or timeframe in CALENDAR_TIMEFRAMES:
        raise MarketDataError(f"cannot resample to {timeframe!r}")
    src = TIMEFRAME_SECONDS[candles.timeframe]
    dst = TIMEFRAME_SECONDS[timeframe]
    if candles.timeframe in CALENDAR_TIMEFRAMES or dst % src or dst < src:
        raise MarketDataError(f"{timeframe} is not a multiple of {candles.timeframe}")
    if len(candles.ts) and np.any((candles.ts - offset) % src != 0):
        raise MarketDataError(f"source bars are not on the {candles.timeframe} grid at offset {offset}")
    m = candles.n_markets
    if candles.n_bars == 0:
        empty = np.empty((m, 0))
        return Candles(candles.symbols, timeframe, np.empty(0, dtype=np.int64), empty, empty, empty, empty, empty)

    valid = np.all(np.isfinite(np.stack([candles.open, candles.high, candles.low, candles.close])), axis=0)
    has_any = valid.any(axis=0)
    ts_valid = candles.ts[has_any]
    if not len(ts_valid):
        raise MarketDataError("no valid bar to resample")
    bucket_of = (candles.ts - offset) // dst
    first_b = int((ts_valid[0] - offset) // dst)
    last_b = int((ts_valid[-1] - offset) // dst)
    if complete_only and ts_valid[-1] + src < offset + (last_b + 1) * dst:
        last_b -= 1
    n_out = last_b - first_b + 1
    out_ts = offset + (first_b + np.arange(max(n_out, 0), dtype=np.int64)) * dst
    if n_out <= 0:
        empty = np.empty((m, 0))
        return Candles(candles.symbols, timeframe, out_ts, empty, empty, empty, empty, empty)

    sel = (bucket_of >= first_b) & (bucket_of <= last_b)
    b = (bucket_of[sel] - first_b).astype(np.int64)
    # source bars are sorted, so buckets are contiguous runs: reduce over run starts
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    run_bucket = b[starts]
    o, h, lo, c, v = (a[:, sel] for a in (candles.open, candles.high, candles.low, candles.close, candles.volume))
    ok = valid[:, sel]
    nb = len(b)
    pos = np.broadcast_to(np.arange(nb), (m, nb))
    first_pos = np.minimum.reduceat(np.where(ok, pos, nb), starts, axis=1)
    last_pos = np.maximum.reduceat(np.where(ok, pos, -1), starts, axis=1)
    any_ok = last_pos >= 0
    rows = np.arange(m)[:, None]
    run_open = np.where(any_ok, o[rows, np.clip(first_pos, 0, nb - 1)], np.nan)
    run_close = np.where(any_ok, c[rows, np.clip(last_pos, 0, nb - 1)], np.nan)
    run_high = np.fmax.reduceat(np.where(ok, h, np.nan), starts, axis=1)
    run_low = np.fmin.reduceat(np.where(ok, lo, np.nan), starts, axis=1)
    vol_ok = ok & np.isfinite(v)
    run_vol = np.add.reduceat(np.where(vol_ok, v, 0.0), starts, axis=1)
    run_vol = np.where(np.add.reduceat(vol_ok, starts, axis=1) > 0, run_vol, np.nan)

    def place(values: np.ndarray) -> np.ndarray:
        full = np.full((m, n_out), np.nan)
        full[:, run_bucket] = values
        return full

    return Candles(candles.symbols, timeframe, out_ts, place(run_open), place(run_high), place(run_low),
                   place(run_close), place(run_vol))


def resample_all(candles: Candles, timeframes: tuple[str, ...] = ("5m", "15m", "1h", "4h", "1d"),
                 **kwargs: object) -> dict[str, Candles]:
    """Every requested timeframe from one source (each computed from the source directly)."""
    return {tf: resample(candles, tf, **kwargs) for tf in timeframes}  # type: ignore[arg-type]
