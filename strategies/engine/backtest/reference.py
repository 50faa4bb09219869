"""Reference strategy for cross-checking the backtester [BT-5]: a long-only SMA crossover.

It is deliberately simple and fully specified, so that backtesting.py and vectorbt configured
the same way give the same trades and the same final equity (``tests/strategies/
test_backtest_reference.py``; the configuration of each library is in ``docs/backtesting.md``).

Conventions (all of them matter for the equality):

* Indicators: ``sma(close, n)`` is pandas' ``Series.rolling(n).mean()`` (the SMA of
  backtesting.py's own examples; compensated summation, exact on flat windows). NaN for the
  first ``n - 1`` bars.
* Signals are decided at bar ``i``'s close. With ``d = fast - slow`` and ``side`` the sign of
  the last non-zero ``d`` before bar ``i``: buy when ``d[i] > 0`` and ``side < 0``; sell when
  ``d[i] < 0`` and ``side > 0``. A cross through an exact tie (``-, 0, +``) is a crossing, at the
  first bar on the new side; a touch that turns back (``-, 0, -``) is not. NaN (warm-up) has no
  side, so the first possible signal is at bar ``slow`` and the first trend seen is not traded
  until it is crossed. This is vectorbt's ``crossed_above``/``crossed_below`` as far as a
  long-only position can tell (its extra signal after a touch that turns back always repeats the
  current side, and is ignored); ``backtesting.lib.crossover`` (strict on two consecutive bars)
  would miss the crossings through a tie, which are common on integer-priced KRW markets, so the
  backtesting.py strategy of the cross-check tracks the last non-zero side itself.
* A buy signal while long and a sell signal while flat are ignored (no pyramiding, no shorts).
* Fills happen at the NEXT bar's open (``open[i + 1]``); a signal on the last bar is never filled.
  No slippage, no spread.
* Fee: a proportional ``fee`` of the traded value on each side. A buy spends all available cash
  ``C`` on a fractional quantity ``qty = C / (open * (1 + fee))`` (so price plus fee equals the
  cash, nothing left over); a sell receives ``qty * open * (1 - fee)``. This is backtesting.py's
  sizing (``size = margin_available // (price + commission(price))``, taken to fractional units
  with ``FractionalBacktest``) and vectorbt's ``size=np.inf`` buy with ``fees``.
* A position still open after the last bar is kept and marked at the last close, without an
  exit fee (what backtesting.py with ``finalize_trades=False`` and vectorbt report as final
  equity). It appears in ``trades`` with ``is_open=True`` and the last bar as its mark.
* Equity at a bar is the cash, or ``qty * close`` while long; a fill at bar ``j``'s open is
  already in bar ``j``'s equity.

No Python loop runs over bars or trades: the signals are vectorised per bar, the position state
machine works on the signal events (each change of signal type toggles the position, so the
fills are the events whose type differs from the previous event's), cash compounds as a
``cumprod`` of the round-trip ratios, and the trades come back as columns (``ReferenceTrades``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pandas as pd

__all__ = ["ReferenceResult", "ReferenceTrade", "ReferenceTrades", "crossings", "run_long_only", "sma", "sma_cross"]


@dataclass(frozen=True, slots=True)
class ReferenceTrade:
    """One round trip. Bars are indices into the input arrays, ts their bar-open epoch seconds.

    ``entry_bar``/``exit_bar`` are the FILL bars (the bar after the signal). ``pnl`` is net of
    both fees; ``return_`` is ``pnl`` over the cash spent on entry (value plus entry fee). An
    open trade is marked at the last close: ``exit_bar`` is the last bar, ``exit_price`` the
    last close, and ``pnl`` carries no exit fee.
    """

    entry_bar: int
    exit_bar: int
    entry_ts: int
    exit_ts: int
    entry_price: float
    exit_price: float
    qty: float
    entry_fee: float
    exit_fee: float
    pnl: float
    return_: float
    is_open: bool = False

    @property
    def entry_value(self) -> float:
        return self.qty * self.entry_price

    @property
    def exit_value(self) -> float:
        """Traded value of the exit (0 while the trade is open: nothing was sold)."""
        return 0.0 if self.is_open else self.qty * self.exit_price

    def to_dict(self) -> dict[str, object]:
        return {"entry_bar": self.entry_bar, "exit_bar": self.exit_bar, "entry_ts": self.entry_ts,
                "exit_ts": self.exit_ts, "entry_price": self.entry_price, "exit_price": self.exit_price,
                "qty": self.qty, "entry_fee": self.entry_fee, "exit_fee": self.exit_fee, "pnl": self.pnl,
                "return": self.return_, "is_open": self.is_open}


@dataclass(frozen=True, slots=True, eq=False)
class ReferenceTrades(Sequence[ReferenceTrade]):
    """The trades of a run as columns (numpy ``[trades]`` each); indexing gives ``ReferenceTrade``.

    Columnar so that a run with thousands of trades builds no Python object per trade.
    ``has_open``: the last trade is still open (marked at the last close).
    """

    entry_bar: np.ndarray
    exit_bar: np.ndarray
    entry_ts: np.ndarray
    exit_ts: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    qty: np.ndarray
    entry_fee: np.ndarray
    exit_fee: np.ndarray
    pnl: np.ndarray
    return_: np.ndarray
    has_open: bool = False

    def __len__(self) -> int:
        return len(self.entry_bar)

    @overload
    def __getitem__(self, k: int) -> ReferenceTrade: ...
    @overload
    def __getitem__(self, k: slice) -> list[ReferenceTrade]: ...

    def __getitem__(self, k: int | slice) -> ReferenceTrade | list[ReferenceTrade]:
        n = len(self)
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(n))]
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError("trade index out of range")
        return ReferenceTrade(
            entry_bar=int(self.entry_bar[k]), exit_bar=int(self.exit_bar[k]),
            entry_ts=int(self.entry_ts[k]), exit_ts=int(self.exit_ts[k]),
            entry_price=float(self.entry_price[k]), exit_price=float(self.exit_price[k]),
            qty=float(self.qty[k]), entry_fee=float(self.entry_fee[k]), exit_fee=float(self.exit_fee[k]),
            pnl=float(self.pnl[k]), return_=float(self.return_[k]),
            is_open=bool(self.has_open and k == n - 1))

    @property
    def is_open(self) -> np.ndarray:
        out = np.zeros(len(self), dtype=bool)
        if self.has_open:
            out[-1] = True
        return out

    @property
    def entry_value(self) -> np.ndarray:
        return self.qty * self.entry_price

    @property
    def exit_value(self) -> np.ndarray:
        """Traded value of each exit (0 for the open trade: nothing was sold)."""
        return np.where(self.is_open, 0.0, self.qty * self.exit_price)


@dataclass(frozen=True, slots=True, eq=False)
class ReferenceResult:
    """Outcome of a reference run.

    ``equity``: float64 ``[bars]`` mark-to-market equity at each bar's close.
    ``position_value``: float64 ``[bars]`` value of the position at each bar's close (0 when flat).
    ``trades``: closed round trips in time order, then the open one if any.
    """

    bars: int
    trades: ReferenceTrades
    final_equity: float
    equity: np.ndarray
    position_value: np.ndarray
    initial_cash: float
    fee: float

    @property
    def closed_trades(self) -> list[ReferenceTrade]:
        return [t for t in self.trades if not t.is_open]

    @property
    def fees_paid(self) -> float:
        return float(self.trades.entry_fee.sum() + self.trades.exit_fee.sum())

    @property
    def traded_value(self) -> float:
        """Sum of the traded value of every fill (entries and exits)."""
        return float(self.trades.entry_value.sum() + self.trades.exit_value.sum())


def _as_prices(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D [bars], got shape {a.shape}")
    if not np.all(np.isfinite(a)) or (a.size and a.min() <= 0):
        raise ValueError(f"{name} must be finite and positive (fill or drop bad bars first)")
    return a


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over ``n`` bars, NaN for the first ``n - 1`` (pandas rolling mean)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return pd.Series(x, copy=False).rolling(n).mean().to_numpy()


def crossings(fast: np.ndarray, slow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bars where ``fast`` crosses above / below ``slow`` (bool ``[bars]`` each; module docstring)."""
    d = np.asarray(fast, dtype=np.float64) - np.asarray(slow, dtype=np.float64)
    n = len(d)
    with np.errstate(invalid="ignore"):
        sign = (d > 0).astype(np.int8) - (d < 0).astype(np.int8)      # NaN and ties: 0
    # Side of the last non-zero difference up to each bar (0 before the first one).
    last = np.maximum.accumulate(np.where(sign != 0, np.arange(n), -1)) if n else np.empty(0, np.int64)
    side = np.where(last >= 0, sign[np.maximum(last, 0)], 0)
    prev_side = np.concatenate(([0], side[:-1])) if n else side
    return (sign > 0) & (prev_side < 0), (sign < 0) & (prev_side > 0)


def run_long_only(open_: np.ndarray, close: np.ndarray, buy: np.ndarray, sell: np.ndarray, fee: float,
                  cash: float, ts: np.ndarray | None = None) -> ReferenceResult:
    """Execute long-only all-in signals with the conventions of the module docstring.

    ``buy``/``sell``: bool ``[bars]`` decided at each bar's close (both true on one bar is an
    error). ``ts``: int64 ``[bars]`` bar-open epoch seconds (default: the bar index).
    """
    open_ = _as_prices("open", open_)
    close = _as_prices("close", close)
    n = len(close)
    buy = np.asarray(buy, dtype=bool)
    sell = np.asarray(sell, dtype=bool)
    if len(open_) != n or buy.shape != (n,) or sell.shape != (n,):
        raise ValueError("open, close, buy and sell must have the same length")
    if np.any(buy & sell):
        raise ValueError("a bar cannot signal both buy and sell")
    if not (0.0 <= fee < 1.0):
        raise ValueError("fee must be in [0, 1)")
    if not (np.isfinite(cash) and cash > 0):
        raise ValueError("cash must be positive")
    ts = np.arange(n, dtype=np.int64) if ts is None else np.asarray(ts, dtype=np.int64)
    if ts.shape != (n,):
        raise ValueError("ts must have one entry per bar")
    if n > 1 and not np.all(np.diff(ts) > 0):
        raise ValueError("ts must be strictly increasing")

    # Signal events that can still be filled (the last bar has no next open).
    events = np.flatnonzero((buy | sell)[: max(n - 1, 0)])
    is_buy = buy[events]
    # Flat at the start; an event changes the position iff its type differs from the previous one.
    toggles = events[is_buy != np.concatenate(([False], is_buy[:-1]))]
    entry_bars = toggles[0::2] + 1
    exit_bars = toggles[1::2] + 1
    n_trades = len(entry_bars)
    has_open = n_trades > len(exit_bars)

    entry_px = open_[entry_bars]
    exit_px = np.concatenate((open_[exit_bars], close[-1:] if has_open else []))
    # Cash compounds by the net round-trip ratio of each closed trade.
    ratio = (1.0 - fee) * exit_px / ((1.0 + fee) * entry_px)
    cash_before = cash * np.concatenate(([1.0], np.cumprod(ratio[:-1]))) if n_trades else np.empty(0)
    qty = cash_before / (entry_px * (1.0 + fee))
    entry_fee = qty * entry_px * fee
    exit_fee = qty * exit_px * fee
    if has_open:
        exit_fee[-1] = 0.0
    value_out = qty * exit_px - exit_fee           # proceeds, or the mark of the open trade
    pnl = value_out - cash_before
    final_equity = float(value_out[-1]) if n_trades else float(cash)

    # Equity per bar: the trade entered at or before each bar is held until its exit fill bar.
    exit_all = np.concatenate((exit_bars, [n] if has_open else [])).astype(np.int64)
    # Fill bars are all distinct (a signal fills on the next bar, signals alternate).
    step = np.zeros(n + 1, dtype=np.int8)
    step[entry_bars] = 1
    seg = np.cumsum(step[:n], dtype=np.int64) - 1     # index of the latest entry, -1 before any
    step[exit_all] = -1
    held = np.cumsum(step[:n], dtype=np.int64) > 0
    if n_trades:
        seg_c = np.maximum(seg, 0)
        position_value = np.where(held, qty[seg_c] * close, 0.0)
        equity = np.where(held, position_value, np.where(seg >= 0, value_out[seg_c], cash))
    else:
        position_value = np.zeros(n)
        equity = np.full(n, float(cash))

    last = max(n - 1, 0)
    exit_bar = exit_all.copy()
    if has_open:
        exit_bar[-1] = last
    trades = ReferenceTrades(
        entry_bar=entry_bars.astype(np.int64), exit_bar=exit_bar, entry_ts=ts[entry_bars], exit_ts=ts[exit_bar],
        entry_price=entry_px, exit_price=exit_px, qty=qty, entry_fee=entry_fee, exit_fee=exit_fee, pnl=pnl,
        return_=pnl / cash_before, has_open=bool(has_open))
    return ReferenceResult(bars=n, trades=trades, final_equity=final_equity, equity=equity,
                           position_value=position_value, initial_cash=float(cash), fee=float(fee))


def sma_cross(open_: np.ndarray, close: np.ndarray, fast: int, slow: int, fee: float, cash: float,
              ts: np.ndarray | None = None) -> ReferenceResult:
    """Long-only SMA(fast)/SMA(slow) crossover on one market (conventions: module docstring).

    ``open_``/``close``: float64 ``[bars]``, finite and positive, in time order.
    ``ts``: optional int64 ``[bars]`` bar-open epoch seconds, used for the trade times.
    """
    if not (isinstance(fast, int | np.integer) and isinstance(slow, int | np.integer)):
        raise TypeError("fast and slow must be integers")
    if not 1 <= fast < slow:
        raise ValueError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
    close = _as_prices("close", close)
    up, down = crossings(sma(close, int(fast)), sma(close, int(slow)))
    return run_long_only(open_, close, up, down, fee, cash, ts)
