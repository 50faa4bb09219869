"""The ``replay`` venue [EX-3]: candle files driven through the shared fill model.

File reading lives here (engines do no I/O): ``read_candle_file`` turns one CSV (optionally
gzip), JSON (freqtrade ``[ms, o, h, l, c, v]`` lists or Upbit REST candles, optionally gzip) or
feather file into raw rows; ``load_candle_files`` validates and aligns many files with
``execution.engine.replay.build_replay`` and returns the candles plus the data-quality report.

``ReplayExchange`` reveals the candles bar by bar: ``advance()`` / ``advance_to(ts)`` move the
clock (``now`` = end of the last revealed bar), ``candles()`` never shows a bar that has not
ended, and resting orders are matched against each newly revealed bar. Candles carry no book,
so the book is synthesised around the last close on the market's tick grid (``spread_bps``;
each level holds ``depth_fraction`` of the median traded value of the recent bars).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from execution.adapters.base import InvalidOrderError
from execution.adapters.sim import SimulatedVenue, select_candles
from execution.engine.fillmodel import Bar, FillConfig
from execution.engine.replay import (
    ReplayData,
    build_replay,
    frame_to_series,
    parse_candle_filename,
    records_to_series,
)
from execution.engine.sim import PriceGrid, build_ladder_book
from execution.engine.types import (
    TIMEFRAME_SECONDS,
    Candles,
    Fill,
    MarketDataError,
    MarketInfo,
    OrderBook,
    Ticker,
)
from execution.engine.validation import OhlcvSeries

_TICK_FILES = ("trades", "_bookticker", "_depthdiff", "_depthsnapshot", "_l2snapshots", "funding_rate")


def read_candle_file(path: str | Path, symbol: str | None = None, timeframe: str | None = None) -> OhlcvSeries:
    """Raw (not yet validated) rows of one candle file; symbol/timeframe from the name if not given."""
    path = Path(path)
    parsed = parse_candle_filename(path.name)
    named = symbol or (parsed.symbol if parsed else None)      # JSON may carry its own market code
    symbol = named or path.name.split(".")[0]
    timeframe = timeframe or (parsed.timeframe if parsed else None)
    name = path.name.lower()
    if name.endswith((".feather", ".arrow")):
        return frame_to_series(pd.read_feather(path), symbol, timeframe)
    if name.endswith((".parquet", ".pq")):
        return frame_to_series(pd.read_parquet(path), symbol, timeframe)
    if name.endswith((".json", ".json.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            records = json.load(fh)
        return records_to_series(records, named, timeframe)
    if name.endswith((".csv", ".csv.gz")):
        return frame_to_series(pd.read_csv(path), symbol, timeframe)
    raise MarketDataError(f"unsupported candle file type: {path.name}")


def find_candle_files(root: str | Path) -> list[Path]:
    """Every OHLCV candle file under ``root`` (tick, book and funding-rate tables excluded)."""
    out = []
    for p in sorted(Path(root).rglob("*")):
        name = p.name.lower()
        if not p.is_file() or not name.endswith((".csv", ".csv.gz", ".json", ".json.gz", ".feather")):
            continue
        if any(t in name for t in _TICK_FILES) or name.startswith("kraken__trades") or "public_trades" in name:
            continue
        out.append(p)
    return out


def load_candle_files(paths: Iterable[str | Path], **clean_kwargs: float) -> ReplayData:
    """Read, validate and align several files (one market each, same timeframe)."""
    paths = [Path(p) for p in paths]
    series = [read_candle_file(p) for p in paths]
    return build_replay(series, sources=[str(p) for p in paths], **clean_kwargs)


def infer_tick(prices: np.ndarray, max_decimals: int = 10) -> Decimal:
    """Coarsest power-of-ten tick on which every finite price sits (Binance-style fixed ticks)."""
    p = prices[np.isfinite(prices)]
    if not len(p):
        raise MarketDataError("no prices to infer a tick from")
    for d in range(0, max_decimals + 1):
        scaled = p * 10**d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-9 * np.maximum(1.0, np.abs(scaled))):
            return Decimal(1).scaleb(-d)
    return Decimal(1).scaleb(-max_decimals)


def default_market_info(symbol: str, candles: Candles) -> MarketInfo:
    """Rules of a replayed market: Upbit KRW (tick table, 5,000 KRW minimum) or a fixed tick."""
    if symbol.startswith("KRW-"):
        return MarketInfo(symbol, symbol[4:], "KRW", min_notional=Decimal("5000"))
    if "/" in symbol:
        base, rest = symbol.split("/", 1)
        quote = rest.split(":")[0].split("#")[0]
    elif "-" in symbol:
        base, quote = symbol.split("-", 1)
    else:
        base, quote = symbol, "QUOTE"
    i = candles.index(symbol)
    prices = np.concatenate([candles.open[i], candles.high[i], candles.low[i], candles.close[i]])
    return MarketInfo(symbol, base, quote, tick_size=infer_tick(prices))


class ReplayExchange(SimulatedVenue):
    """Candles revealed bar by bar, one account, the shared fill model."""

    name = "replay"
    can_trade = True

    def __init__(self, data: Candles | ReplayData, *, fill_config: FillConfig | None = None,
                 balances: dict[str, Decimal] | None = None, start_bar: int = 1,
                 market_info: dict[str, MarketInfo] | None = None, spread_bps: float = 5.0,
                 depth_fraction: float = 0.25, book_depth: int = 15) -> None:
        super().__init__(fill_config, balances)
        self.data = data.candles if isinstance(data, ReplayData) else data
        self.report = data.report if isinstance(data, ReplayData) else None
        if self.data.n_bars == 0:
            raise MarketDataError("no bars to replay")
        if not 1 <= start_bar <= self.data.n_bars:
            raise ValueError("start_bar must be within the data")
        self._cursor = int(start_bar)          # number of revealed bars
        self._bar_s = TIMEFRAME_SECONDS[self.data.timeframe]
        infos = dict(market_info or {})
        self._infos = [infos.get(s) or default_market_info(s, self.data) for s in self.data.symbols]
        self._grids = [PriceGrid.krw() if m.tick_size is None else PriceGrid.fixed([m.tick_size])
                       for m in self._infos]
        self.spread_bps, self.depth_fraction, self.book_depth = spread_bps, depth_fraction, book_depth

    @property
    def now(self) -> int:
        return int(self.data.ts[self._cursor - 1]) + self._bar_s

    @property
    def finished(self) -> bool:
        return self._cursor >= self.data.n_bars

    def markets(self) -> list[MarketInfo]:
        return list(self._infos)

    def _last(self, i: int) -> tuple[float, float]:
        """Last finite close and median traded value of the last 60 revealed bars."""
        close = self.data.close[i, : self._cursor]
        finite = np.flatnonzero(np.isfinite(close))
        if not len(finite):
            raise MarketDataError(f"{self.data.symbols[i]} has no bar yet at {self.now}")
        recent = slice(max(0, self._cursor - 60), self._cursor)
        value = self.data.close[i, recent] * self.data.volume[i, recent]
        value = value[np.isfinite(value) & (value > 0)]
        return float(close[finite[-1]]), float(np.median(value)) if len(value) else 0.0

    def order_book(self, symbol: str, depth: int | None = None) -> OrderBook:
        if symbol not in self.data.symbols:
            raise InvalidOrderError(f"unknown market {symbol}")
        i = self.data.index(symbol)
        mid, value = self._last(i)
        depth = depth or self.book_depth
        level_value = max(value * self.depth_fraction, mid * 1e-6)
        levels = level_value * (1.0 + 0.15 * np.arange(depth))
        return build_ladder_book(symbol, self.now, mid, self.spread_bps * 1e-4, levels, self._grids[i])

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        out = []
        n_day = max(1, 86400 // self._bar_s)
        for i, sym in enumerate(self.data.symbols):
            if symbols is not None and sym not in symbols:
                continue
            try:
                book = self.order_book(sym, 1)
            except MarketDataError:
                continue
            s = slice(max(0, self._cursor - n_day), self._cursor)
            close = self.data.close[i, s]
            value = float(np.nansum(close * self.data.volume[i, s]))
            finite = close[np.isfinite(close)]
            change = (finite[-1] / finite[0] - 1.0) * 100.0 if len(finite) else math.nan
            out.append(Ticker(sym, self.now, float(finite[-1]), book.best_bid, book.best_ask, value, change))
        return out

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        if symbol not in self.data.symbols:
            raise InvalidOrderError(f"unknown market {symbol}")
        visible = self.data.select((symbol,))
        s = slice(0, self._cursor)
        visible = Candles(visible.symbols, visible.timeframe, visible.ts[s], visible.open[:, s], visible.high[:, s],
                          visible.low[:, s], visible.close[:, s], visible.volume[:, s])
        return select_candles(visible, timeframe, since, limit, self.now)

    def advance(self, n_bars: int = 1) -> list[Fill]:
        """Reveal the next ``n_bars`` bars (stops at the end of the data); returns new fills."""
        fills: list[Fill] = []
        for _ in range(int(n_bars)):
            if self.finished:
                break
            j = self._cursor
            self._cursor += 1
            for symbol in sorted({o.symbol for o in self._orders.values() if not o.status.is_final}):
                i = self.data.index(symbol)
                bar = Bar.from_candles(self.data, i, j, self._bar_s)
                fills.extend(self._match_bar(symbol, bar, lambda symbol=symbol: self.order_book(symbol)))
        return fills

    def advance_to(self, ts: int) -> list[Fill]:
        """Reveal bars until ``now >= ts`` or the data ends."""
        fills: list[Fill] = []
        while self.now < ts and not self.finished:
            fills.extend(self.advance(1))
        return fills

    def get_state(self) -> dict[str, Any]:
        """JSON-safe cursor and account (the candles themselves are re-read from the files)."""
        return {"version": 1, "cursor": self._cursor, "account": self._account_state()}

    def restore_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError("unsupported replay state version")
        self._cursor = int(state["cursor"])
        self._restore_account(state["account"])
