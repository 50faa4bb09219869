"""Backtest runs on the web side [BT-4]: what can be run, on which data, and submitting a run.

The web process only records a ``BacktestRun`` (QUEUED) with its audit row and enqueues
``strategies.tasks_backtest.run_backtest`` after commit; the worker runs it. Nothing here
imports the runners (``strategies.backtests`` reads candle files through the replay adapter,
which the web process never loads [RT-1]).

Data files are chosen from a catalogue the server builds by listing the data directory
(``settings.QUANTWEB_BACKTEST_DATA_DIR``, default ``../shared/data`` beside the repository).
A request names a file by its catalogue id (its path relative to that directory); anything not
in the catalogue is refused, and the worker resolves the id again and checks that the real
path is inside the directory, so no request can reach another file (no ``..``, no absolute
path, no symlink out).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from execution.engine.replay import parse_candle_filename
from strategies.models import BacktestRun, BacktestStatus
from traders import audit
from traders.services import can_operate

logger = logging.getLogger(__name__)

TASK = "strategies.tasks_backtest.run_backtest"

STRATEGIES: dict[str, dict[str, Any]] = {
    "pipeline": {
        "label": "Live pipeline (profile, many markets)",
        "sources": ("sim", "files"),
        "options": ("profile", "costs"),
        # strategies.engine.backtest.bars.BAR_MINUTES (not imported: the web never loads runners)
        "timeframes": ("1m", "3m", "5m", "15m", "30m", "1h"),
        "max_files": 200,
    },
    "sma_cross": {
        "label": "SMA cross (reference, one file)",
        "sources": ("files",),
        "options": ("sma",),
        "max_files": 1,
    },
}
"""The runners a run may name (``strategies.backtests.RUNNERS``; a test keeps both in step):
the data sources each accepts, its option groups, the candle timeframes it runs on (any when
absent) and how many files it takes."""

DATA_SUFFIXES = (".csv", ".csv.gz", ".json", ".json.gz", ".feather")
_NOT_CANDLES = ("trades", "bookticker", "depthdiff", "depthsnapshot", "l2snapshots", "funding_rate")
EXCLUDED_DIRS = ("originals",)
"""``originals/`` holds untouched source copies of files that exist normalised beside it."""
MAX_CATALOGUE = 5000


# -- data catalogue -------------------------------------------------------------------------------

def data_root() -> Path:
    configured = getattr(settings, "QUANTWEB_BACKTEST_DATA_DIR", None)
    return Path(configured) if configured else Path(settings.BASE_DIR).parent / "shared" / "data"


@dataclass(frozen=True, slots=True)
class DataFile:
    id: str            # path relative to the data root, POSIX separators
    exchange: str
    symbol: str
    timeframe: str
    size: int

    @property
    def label(self) -> str:
        return f"{self.id} ({self.exchange} {self.symbol} {self.timeframe}, {self.size / 1e6:.2f} MB)"


def data_catalogue(root: Path | None = None) -> list[DataFile]:
    """Every candle file under the data root whose name gives its market and timeframe, sorted by
    id. Tick, order-book and funding tables, hidden files and ``originals/`` are left out."""
    root = (root or data_root())
    try:
        base = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return []
    out: list[DataFile] = []
    for path in sorted(base.rglob("*")):
        rel = path.relative_to(base)
        name = path.name.lower()
        if (rel.parts[0] in EXCLUDED_DIRS or any(p.startswith(".") for p in rel.parts)
                or not name.endswith(DATA_SUFFIXES) or any(t in name for t in _NOT_CANDLES)):
            continue
        parsed = parse_candle_filename(path.name)
        if parsed is None or parsed.timeframe is None or "#" in parsed.symbol:
            continue                     # unknown layout, or mark/index prices (not tradable)
        try:
            if not path.is_file() or not path.resolve().is_relative_to(base):
                continue
            size = path.stat().st_size
        except OSError:
            continue
        out.append(DataFile(rel.as_posix(), parsed.exchange, parsed.symbol, parsed.timeframe, size))
        if len(out) >= MAX_CATALOGUE:
            break
    return out


def resolve_data_file(file_id: str, root: Path | None = None) -> Path:
    """The real path of a catalogue file; ``ValidationError`` for anything else."""
    root = root or data_root()
    if not isinstance(file_id, str) or file_id not in {f.id for f in data_catalogue(root)}:
        raise ValidationError({"data_files": f"{file_id!r} is not one of the data files offered"})
    base = root.resolve()
    path = (base / file_id).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise ValidationError({"data_files": f"{file_id!r} is not one of the data files offered"})
    return path


# -- submitting -----------------------------------------------------------------------------------

def slow_queue_options() -> dict[str, Any]:
    """django-q2 options for a run: the slow-jobs cluster when one is configured."""
    queue = getattr(settings, "QUANTWEB_SLOW_QUEUE", None)
    return {"cluster": queue} if queue else {}


def submit_backtest(*, user, request: dict[str, Any]) -> BacktestRun:
    """Record a validated request (``api_backtests.BacktestRequestSerializer``) as a QUEUED run
    with its audit row, and enqueue it for a worker after commit."""
    if not can_operate(user):
        raise PermissionDenied("Only operators may run backtests.")
    strategy = request.get("strategy")
    if strategy not in STRATEGIES:
        raise ValidationError({"strategy": f"unknown strategy {strategy!r}"})
    with transaction.atomic():
        run = BacktestRun.objects.create(submitted_by=user, strategy=strategy, options=request)
        audit.record("BACKTEST_SUBMITTED", actor=user, obj=run, payload={"strategy": strategy, "options": request})
        transaction.on_commit(lambda: enqueue(run.pk))
    return run


def enqueue(run_id: int) -> None:
    """Hand the run to the workers; if the queue cannot take it, the run fails with the reason
    (nothing else would ever pick it up)."""
    from django_q.tasks import async_task

    try:
        task_id = async_task(TASK, run_id, task_name=f"backtest-{run_id}", group="backtests",
                             q_options=slow_queue_options())
    except Exception as exc:
        logger.exception("could not enqueue backtest %s", run_id)
        BacktestRun.objects.filter(pk=run_id, status=BacktestStatus.QUEUED).update(
            status=BacktestStatus.FAILED, error=f"could not queue the run: {type(exc).__name__}: {exc}",
            finished_at=timezone.now())
        return
    if isinstance(task_id, str):
        BacktestRun.objects.filter(pk=run_id).update(task_id=task_id[:64])
