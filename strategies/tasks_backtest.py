"""The worker side of backtest runs [BT-4]: ``run_backtest(run_id)`` (a django-q2 task).

It claims a QUEUED run (a second delivery finds it taken and does nothing), turns the stored
request into the runner's options, runs ``strategies.backtests.RUNNERS[strategy]`` (or the
walk-forward of it), writes progress as it goes (at most one UPDATE per ``PROGRESS_INTERVAL``
seconds and per ``PROGRESS_STEP`` of progress) and stores the result or a clear error.

A run whose worker dies (timeout, restart, crash) would stay RUNNING; the django-q2 timeout
raises inside the task and is recorded as the failure, and ``fail_stalled_runs`` (called
before each run) fails runs without progress for ``QUANTWEB_BACKTEST_STALE_SECONDS``.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from django.utils import timezone

from strategies.models import BacktestRun, BacktestStatus

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0      # seconds between progress writes
PROGRESS_STEP = 0.01         # and at least this much progress
CHART_POINTS = 5000          # equity / drawdown points kept for the charts
FULL_CURVE = 10**9           # ``equity_points`` asking a runner for its whole equity curve
ERROR_CHARS = 2000


class ProgressWriter:
    """The ``progress`` callback handed to a runner: clamps to [0, 1], never goes backwards and
    writes ``progress`` / ``heartbeat_at`` only when enough time and progress have passed."""

    def __init__(self, run_id: int, *, interval: float = PROGRESS_INTERVAL, step: float = PROGRESS_STEP,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id = run_id
        self.interval = interval
        self.step = step
        self.clock = clock
        self.value = 0.0
        self.written = 0.0
        self.last_write = clock()
        self.writes = 0

    def __call__(self, fraction: float) -> None:
        try:
            fraction = float(fraction)
        except (TypeError, ValueError):
            return
        if not math.isfinite(fraction):
            return
        self.value = max(self.value, min(max(fraction, 0.0), 1.0))
        now = self.clock()
        if self.value - self.written >= self.step and now - self.last_write >= self.interval:
            self.flush(now)

    def flush(self, now: float | None = None) -> None:
        BacktestRun.objects.filter(pk=self.run_id, status=BacktestStatus.RUNNING).update(
            progress=round(self.value, 4), heartbeat_at=timezone.now())
        self.written = self.value
        self.last_write = self.clock() if now is None else now
        self.writes += 1


def run_backtest(run_id: int) -> str:
    """django-q2 entry point (takes the id only). Returns a one-line outcome for the task log."""
    fail_stalled_runs()
    run = _claim(run_id)
    if run is None:
        return f"backtest {run_id}: not queued (already taken or gone)"
    progress = ProgressWriter(run.pk, interval=PROGRESS_INTERVAL, step=PROGRESS_STEP)
    try:
        result = execute(run.strategy, run.options, progress)
    except BaseException as exc:          # noqa: BLE001 - every failure is stored, then re-raised if fatal
        message = _failure_message(exc)
        _finish(run.pk, BacktestStatus.FAILED, error=message)
        if not isinstance(exc, Exception):
            raise                          # the worker's timeout (SystemExit) or an interrupt
        return f"backtest {run_id}: FAILED {message[:200]}"
    _finish(run.pk, BacktestStatus.DONE, result=result)
    return f"backtest {run_id}: DONE"


def fail_stalled_runs() -> int:
    """Fail RUNNING runs whose worker stopped reporting (see ``BacktestRun.is_stalled``)."""
    now = timezone.now()
    count = 0
    for run in BacktestRun.objects.filter(status=BacktestStatus.RUNNING).defer("result", "options"):
        if run.is_stalled(now):
            count += BacktestRun.objects.filter(pk=run.pk, status=BacktestStatus.RUNNING).update(
                status=BacktestStatus.FAILED, finished_at=now,
                error="no progress reported for too long: the worker running it stopped "
                      "(timeout, restart or crash); submit it again")
    return count


def _claim(run_id: int) -> BacktestRun | None:
    """QUEUED -> RUNNING in one conditional UPDATE: of two deliveries only one gets the row
    (on every database, SQLite included)."""
    now = timezone.now()
    taken = BacktestRun.objects.filter(pk=run_id, status=BacktestStatus.QUEUED).update(
        status=BacktestStatus.RUNNING, started_at=now, heartbeat_at=now, progress=0.0)
    if not taken:
        return None
    return BacktestRun.objects.defer("result").get(pk=run_id)


def _finish(run_id: int, state: str, *, result: dict | None = None, error: str = "") -> None:
    fields: dict[str, Any] = {"status": state, "finished_at": timezone.now(), "error": error[:ERROR_CHARS]}
    if state == BacktestStatus.DONE:
        fields.update(progress=1.0, result=result)
    BacktestRun.objects.filter(pk=run_id, status=BacktestStatus.RUNNING).update(**fields)


def _failure_message(exc: BaseException) -> str:
    """The operator's input problems as they are; anything else named as an internal error."""
    from strategies.engine.backtest.walkforward import WalkForwardError

    try:
        from strategies.backtests import BacktestInputError
    except Exception:                      # the runners cannot even be imported
        BacktestInputError = WalkForwardError  # noqa: N806
    if isinstance(exc, (BacktestInputError, WalkForwardError)):
        message = str(exc)
    elif isinstance(exc, Exception):
        logger.exception("backtest failed")
        message = f"internal error ({type(exc).__name__}): {exc}"
    else:
        message = f"stopped by the worker ({type(exc).__name__}): {exc}".rstrip(": ")
    # Files by their catalogue ids, as everywhere else (no server paths in pages or responses).
    from strategies.services_backtest import data_root

    for root in {str(data_root()), str(data_root().resolve())}:
        message = message.replace(root.rstrip("/") + "/", "")
    return message


# -- running ----------------------------------------------------------------------------------------

def cli_defaults() -> dict[str, Any]:
    """Every option ``manage.py backtest`` defines, at its default: runners read options by key,
    so a stored run gets the same keys the command would give it."""
    from django.core.management.base import BaseCommand

    from strategies.management.commands.backtest import Command

    base = {a.dest for a in BaseCommand().create_parser("manage.py", "x")._actions}
    parser = Command().create_parser("manage.py", "backtest")
    return {a.dest: a.default for a in parser._actions
            if a.dest not in base and a.default is not argparse.SUPPRESS}


def runner_options(strategy: str, request: dict[str, Any]) -> dict[str, Any]:
    """The runner's options for a stored request (``services_backtest`` validated it; the data
    files are resolved again here, inside the data directory only)."""
    from strategies.backtests import BacktestInputError
    from strategies.services_backtest import resolve_data_file

    options = cli_defaults()
    source = request.get("source", "files")
    options.update(strategy=strategy, source=source, fee=request["fee"], cash=request["cash"],
                   start=request.get("start"), end=request.get("end"), no_trade_list=False, no_equity=False,
                   equity_points=CHART_POINTS)
    if source == "files":
        try:
            options["data"] = [str(resolve_data_file(f)) for f in request.get("data_files") or []]
        except Exception as exc:        # ValidationError: the file left the catalogue since submission
            messages = getattr(exc, "messages", [str(exc)])
            raise BacktestInputError("; ".join(messages)) from None
    else:
        sim = request.get("sim") or {}
        options.update(data=None, seed=sim.get("seed"), n_markets=sim.get("markets"), days=sim.get("days"))
    for key in ("fast", "slow", "profile", "latency_ms", "participation", "spread_bps"):
        if request.get(key) is not None:
            options[key] = request[key]
    return options


def execute(strategy: str, request: dict[str, Any], progress: Callable[[float], None]) -> dict[str, Any]:
    """Run a stored request and return the result to store (curves thinned for the charts)."""
    from strategies.backtests import RUNNERS, BacktestInputError

    runner = RUNNERS.get(strategy)
    if runner is None:
        raise BacktestInputError(f"unknown strategy {strategy!r} (this worker has: {', '.join(sorted(RUNNERS))})")
    options = runner_options(strategy, request)
    wf = request.get("walk_forward")
    result = walk_forward(runner, options, wf, progress) if wf else runner(options, progress=progress)
    return _json_safe(chart_ready(data_ids(result)))


def data_ids(result: dict[str, Any]) -> dict[str, Any]:
    """Name the data files by their catalogue ids in the stored result (pages and API responses
    never show the server's directory layout)."""
    from strategies.services_backtest import data_root

    data = result.get("data")
    if not isinstance(data, dict):
        return result
    root = data_root().resolve()

    def relative(path: Any) -> Any:
        try:
            return Path(str(path)).resolve().relative_to(root).as_posix()
        except (ValueError, OSError):
            return path

    if "file" in data:
        data["file"] = relative(data["file"])
    if isinstance(data.get("files"), list):
        data["files"] = [relative(p) for p in data["files"]]
    return result


def walk_forward(runner, options: dict[str, Any], spec: dict[str, Any],
                 progress: Callable[[float], None]) -> dict[str, Any]:
    """The walk-forward of one runner (``strategies.engine.backtest.walkforward``). Without an
    explicit period, a full-period run first finds the data's span (it is reported too)."""
    from strategies.backtests import BacktestInputError, parse_time
    from strategies.engine.backtest.walkforward import run_walk_forward, split_windows

    start, end = parse_time(options.get("start"), "start"), parse_time(options.get("end"), "end")
    full = None
    share = 0.0
    if start is None or end is None:
        share = 0.1
        full = runner(dict(options), progress=lambda f: progress(share * f))
        report = full.get("report") or {}
        start = start if start is not None else report.get("start_ts")
        end = end if end is not None else report.get("end_ts")
        if start is None or end is None:
            raise BacktestInputError("walk-forward needs a period: give start and end")
    windows = split_windows(int(start), int(end), train=spec["train_seconds"], test=spec["test_seconds"],
                            step=spec["step_seconds"], anchored=spec["anchored"])
    first: dict[str, Any] = {}

    def remember(opts, progress=None):
        result = runner(opts, progress=progress)
        if not first:
            first.update(params=result.get("params"), data=result.get("data"))
        return result

    # Each window's run returns its whole equity curve (not a chart's worth): the combined
    # out-of-sample report is computed on it.
    options = dict(options, equity_points=FULL_CURVE)
    wf = run_walk_forward(remember, options, windows, initial_equity=float(options["cash"]),
                          progress=lambda f: progress(share + (1 - share) * f), window_error=BacktestInputError)
    oos = wf.pop("out_of_sample")
    report = oos["report"]
    out: dict[str, Any] = {
        "strategy": options["strategy"],
        "params": first.get("params") or (full or {}).get("params"),
        "data": (full or {}).get("data") or first.get("data"),
        "bars": report["bars"],
        "trades": report["trades"],
        "final_equity": report["final_equity"],
        "report": report,
        "equity": oos["equity"],
        "trade_list": oos["trade_list"],
        "walk_forward": {**spec, **wf},
    }
    if full is not None:
        out["walk_forward"]["full_period"] = {k: (full.get("report") or {}).get(k) for k in
                                              ("start_ts", "end_ts", "bars", "total_return", "annualized_return",
                                               "sharpe", "max_drawdown", "trades")}
    return out


def chart_ready(result: dict[str, Any]) -> dict[str, Any]:
    """Replace the full ``equity`` series by chart curves: ``equity`` and ``drawdown``
    ([[ts, value], ...], at most ``CHART_POINTS``, extremes kept; ``equity_points`` = full
    length). A result without an equity series gets a realised-equity step curve from its
    closed trades (``equity_source: "trades"``) so the page still has a chart."""
    from strategies.engine.backtest.curves import chart_curves

    equity = result.get("equity")
    source = "bars"
    if not equity:
        equity, source = _equity_from_trades(result), "trades"
    if not equity:
        result.pop("equity", None)
        return result
    arr = np.asarray(equity, dtype=np.float64)
    ts, values, dd = chart_curves(arr[:, 0].astype(np.int64), arr[:, 1], CHART_POINTS)
    # A runner may have thinned its curve already (``equity_points``): its bar count is the length.
    result["equity_points"] = max(len(arr), int(result.get("bars") or 0)) if source == "bars" else len(arr)
    result["equity_source"] = source
    result["equity"] = [[int(t), float(v)] for t, v in zip(ts, values, strict=True)]
    result["drawdown"] = [[int(t), round(float(d), 6)] for t, d in zip(ts, dd, strict=True)]
    return result


def _equity_from_trades(result: dict[str, Any]) -> list[list[float]]:
    from strategies.engine.backtest.walkforward import epoch_seconds

    report = result.get("report") or {}
    initial = report.get("initial_equity")
    start = report.get("start_ts")
    closed = sorted((epoch_seconds(t["exit_time"]), float(t["pnl"])) for t in result.get("trade_list") or ()
                    if not t.get("is_open") and t.get("exit_time") is not None and t.get("pnl") is not None)
    if not initial or start is None or not closed:
        return []
    points = [[int(start), float(initial)]]
    equity = float(initial)
    for ts, pnl in closed:
        equity += pnl
        if ts <= points[-1][0]:
            points[-1][1] = equity
        else:
            points.append([ts, equity])
    return points if all(p[1] > 0 for p in points) else []


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON has neither); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
