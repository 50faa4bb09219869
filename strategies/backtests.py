"""Backtest runners shared by ``manage.py backtest``, the REST endpoint and the worker task [BT-4], [BT-5].

Strategies are runners in ``RUNNERS``: each takes the options (the command's parsed arguments, or
the same keys from a stored run) and an optional ``progress`` callback (fraction done, 0..1) and
returns the JSON-safe result. Every runner's result has ``strategy``, ``params``, ``data``,
``bars``, ``trades`` (the count), ``final_equity``, ``report``
(``strategies.engine.backtest.report``) and, unless ``no_trade_list``, ``trade_list``.
Bad options raise ``BacktestInputError`` with a message for the operator.

* ``sma_cross``: the reference strategy (``strategies.engine.backtest.reference``) on ONE candle
  file (CSV/JSON/feather, optionally gzip; see ``execution.adapters.replay.read_candle_file``).
  Rows are validated with ``execution.engine.validation.clean_ohlcv`` (bad rows dropped or
  repaired, counted under ``data.quality``); missing bars are not invented, the strategy runs
  on the rows as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from execution.adapters.replay import read_candle_file
from execution.engine.types import TIMEFRAME_SECONDS
from execution.engine.validation import OhlcvSeries, clean_ohlcv
from strategies.engine.backtest.reference import ReferenceResult, sma_cross
from strategies.engine.backtest.report import compute_report

Progress = Callable[[float], None]
Runner = Callable[..., dict[str, Any]]


class BacktestInputError(ValueError):
    """Options a runner cannot run with; the message is for the operator."""


def iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None, name: str) -> int | None:
    """Epoch seconds of an ISO date/time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestInputError(f"--{name} {value!r} is not an ISO date or date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def load_market(path_arg: str, start: int | None = None, end: int | None = None) -> tuple[OhlcvSeries, dict]:
    """Read, validate and cut one candle file to ``start <= bar open < end``."""
    path = Path(path_arg)
    if not path.is_file():
        raise BacktestInputError(f"data file not found: {path}")
    try:
        raw = read_candle_file(path)
        series, quality = clean_ohlcv(raw)
    except (ValueError, OSError, KeyError, EOFError) as exc:      # MarketDataError is a ValueError
        raise BacktestInputError(f"cannot read candles from {path}: {exc}") from None
    keep = np.ones(len(series), dtype=bool)
    if start is not None:
        keep &= series.ts >= start
    if end is not None:
        keep &= series.ts < end
    if not keep.all():
        series = OhlcvSeries(series.symbol, series.timeframe, *(a[keep] for a in (
            series.ts, series.open, series.high, series.low, series.close, series.volume)))
    info = {
        "file": str(path),
        "symbol": series.symbol,
        "timeframe": series.timeframe,
        "rows_in": quality.rows_in,
        "rows_valid": quality.rows_out,
        "quality": {k: v for k, v in quality.counts.items() if v},
    }
    if len(series):
        info["start"] = iso(series.ts[0])
        info["end"] = iso(series.ts[-1] + TIMEFRAME_SECONDS[series.timeframe])
    return series, info


def trade_list(result: ReferenceResult) -> list[dict[str, Any]]:
    return [{
        "entry_time": iso(t.entry_ts), "exit_time": iso(t.exit_ts),
        "entry_bar": t.entry_bar, "exit_bar": t.exit_bar,
        "entry_price": t.entry_price, "exit_price": t.exit_price, "qty": t.qty,
        "fees": t.entry_fee + t.exit_fee, "pnl": t.pnl, "return": t.return_, "is_open": t.is_open,
    } for t in result.trades]


def run_sma_cross(options: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """The reference strategy on one file (conventions: ``strategies.engine.backtest.reference``)."""
    fast, slow, fee, cash = options["fast"], options["slow"], options["fee"], options["cash"]
    if fast is None or slow is None:
        raise BacktestInputError("--strategy sma_cross needs --fast and --slow")
    if not 1 <= fast < slow:
        raise BacktestInputError(f"need 1 <= --fast < --slow, got --fast {fast} --slow {slow}")
    data = options["data"] or []
    if len(data) != 1:
        raise BacktestInputError(f"--strategy sma_cross needs exactly one --data file, got {len(data)}")
    start, end = parse_time(options["start"], "start"), parse_time(options["end"], "end")
    if start is not None and end is not None and start >= end:
        raise BacktestInputError("--start must be before --end")
    series, info = load_market(data[0], start, end)
    if len(series) < slow + 2:
        raise BacktestInputError(f"{len(series)} valid bars in {data[0]} (after --start/--end); "
                           f"--slow {slow} needs at least {slow + 2} for one trade")

    result = sma_cross(series.open, series.close, fast, slow, fee, cash, ts=series.ts)
    report = compute_report(result.equity, series.ts, result.trades,
                            bar_seconds=TIMEFRAME_SECONDS[series.timeframe], initial_equity=cash,
                            position_value=result.position_value, traded_value=result.traded_value)
    out: dict[str, Any] = {
        "strategy": "sma_cross",
        "params": {"fast": fast, "slow": slow, "fee": fee, "cash": cash},
        "data": info,
        "bars": result.bars,
        "trades": len(result.trades),
        "closed_trades": len(result.trades) - int(result.trades.has_open),
        "open_position": result.trades.has_open,
        "final_equity": result.final_equity,
        "fees_paid": result.fees_paid,
        "report": report.to_dict(),
    }
    if not options["no_trade_list"]:
        out["trade_list"] = trade_list(result)
    return out


RUNNERS: dict[str, Runner] = {
    "sma_cross": run_sma_cross,
}
