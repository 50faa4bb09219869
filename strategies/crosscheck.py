"""The [BT-5] reference backtesters configured exactly like ``strategies.engine.backtest.reference``.

One definition serves the cross-check test (same trades, same final equity) and the benchmark
(speed on the same work), so the two can never drift apart. backtesting.py and vectorbt are
test-only dependencies: each runner imports its library when built and raises ImportError when
it is absent. A runner does its setup once and returns a callable that does one full run.

Conventions (docs/backtesting.md): decide at a bar's close, fill at the next bar's open, all
cash in fractional quantity, proportional fee per side, no slippage, long only, an open position
at the end is kept and valued at the last close.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CrossResult:
    closed: list[tuple[int, int]]     # (entry bar, exit bar) of every closed trade
    trades: int                       # closed trades plus an open one at the end
    final_equity: float
    equity: np.ndarray


def _index(ts: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(ts, unit="s")   # tz-naive UTC: a tz-aware index is ~100x slower in vectorbt


def backtesting_py_runner(ts: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                          close: np.ndarray, volume: np.ndarray, fast: int, slow: int, fee: float,
                          cash: float) -> Callable[[], CrossResult]:
    """backtesting.py with ``FractionalBacktest`` (whole units of 2**-30: a power of two keeps
    the price scaling exact, so its pandas SMA sees the same ties as ours). Its ``crossover`` is
    strict on two consecutive bars and misses a cross through an exact tie, so the strategy
    tracks the side of the last non-zero difference itself."""
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest

    def sma_indicator(x: np.ndarray, n: int) -> pd.Series:
        return pd.Series(x).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self) -> None:
            self.sma_fast = self.I(sma_indicator, self.data.Close, fast)
            self.sma_slow = self.I(sma_indicator, self.data.Close, slow)
            self.side = 0

        def next(self) -> None:
            prev = self.sma_fast[-2] - self.sma_slow[-2]
            if prev > 0:
                self.side = 1
            elif prev < 0:
                self.side = -1
            d = self.sma_fast[-1] - self.sma_slow[-1]
            if d > 0 and self.side < 0 and not self.position:
                self.buy()                       # size: all available cash
            elif d < 0 and self.side > 0 and self.position:
                self.position.close()

    data = pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close,
                         "Volume": np.nan_to_num(volume)}, index=_index(ts))

    def run() -> CrossResult:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "some trades remain open", progress-bar notes
            bt = FractionalBacktest(data, SmaCross, cash=cash, commission=fee, trade_on_close=False,
                                    exclusive_orders=True, finalize_trades=False, fractional_unit=2.0**-30)
            stats = bt.run()
        trades = stats["_trades"]
        closed = list(zip(trades["EntryBar"].astype(int).tolist(), trades["ExitBar"].astype(int).tolist(),
                          strict=True))
        still_open = int(stats["_strategy"].position.size != 0)
        return CrossResult(closed, len(closed) + still_open, float(stats["Equity Final [$]"]),
                           stats["_equity_curve"]["Equity"].to_numpy())

    return run


def vectorbt_runner(ts: np.ndarray, open_: np.ndarray, close: np.ndarray, fast: int, slow: int, fee: float,
                    cash: float, signals: tuple[np.ndarray, np.ndarray] | None = None) -> Callable[[], CrossResult]:
    """vectorbt: its own MA and crossings (unless ``signals`` are given), shifted one bar so the
    order executes on the next bar at ``price=open``; all cash (``size=np.inf``), long only."""
    import vectorbt as vbt

    index = _index(ts)
    close_s = pd.Series(close, index=index)
    open_s = pd.Series(open_, index=index)

    def run() -> CrossResult:
        if signals is None:
            ma_fast = vbt.MA.run(close_s, fast)
            ma_slow = vbt.MA.run(close_s, slow)
            entries = ma_fast.ma_crossed_above(ma_slow).to_numpy()
            exits = ma_fast.ma_crossed_below(ma_slow).to_numpy()
        else:
            entries, exits = signals
        entries = np.concatenate(([False], entries[:-1]))   # decide at close, fill next open
        exits = np.concatenate(([False], exits[:-1]))
        pf = vbt.Portfolio.from_signals(close_s, entries, exits, price=open_s, fees=fee, init_cash=cash,
                                        size=np.inf, direction="longonly", accumulate=False)
        rec = pf.trades.records
        done = rec[rec["status"] == 1]
        closed = list(zip(done["entry_idx"].astype(int).tolist(), done["exit_idx"].astype(int).tolist(), strict=True))
        return CrossResult(closed, len(rec), float(pf.final_value()), pf.value().to_numpy())

    return run
