"""Backtest engine pieces with no Django and no I/O [BT-3], [BT-5].

* ``reference``: the long-only SMA crossover used to cross-check the backtester against
  backtesting.py and vectorbt (``sma_cross``).
* ``report``: the report metrics computed from an equity curve, its bar times and the trades
  (``compute_report``), and the per-strategy / per-regime breakdowns.
* ``pipeline``: the multi-market backtest of the live tick (``run_backtest``), with
  ``precompute`` (the window-only part of every bar's scan, computed for blocks of bars).
  Imported by their module path (they pull in the tick core).
"""

from strategies.engine.backtest.reference import (
    ReferenceResult,
    ReferenceTrade,
    ReferenceTrades,
    crossings,
    run_long_only,
    sma,
    sma_cross,
)
from strategies.engine.backtest.report import BacktestReport, compute_report

__all__ = [
    "BacktestReport",
    "ReferenceResult",
    "ReferenceTrade",
    "ReferenceTrades",
    "compute_report",
    "crossings",
    "run_long_only",
    "sma",
    "sma_cross",
]
