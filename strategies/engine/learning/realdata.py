"""Real candle files for the learning layer [AI-1] [AI-3] (issue 14 part 4). Pure numpy / pandas.

* ``prepare_candles``: aligned candles of several markets -> the tuner's input: resampled to
  the tuner's bar (``execution.engine.resample``; 1m or 5m files -> 5m / 15m / 1h; ``"auto"``:
  the finest bar within the runtime budget, ``auto_bar``), the
  ``markets`` most traded markets (quote value over the whole span, ties by symbol), the last
  ``days`` days.
* ``load_real``: candle files (``execution.adapters.replay.load_candle_files``: validated,
  cleaned, aligned) -> ``prepare_candles`` -> (candles, market rules, description).
* ``label_bars``: the [AI-1] labels (``labels.label_snapshot``: net forward return at 60 and
  240 minutes, MFE, MAE, drawdown) of every market at every ``step``-th bar of real candles, as
  if a snapshot had been taken at that bar's close. Vectorised; identical to ``label_snapshot``
  on the same bars (tested). On bars longer than a minute the windows are whole bars
  (``H / bar`` of them, closing exactly H minutes after the decision), so 60 and 240 minutes
  need bars of at most 1 hour that divide the horizons.
* ``label_summary``: what the labels say about a data set (mean net return, hit rate, MFE /
  MAE quantiles per horizon), the figure the docs quote.

The tuner's default real universe is ``binance_selskas_2021`` (22 USDT markets x 133 days of
5-minute bars, the largest real universe in ``shared/data``): ``REAL_DEFAULT``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from execution.engine.types import TIMEFRAME_SECONDS, Candles, MarketInfo
from strategies.engine.learning.labels import HORIZON_LONG, HORIZON_SHORT, LABEL_FIELDS, LabelCosts

DAY = 86_400
#: (set folder under shared/data, timeframe of its files) of the default real tuning universe
REAL_DEFAULT: tuple[str, str] = ("binance_selskas_2021", "5m")
TUNING_TIMEFRAMES: tuple[str, ...] = ("5m", "15m", "1h", "4h")
#: The budget of the automatic bar, in market-bars (markets x bars): K = 60 full-tick trials on
#: 20 markets x 90 days of 1-hour bars (43,200) take about 3 minutes on 2 cores, and the cost of
#: a trial grows with the market-bars (docs/learning.md). ``auto_bar`` takes the finest bar (the
#: most entries, so the largest gate sample) whose market-bars stay within it.
MARKET_BARS_BUDGET = 50_000


def auto_bar(file_timeframe: str, n_markets: int, days: float, budget: int = MARKET_BARS_BUDGET) -> str:
    """The finest of ``TUNING_TIMEFRAMES`` (a multiple of the files' timeframe) whose
    ``n_markets x days`` of bars fit ``budget``; the coarsest usable one when none fits; the
    files' own timeframe when none is usable (e.g. daily files)."""
    src = TIMEFRAME_SECONDS[file_timeframe]
    usable = [tf for tf in TUNING_TIMEFRAMES if TIMEFRAME_SECONDS[tf] >= src and TIMEFRAME_SECONDS[tf] % src == 0]
    if not usable:
        return file_timeframe
    for tf in usable:
        if n_markets * days * DAY / TIMEFRAME_SECONDS[tf] <= budget:
            return tf
    return usable[-1]


def real_files(root: str | Path, folder: str = REAL_DEFAULT[0], timeframe: str = REAL_DEFAULT[1]) -> list[Path]:
    """The ``*_<timeframe>.csv.gz`` candle files of one set of ``shared/data``, sorted."""
    base = Path(root) / folder
    files = sorted(base.glob(f"*_{timeframe}.csv.gz"))
    if not files:
        raise FileNotFoundError(f"no *_{timeframe}.csv.gz candle files under {base}")
    return files


def _take(c: Candles, rows: np.ndarray | slice, cols: slice) -> Candles:
    syms = tuple(np.asarray(c.symbols, dtype=object)[rows]) if not isinstance(rows, slice) else c.symbols[rows]
    return Candles(tuple(syms), c.timeframe, c.ts[cols], c.open[rows][:, cols], c.high[rows][:, cols],
                   c.low[rows][:, cols], c.close[rows][:, cols], c.volume[rows][:, cols])


def prepare_candles(candles: Candles, *, timeframe: str | None = None, days: float | None = None,
                    markets: int | None = None) -> Candles:
    """Resample to ``timeframe`` (None: keep; ``"auto"``: ``auto_bar`` for the markets and days
    kept), keep the ``markets`` most traded markets (None: all) and the last ``days`` days (None:
    all). Raises ValueError for a timeframe finer than the data or not a multiple of it, and for
    too little data."""
    from execution.engine.resample import resample

    c = candles
    if timeframe == "auto":
        bar = TIMEFRAME_SECONDS[c.timeframe]
        span = (int(c.ts[-1]) + bar - int(c.ts[0])) / DAY if c.n_bars else 0.0
        kept = min(markets, c.n_markets) if markets is not None else c.n_markets
        timeframe = auto_bar(c.timeframe, kept, min(span, days) if days is not None else span)
    if timeframe is not None and timeframe != c.timeframe:
        src, dst = TIMEFRAME_SECONDS[c.timeframe], TIMEFRAME_SECONDS.get(timeframe)
        if dst is None or dst < src or dst % src:
            raise ValueError(f"cannot turn {c.timeframe} bars into {timeframe} bars (a multiple of the data's "
                             f"timeframe is needed)")
        c = resample(c, timeframe, complete_only=True)
    if markets is not None:
        if markets < 2:
            raise ValueError("tuning needs at least 2 markets")
        if markets < c.n_markets:
            value = np.nansum(c.close * c.volume, axis=1)
            order = sorted(range(c.n_markets), key=lambda i: (-value[i], c.symbols[i]))[:markets]
            c = _take(c, np.array(sorted(order)), slice(None))
    if days is not None:
        if not days > 0:
            raise ValueError("days must be positive")
        bar = TIMEFRAME_SECONDS[c.timeframe]
        start = int(c.ts[-1]) + bar - int(round(days * DAY))
        c = _take(c, slice(None), slice(int(np.searchsorted(c.ts, start)), None))
    if c.n_bars < 2:
        raise ValueError("too little data left after resampling and cropping")
    return c


def load_real(paths: Iterable[str | Path], *, timeframe: str | None = None, days: float | None = None,
              markets: int | None = None) -> tuple[Candles, dict[str, MarketInfo], dict[str, Any]]:
    """Candle files -> (the tuner's candles, market rules, a description for reports)."""
    from execution.adapters.replay import default_market_info, load_candle_files

    paths = [str(p) for p in paths]
    replay = load_candle_files(paths)
    source_tf = replay.candles.timeframe
    candles = prepare_candles(replay.candles, timeframe=timeframe, days=days, markets=markets)
    rules = {s: default_market_info(s, candles) for s in candles.symbols}
    bar = TIMEFRAME_SECONDS[candles.timeframe]
    described = {"source": "files", "files": [Path(p).name for p in paths], "file_timeframe": source_tf,
                 "timeframe": candles.timeframe, "markets": candles.n_markets, "symbols": list(candles.symbols),
                 "days": round(candles.n_bars * bar / DAY, 2),
                 "start": int(candles.ts[0]), "end": int(candles.ts[-1]) + bar, "quality": replay.report.to_dict()}
    return candles, rules, described


# -- labels on real candles [AI-1] ----------------------------------------------------------------

@dataclass(frozen=True)
class BarLabels:
    """Labels of ``[markets x snapshots]`` (NaN where unknown: the horizon runs past the data or
    the window holds no bar); ``bar`` indexes the candles' bars the snapshots were taken at."""

    symbols: tuple[str, ...]
    bar: np.ndarray                   # [snapshots] bar index
    ts: np.ndarray                    # [snapshots] bar-open epoch seconds
    price: np.ndarray                 # [markets x snapshots] the bar's close
    values: dict[str, np.ndarray]     # LABEL_FIELDS -> [markets x snapshots]

    @property
    def n(self) -> int:
        return int(np.isfinite(self.values["label_ret_240m"]).sum())


def _horizon_bars(minutes: int, bar_seconds: int) -> int:
    if (minutes * 60) % bar_seconds:
        raise ValueError(f"a {minutes}-minute horizon is not a whole number of {bar_seconds // 60}-minute bars")
    return minutes * 60 // bar_seconds


def _forward(values: np.ndarray, h: int, reduce: str) -> np.ndarray:
    """``out[:, t]`` = nan-reduction of ``values[:, t + 1 .. t + h]`` (NaN when all are NaN or
    the window runs past the end)."""
    m, n = values.shape
    out = np.full((m, n), np.nan)
    if n <= h:
        return out
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(values[:, 1:], h, axis=1)          # [m, n - h, h]: bars t+1 .. t+h
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[:, : n - h] = np.nanmax(win, axis=2) if reduce == "max" else np.nanmin(win, axis=2)
    return out


def _last_finite_forward(close: np.ndarray, h: int) -> np.ndarray:
    """``out[:, t]`` = the last finite close among bars ``t + 1 .. t + h``."""
    m, n = close.shape
    idx = np.where(np.isfinite(close), np.arange(n)[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)                  # last finite bar at or before t
    out = np.full((m, n), np.nan)
    if n <= h:
        return out
    j = idx[:, h:]                                               # for t: last finite at or before t + h
    t = np.arange(n - h)[None, :]
    ok = j > t                                                   # inside t+1 .. t+h
    vals = np.take_along_axis(close, np.maximum(j, 0), axis=1)
    out[:, : n - h] = np.where(ok, vals, np.nan)
    return out


def label_bars(candles: Candles, costs: LabelCosts | Sequence[LabelCosts], *, step: int = 1) -> BarLabels:
    """The [AI-1] labels of every market at every ``step``-th bar (module docstring).

    ``costs``: one ``LabelCosts`` for every market or one per market. The drawdown label is the
    deepest ``low / running peak - 1`` inside the 240-minute window (running peak from the
    snapshot price), as ``label_snapshot`` computes it."""
    if step < 1:
        raise ValueError("step must be >= 1")
    bar = TIMEFRAME_SECONDS[candles.timeframe]
    hs, hl = _horizon_bars(HORIZON_SHORT, bar), _horizon_bars(HORIZON_LONG, bar)
    m, n = candles.n_markets, candles.n_bars
    per = [costs] * m if isinstance(costs, LabelCosts) else list(costs)
    if len(per) != m:
        raise ValueError("one LabelCosts per market is needed")
    cost = np.array([c.round_trip for c in per])[:, None]
    ok = np.isfinite(candles.high) & np.isfinite(candles.low) & np.isfinite(candles.close)
    high = np.where(ok, candles.high, np.nan)
    low = np.where(ok, candles.low, np.nan)
    close = np.where(ok, candles.close, np.nan)
    price = close
    with np.errstate(divide="ignore", invalid="ignore"):
        ret60 = _last_finite_forward(close, hs) / price - 1.0 - cost
        ret240 = _last_finite_forward(close, hl) / price - 1.0 - cost
        mfe = _forward(high, hl, "max") / price - 1.0 - cost
        mae = _forward(low, hl, "min") / price - 1.0 - cost
    # the 240-minute labels need the whole window inside the data
    known = np.arange(n) + hl < n
    known60 = np.arange(n) + hs < n
    ret60[:, ~known60] = np.nan
    for a in (ret240, mfe, mae):
        a[:, ~known] = np.nan
    sel = np.arange(0, n, step)
    dd = _drawdown(price[:, sel], high, low, sel, hl)
    dd[:, ~known[sel]] = np.nan
    dd[~np.isfinite(ret240[:, sel])] = np.nan
    values = {"label_ret_60m": ret60[:, sel], "label_ret_240m": ret240[:, sel], "label_mfe_240m": mfe[:, sel],
              "label_mae_240m": mae[:, sel], "label_dd_240m": dd}
    bad = ~np.isfinite(price[:, sel])
    for v in values.values():
        v[bad] = np.nan
    assert set(values) == set(LABEL_FIELDS)
    return BarLabels(candles.symbols, sel, candles.ts[sel], price[:, sel], values)


def _drawdown(price: np.ndarray, high: np.ndarray, low: np.ndarray, sel: np.ndarray, h: int) -> np.ndarray:
    """Deepest ``low_t / peak_t - 1`` over bars ``s + 1 .. s + h`` with ``peak_t`` the max of the
    snapshot price and the highs of the window's earlier bars; NaN bars are skipped."""
    m, n = high.shape
    out = np.full((m, len(sel)), np.inf)
    peak = price.copy()
    for k in range(h):                       # loop over the window's offset, vectorised over snapshots
        idx = sel + 1 + k
        inside = (idx < n)[None, :]
        j = np.minimum(idx, n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(inside, low[:, j] / peak - 1.0, np.nan)
        out = np.fmin(out, d)
        peak = np.fmax(peak, np.where(inside, high[:, j], np.nan))
    return np.where(np.isfinite(out), np.minimum(out, 0.0), np.nan)


def label_summary(labels: BarLabels) -> dict[str, Any]:
    """Count, mean, hit rate and quantiles of each label (finite values only), pooled."""
    out: dict[str, Any] = {"markets": len(labels.symbols), "snapshots": int(len(labels.bar)),
                           "labelled": labels.n}
    for name in LABEL_FIELDS:
        v = labels.values[name]
        v = v[np.isfinite(v)]
        if not len(v):
            out[name] = None
            continue
        out[name] = {"n": int(len(v)), "mean": float(v.mean()), "hit": float((v > 0).mean()),
                     "q05": float(np.quantile(v, 0.05)), "median": float(np.median(v)),
                     "q95": float(np.quantile(v, 0.95))}
    return out


def labels_to_rows(labels: BarLabels) -> Iterable[dict[str, Any]]:
    """One row per (market, snapshot) with a price, for CSV output."""
    for i, sym in enumerate(labels.symbols):
        for k in range(len(labels.bar)):
            p = labels.price[i, k]
            if not math.isfinite(p):
                continue
            row: dict[str, Any] = {"symbol": sym, "bar_ts": int(labels.ts[k]), "price": float(p)}
            for name in LABEL_FIELDS:
                x = labels.values[name][i, k]
                row[name] = float(x) if math.isfinite(x) else None
            yield row
