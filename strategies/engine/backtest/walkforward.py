"""Walk-forward analysis [BT-4]: train / test windows over a period, and out-of-sample results.

Pure: stdlib and numpy, no Django, no I/O, no clock. Times are epoch seconds; every window is
half-open, ``[start, end)``, which is what the runners' ``start``/``end`` options mean (bars
opening at or after ``start`` and before ``end``).

Splitting (``split_windows``), with ``train``, ``test`` and ``step`` lengths in seconds:

* rolling: window ``k`` trains on ``[s + k*step, s + k*step + train)`` and tests on the
  ``test`` seconds right after it;
* anchored: every window trains from the period's start ``s`` (the train window grows by
  ``step`` each time) and tests on the ``test`` seconds right after it.

Windows are added while the test window ends inside the period; a remainder shorter than
``test`` is not tested (``uncovered_seconds`` says how much). ``step >= test`` is required, so
test windows never overlap and every out-of-sample bar is counted once; ``step > test`` leaves
gaps between them.

Running (``run_walk_forward``): the same runner runs with the same parameters on every train
window (in-sample) and every test window (out-of-sample). Each run starts flat with the
initial cash and warms its indicators up inside its own window, exactly as a separate backtest
of that window would. The combined out-of-sample curve chains the test windows: window ``k``'s
equity is scaled so that it starts where window ``k-1`` ended (compounding, as if the capital
had been carried over), trade PnL and traded values are scaled by the same factor, and the
report metrics (``strategies.engine.backtest.report``) are computed on that curve. Gaps
between test windows are flat time: they count in ``period_days`` (annualisation) but add no
return points.

``efficiency`` (walk-forward efficiency) = combined out-of-sample annualised return / mean
in-sample annualised return; ``None`` when the in-sample mean is not positive (the ratio means
nothing then).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from strategies.engine.backtest.report import compute_report

__all__ = [
    "MAX_WINDOWS",
    "WINDOW_METRICS",
    "Combined",
    "Segment",
    "SegmentTrade",
    "WalkForwardError",
    "WalkForwardWindow",
    "combine_out_of_sample",
    "epoch_seconds",
    "run_walk_forward",
    "segment_from_result",
    "split_windows",
]

MAX_WINDOWS = 200
"""More windows than this is refused: each window is two full backtests."""


class WalkForwardError(ValueError):
    """Walk-forward settings that cannot be split or run; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class WalkForwardWindow:
    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        for key in ("train_start", "train_end", "test_start", "test_end"):
            out[key] = _iso(out[key])
        return out


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def split_windows(start: int, end: int, *, train: int, test: int, step: int | None = None,
                  anchored: bool = False, max_windows: int = MAX_WINDOWS) -> list[WalkForwardWindow]:
    """The walk-forward windows of ``[start, end)`` (rules in the module docstring).

    ``step`` defaults to ``test`` (back-to-back test windows). Raises ``WalkForwardError`` when a
    length is not positive, ``step < test``, the period holds no complete train + test window,
    or more than ``max_windows`` windows would be needed.
    """
    step = test if step is None else step
    for name, value in (("start", start), ("end", end), ("train", train), ("test", test), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise WalkForwardError(f"walk-forward {name} must be whole seconds, got {value!r}")
    if train <= 0 or test <= 0 or step <= 0:
        raise WalkForwardError("walk-forward train, test and step lengths must be positive")
    if step < test:
        raise WalkForwardError(f"walk-forward step ({step}s) must be at least the test length ({test}s), "
                               "so that test windows do not overlap")
    if start >= end:
        raise WalkForwardError("walk-forward period: start must be before end")
    if start + train + test > end:
        raise WalkForwardError(f"the period ({(end - start) / 86400:g} days) is shorter than one train + test "
                               f"window ({(train + test) / 86400:g} days)")
    count = (end - start - train - test) // step + 1
    if count > max_windows:
        raise WalkForwardError(f"{count} walk-forward windows; at most {max_windows} (use a longer step)")
    windows = []
    for k in range(int(count)):
        train_start = int(start) if anchored else int(start + k * step)
        test_start = int(start + train + k * step)
        windows.append(WalkForwardWindow(k, train_start, test_start, test_start, test_start + int(test)))
    return windows


@dataclass(frozen=True, slots=True)
class SegmentTrade:
    """A trade as ``compute_report`` reads it (see ``report.TradeLike``)."""

    entry_ts: int
    exit_ts: int
    pnl: float
    return_: float
    is_open: bool
    entry_value: float
    exit_value: float


@dataclass(frozen=True, slots=True)
class Segment:
    """One test window's run: ``ts`` int64 ``[bars]`` bar-open times, ``equity`` float64
    ``[bars]`` equity at each bar's close, the run's initial equity and its trades."""

    ts: np.ndarray
    equity: np.ndarray
    initial_equity: float
    trades: Sequence[SegmentTrade] = ()


@dataclass(frozen=True, slots=True)
class Combined:
    """The chained out-of-sample run: ``ts``/``equity`` as in ``Segment``, the scaled trades,
    the report (``BacktestReport.to_dict()``) and the scale applied to each input segment."""

    ts: np.ndarray
    equity: np.ndarray
    trades: list[SegmentTrade]
    report: dict[str, Any]
    scales: list[float]


def combine_out_of_sample(segments: Sequence[Segment], *, bar_seconds: int, initial_equity: float) -> Combined:
    """Chain the test windows (module docstring). Segments must be in time order, must not
    overlap and must each have at least one bar."""
    if not segments:
        raise WalkForwardError("no test window to combine")
    if not (math.isfinite(initial_equity) and initial_equity > 0):
        raise WalkForwardError("initial equity must be positive")
    capital = float(initial_equity)
    ts_parts, eq_parts, trades, scales = [], [], [], []
    last_ts = None
    for seg in segments:
        ts = np.asarray(seg.ts, dtype=np.int64)
        eq = np.asarray(seg.equity, dtype=np.float64)
        if ts.ndim != 1 or ts.shape != eq.shape or not len(ts):
            raise WalkForwardError("a test window needs at least one bar and one equity value per bar")
        if last_ts is not None and ts[0] <= last_ts:
            raise WalkForwardError("test windows overlap or are out of order")
        if not (math.isfinite(seg.initial_equity) and seg.initial_equity > 0):
            raise WalkForwardError("a test window's initial equity must be positive")
        scale = capital / seg.initial_equity
        scales.append(scale)
        ts_parts.append(ts)
        eq_parts.append(eq * scale)
        trades.extend(SegmentTrade(t.entry_ts, t.exit_ts, t.pnl * scale, t.return_, t.is_open,
                                   t.entry_value * scale, t.exit_value * scale) for t in seg.trades)
        capital = float(eq[-1] * scale)
        last_ts = int(ts[-1])
    ts_all = np.concatenate(ts_parts)
    eq_all = np.concatenate(eq_parts)
    report = compute_report(eq_all, ts_all, trades, bar_seconds=bar_seconds, initial_equity=float(initial_equity))
    return Combined(ts_all, eq_all, trades, report.to_dict(), scales)


# -- running ------------------------------------------------------------------------------------

Runner = Callable[..., dict[str, Any]]
Progress = Callable[[float], None]

WINDOW_METRICS = ("bars", "total_return", "annualized_return", "sharpe", "sortino", "max_drawdown",
                  "trades", "win_rate", "profit_factor", "exposure")
"""Report keys shown per window (in-sample and out-of-sample)."""

_SCALED_TRADE_KEYS = ("qty", "fees", "pnl", "entry_value", "exit_value")


def epoch_seconds(value: Any) -> int:
    """Epoch seconds of an ISO time (``...Z``) or a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())


def segment_from_result(result: Mapping[str, Any]) -> Segment:
    """A runner result as a segment: its ``equity`` [[ts, equity], ...] (bar-open time, equity
    at the close), ``report.initial_equity`` and ``trade_list`` (``entry_time``/``exit_time``
    ISO or epoch, ``pnl``, ``return``, ``is_open`` and either ``entry_value``/``exit_value`` or
    ``qty`` with ``entry_price``/``exit_price``)."""
    equity = result.get("equity")
    if not equity:
        raise WalkForwardError(f"the {result.get('strategy', '?')} runner returned no equity series; "
                               "walk-forward needs one")
    arr = np.asarray(equity, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise WalkForwardError("equity must be [[ts, equity], ...]")
    trades = []
    for t in result.get("trade_list") or ():
        is_open = bool(t.get("is_open", False))
        qty = float(t.get("qty") or 0.0)
        value_in = float(t["entry_value"]) if "entry_value" in t else qty * float(t.get("entry_price") or 0.0)
        if "exit_value" in t:
            value_out = float(t["exit_value"])
        else:
            value_out = 0.0 if is_open else qty * float(t.get("exit_price") or 0.0)
        trades.append(SegmentTrade(epoch_seconds(t["entry_time"]), epoch_seconds(t["exit_time"]), float(t["pnl"]),
                                   float(t["return"]), is_open, value_in, value_out))
    initial = (result.get("report") or {}).get("initial_equity")
    return Segment(arr[:, 0].astype(np.int64), arr[:, 1], float(initial if initial else arr[0, 1]), trades)


def _summary(result: Mapping[str, Any]) -> dict[str, Any]:
    report = result.get("report") or {}
    return {key: report.get(key) for key in WINDOW_METRICS}


def _mean(values: Sequence[Any]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(finite) / len(finite) if finite else None


def run_walk_forward(runner: Runner, options: Mapping[str, Any], windows: Sequence[WalkForwardWindow], *,
                     initial_equity: float, progress: Progress | None = None,
                     window_error: type[Exception] | tuple[type[Exception], ...] = WalkForwardError,
                     ) -> dict[str, Any]:
    """Run ``runner`` in-sample on every train window and out-of-sample on every test window.

    ``runner(options, progress=...)`` is a backtest runner (``strategies.backtests.RUNNERS``);
    ``options`` its options: ``start``/``end`` are replaced by each window's bounds (ISO
    strings, as ``manage.py backtest`` takes them) and ``no_trade_list`` is forced off (the
    combined report needs the trades). A window whose run raises ``window_error`` (bad input
    for that window only, e.g. too few bars for the indicators) is reported with its message and
    left out of the combination; if no test window runs, ``WalkForwardError`` is raised.

    Returns ``windows`` (bounds and per-window in-sample / out-of-sample metrics or ``error``),
    ``tested_windows``, ``in_sample_mean`` (mean of each in-sample metric), ``efficiency``, and
    ``out_of_sample``: the combined ``report``, ``equity`` [[ts, equity], ...] and
    ``trade_list`` (each trade tagged with its ``window``; ``qty``, ``fees``, ``pnl`` scaled to
    the chained capital).
    """
    if not windows:
        raise WalkForwardError("no walk-forward windows")
    runs = 2 * len(windows)
    done = 0

    def sub_progress(offset: int) -> Progress | None:
        if progress is None:
            return None
        return lambda fraction: progress((offset + min(max(float(fraction), 0.0), 1.0)) / runs)

    rows: list[dict[str, Any]] = []
    segments: list[Segment] = []
    tested: list[tuple[int, list[dict[str, Any]]]] = []
    bar_seconds = None
    for window in windows:
        row: dict[str, Any] = window.to_dict()
        for kind, lo, hi in (("in_sample", window.train_start, window.train_end),
                             ("out_of_sample", window.test_start, window.test_end)):
            opts = dict(options, start=_iso(lo), end=_iso(hi), no_trade_list=False)
            try:
                result = runner(opts, progress=sub_progress(done))
                summary = _summary(result)
                if kind == "out_of_sample":
                    segment = segment_from_result(result)
            except window_error as exc:
                row[kind] = {"error": str(exc)}
            else:
                row[kind] = summary
                if kind == "out_of_sample":
                    segments.append(segment)
                    tested.append((window.index, list(result.get("trade_list") or ())))
                    bar_seconds = bar_seconds or (result.get("report") or {}).get("bar_seconds")
            done += 1
            if progress is not None:
                progress(done / runs)
        rows.append(row)
    if not segments:
        errors = "; ".join(sorted({str(r["out_of_sample"].get("error")) for r in rows}))
        raise WalkForwardError(f"no test window could be run: {errors}")
    if not bar_seconds:
        raise WalkForwardError("the runner's report has no bar_seconds")
    combined = combine_out_of_sample(segments, bar_seconds=int(bar_seconds), initial_equity=initial_equity)

    trade_list = []
    for (index, trades), scale in zip(tested, combined.scales, strict=True):
        for t in trades:
            row_t = dict(t, window=index)
            for key in _SCALED_TRADE_KEYS:
                value = row_t.get(key)
                if isinstance(value, str):           # Decimal strings (the pipeline's qty)
                    try:
                        value = float(value)
                    except ValueError:
                        continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    row_t[key] = value * scale
            trade_list.append(row_t)

    in_sample = [r["in_sample"] for r in rows if "error" not in r["in_sample"]]
    in_sample_mean = {key: _mean([r.get(key) for r in in_sample]) for key in WINDOW_METRICS}
    mean_is_return = in_sample_mean["annualized_return"]
    oos_return = combined.report.get("annualized_return")
    efficiency = (oos_return / mean_is_return
                  if mean_is_return is not None and mean_is_return > 0 and oos_return is not None else None)
    return {
        "windows": rows,
        "tested_windows": len(segments),
        "in_sample_mean": in_sample_mean,
        "efficiency": efficiency,
        "out_of_sample": {
            "report": combined.report,
            "equity": [[int(a), float(b)] for a, b in zip(combined.ts, combined.equity, strict=True)],
            "trade_list": trade_list,
        },
    }
