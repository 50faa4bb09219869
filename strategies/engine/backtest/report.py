"""Backtest report metrics [BT-3] from an equity curve, its bar times and the trades.

Pure: no Django, no I/O, no clock. Inputs:

* ``equity``: float64 ``[bars]`` mark-to-market equity at each bar's CLOSE (positive).
* ``ts``: int64 ``[bars]`` bar-OPEN epoch seconds, strictly increasing.
* ``trades``: objects with ``entry_ts``, ``exit_ts``, ``pnl``, ``return_``, ``is_open``,
  ``entry_value`` and ``exit_value`` (``ReferenceTrade`` has them). Fills happen at a bar's
  open, so a trade is in the market on the bars with ``entry_ts <= ts < exit_ts``.
* ``initial_equity``: the equity before the first bar (default ``equity[0]``).

Formulas (crypto trades every day: a year is 365 days of ``bar_seconds`` bars):

=========================  ==================================================================
``period_days``            (ts[-1] + bar_seconds - ts[0]) / 86400 (first open to last close)
``total_return``           final / initial - 1
``annualized_return``      (final / initial) ** (365 / period_days) - 1 (compound, CAGR)
``r_t``                    per-bar simple returns of [initial, equity...] (``initial_equity``
                           given) or of ``equity`` alone; ``P = 365 * 86400 / bar_seconds``
``volatility``             std(r, ddof=1) * sqrt(P)
``sharpe``                 mean(r) / std(r, ddof=1) * sqrt(P)   (risk-free rate 0)
``sortino``                mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(P)   (target 0, all
                           bars in the denominator's mean)
``max_drawdown``           max over t of 1 - E_t / max_{s<=t} E_s (a positive fraction)
``calmar``                 annualized_return / max_drawdown
drawdown durations         time from the peak's close (the start for the initial equity) to
                           the close of the first bar back at or above the peak (or the last
                           bar if never recovered); ``max_drawdown_duration_days`` is that of
                           the deepest drawdown, ``longest_drawdown_days`` the longest one
``win_rate``               closed trades with pnl > 0 / closed trades
``profit_factor``          sum of winning pnl / -sum of losing pnl (inf without losses)
``expectancy``             mean pnl per closed trade (quote currency); ``avg_trade_return``
                           the mean of the trades' returns
``avg_holding_hours``      mean (exit_ts - entry_ts) of closed trades / 3600
``exposure``               fraction of bars holding a position at the close
``avg_gross_exposure``     mean of position value / equity (needs ``position_value``)
``turnover``               traded value (entries + exits) / mean equity, over the whole period;
                           ``annual_turnover`` = turnover * 365 / period_days
``trades_per_day``         trades entered (closed and open) / period_days
=========================  ==================================================================

Undefined values (a ratio over zero, no closed trades) are NaN; ``to_dict`` turns NaN and
infinities into ``None`` so the result is valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

__all__ = ["BacktestReport", "TradeLike", "bar_breakdown", "compute_report", "drawdown", "trade_breakdown",
           "SECONDS_PER_YEAR"]

SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365 * SECONDS_PER_DAY


class TradeLike(Protocol):
    @property
    def entry_ts(self) -> int: ...
    @property
    def exit_ts(self) -> int: ...
    @property
    def pnl(self) -> float: ...
    @property
    def return_(self) -> float: ...
    @property
    def is_open(self) -> bool: ...
    @property
    def entry_value(self) -> float: ...
    @property
    def exit_value(self) -> float: ...


@dataclass(frozen=True, slots=True)
class BacktestReport:
    """Report metrics (formulas in the module docstring). Returns and drawdowns are fractions."""

    start_ts: int
    end_ts: int                       # close time of the last bar
    bars: int
    bar_seconds: int
    period_days: float
    initial_equity: float
    final_equity: float
    total_return: float
    annualized_return: float
    volatility: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float
    max_drawdown_duration_days: float
    longest_drawdown_days: float
    trades: int
    closed_trades: int
    win_rate: float
    profit_factor: float
    expectancy: float
    avg_trade_return: float
    avg_holding_hours: float
    exposure: float
    avg_gross_exposure: float
    turnover: float
    annual_turnover: float
    trades_per_day: float

    def to_dict(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.nan if num == 0 else math.copysign(math.inf, num)
    return num / den


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Drawdown at each point: ``1 - equity / running peak`` (0 at a new high)."""
    equity = np.asarray(equity, dtype=np.float64)
    return 1.0 - equity / np.maximum.accumulate(equity)


def _drawdown_durations(curve: np.ndarray, times: np.ndarray) -> tuple[float, float, float]:
    """(max drawdown, duration of the deepest drawdown, longest drawdown duration) in seconds."""
    peak = np.maximum.accumulate(curve)
    dd = 1.0 - curve / peak
    under = curve < peak
    if not under.any():
        return 0.0, 0.0, 0.0
    # Runs of consecutive underwater points: [starts[k], ends[k]] inclusive.
    edges = np.diff(np.concatenate(([0], under.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    last = len(curve) - 1
    stop = np.minimum(ends + 1, last)          # recovery point, or the last point
    durations = times[stop] - times[starts - 1]  # starts >= 1: the first point is never underwater
    deepest = int(np.argmax(dd))
    run = int(np.searchsorted(starts, deepest, side="right") - 1)
    return float(dd[deepest]), float(durations[run]), float(durations.max())


_TRADE_FIELDS = ("entry_ts", "exit_ts", "pnl", "return_", "is_open", "entry_value", "exit_value")


def _trade_columns(trades: Sequence[TradeLike]) -> dict[str, np.ndarray]:
    """The trade fields as arrays; a columnar container (``ReferenceTrades``) is read directly."""
    if all(isinstance(getattr(trades, f, None), np.ndarray) for f in _TRADE_FIELDS):
        return {f: np.asarray(getattr(trades, f)) for f in _TRADE_FIELDS}
    rows = list(trades)
    return {f: np.array([getattr(t, f) for t in rows],
                        dtype=bool if f == "is_open" else np.int64 if f.endswith("_ts") else np.float64)
            for f in _TRADE_FIELDS}


def compute_report(equity: np.ndarray, ts: np.ndarray, trades: Sequence[TradeLike] = (), *,
                   bar_seconds: int | None = None, initial_equity: float | None = None,
                   position_value: np.ndarray | None = None,
                   traded_value: float | None = None) -> BacktestReport:
    """All report metrics of one run (see the module docstring for inputs and formulas).

    ``bar_seconds``: the bar interval (default: the most common spacing of ``ts``).
    ``position_value``: float64 ``[bars]`` gross position value at each close (exposure).
    ``traded_value``: total traded value (default: entry plus exit values of the trades).
    """
    equity = np.asarray(equity, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.int64)
    n = len(equity)
    if equity.ndim != 1 or n == 0:
        raise ValueError("equity must be a non-empty 1-D array")
    if ts.shape != equity.shape:
        raise ValueError("ts must have one entry per bar")
    if not np.all(np.isfinite(equity)) or equity.min() <= 0:
        raise ValueError("equity must be finite and positive")
    if n > 1 and not np.all(np.diff(ts) > 0):
        raise ValueError("ts must be strictly increasing")
    if bar_seconds is None:
        if n < 2:
            raise ValueError("bar_seconds is needed with a single bar")
        steps, counts = np.unique(np.diff(ts), return_counts=True)
        bar_seconds = int(steps[np.argmax(counts)])
    if bar_seconds <= 0:
        raise ValueError("bar_seconds must be positive")
    initial = float(equity[0]) if initial_equity is None else float(initial_equity)
    if not (math.isfinite(initial) and initial > 0):
        raise ValueError("initial_equity must be positive")

    # Equity points and their times: the initial equity sits at the first bar's open.
    close_times = ts + bar_seconds
    if initial_equity is None:
        curve, times = equity, close_times
    else:
        curve = np.concatenate(([initial], equity))
        times = np.concatenate((ts[:1], close_times))
    returns = curve[1:] / curve[:-1] - 1.0

    period_s = float(ts[-1] + bar_seconds - ts[0])
    period_days = period_s / SECONDS_PER_DAY
    years = period_s / SECONDS_PER_YEAR
    final = float(equity[-1])
    growth = final / initial
    try:
        annualized = math.exp(math.log(growth) / years) - 1.0
    except OverflowError:
        annualized = math.inf
    periods_per_year = SECONDS_PER_YEAR / bar_seconds
    if len(returns) > 1:
        mean = float(returns.mean())
        std = float(returns.std(ddof=1))
        downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
        scale = math.sqrt(periods_per_year)
        volatility = std * scale
        sharpe = _ratio(mean, std) * scale
        sortino = _ratio(mean, downside) * scale
    else:
        volatility = sharpe = sortino = math.nan
    max_dd, max_dd_s, longest_s = _drawdown_durations(curve, times)
    calmar = _ratio(annualized, max_dd)

    cols = _trade_columns(trades)
    closed = ~cols["is_open"]
    n_closed = int(closed.sum())
    pnl = cols["pnl"][closed]
    if n_closed:
        win_rate = float(np.mean(pnl > 0))
        profit_factor = _ratio(float(pnl[pnl > 0].sum()), -float(pnl[pnl < 0].sum()))
        expectancy = float(pnl.mean())
        avg_trade_return = float(cols["return_"][closed].mean())
        held = (cols["exit_ts"][closed] - cols["entry_ts"][closed]).astype(np.float64)
        avg_holding_hours = float(held.mean()) / 3600.0
    else:
        win_rate = profit_factor = expectancy = avg_trade_return = avg_holding_hours = math.nan

    if position_value is not None:
        pv = np.asarray(position_value, dtype=np.float64)
        if pv.shape != equity.shape:
            raise ValueError("position_value must have one entry per bar")
        exposure = float(np.mean(pv > 0))
        avg_gross_exposure = float(np.mean(np.abs(pv) / equity))
    else:
        # In the market on bars with entry_ts <= ts < exit_ts (open trades: to the end).
        marks = np.zeros(n + 1, dtype=np.int64)
        starts = np.searchsorted(ts, cols["entry_ts"], side="left")
        stops = np.where(cols["is_open"], n, np.searchsorted(ts, cols["exit_ts"], side="left"))
        np.add.at(marks, starts, 1)
        np.add.at(marks, stops, -1)
        exposure = float(np.mean(np.cumsum(marks[:-1]) > 0))
        avg_gross_exposure = math.nan
    if traded_value is None:
        traded_value = float(cols["entry_value"].sum() + cols["exit_value"].sum())
    turnover = traded_value / float(equity.mean())

    return BacktestReport(
        start_ts=int(ts[0]), end_ts=int(ts[-1] + bar_seconds), bars=n, bar_seconds=int(bar_seconds),
        period_days=period_days, initial_equity=initial, final_equity=final,
        total_return=growth - 1.0, annualized_return=annualized, volatility=volatility,
        sharpe=sharpe, sortino=sortino, calmar=calmar, max_drawdown=max_dd,
        max_drawdown_duration_days=max_dd_s / SECONDS_PER_DAY,
        longest_drawdown_days=longest_s / SECONDS_PER_DAY,
        trades=len(cols["pnl"]), closed_trades=n_closed, win_rate=win_rate,
        profit_factor=profit_factor, expectancy=expectancy, avg_trade_return=avg_trade_return,
        avg_holding_hours=avg_holding_hours, exposure=exposure, avg_gross_exposure=avg_gross_exposure,
        turnover=turnover, annual_turnover=turnover / years, trades_per_day=len(cols["pnl"]) / period_days,
    )


# --------------------------------------------------------------------------- breakdowns


def trade_breakdown(trades: Sequence[object], key: str) -> dict[str, dict[str, float | int | None]]:
    """Closed-trade statistics grouped by the trades' ``key`` attribute (``strategy``: the top
    module of the entry signal; ``regime``: the regime label at entry) [BT-3].

    Per group: ``trades`` (closed and open), ``closed_trades``, ``win_rate``, ``pnl`` (sum of
    closed pnl), ``profit_factor``, ``expectancy`` (mean closed pnl), ``avg_trade_return`` and
    ``avg_holding_hours``; open trades count in ``trades`` and ``open_pnl`` (marked) only."""
    groups: dict[str, list[object]] = {}
    for t in trades:
        groups.setdefault(str(getattr(t, key)) or "?", []).append(t)
    out: dict[str, dict[str, float | int | None]] = {}
    for name in sorted(groups):
        rows = groups[name]
        closed = [t for t in rows if not t.is_open]  # type: ignore[attr-defined]
        pnl = np.array([float(t.pnl) for t in closed], dtype=np.float64)  # type: ignore[attr-defined]
        ret = np.array([float(t.return_) for t in closed], dtype=np.float64)  # type: ignore[attr-defined]
        hold = np.array([(t.exit_ts - t.entry_ts) / 3600.0 for t in closed], dtype=np.float64)  # type: ignore[attr-defined]
        wins, losses = pnl[pnl > 0].sum(), pnl[pnl < 0].sum()
        n = len(closed)
        values: dict[str, float | int] = {
            "trades": len(rows), "closed_trades": n,
            "win_rate": float((pnl > 0).mean()) if n else math.nan,
            "pnl": float(pnl.sum()),
            "profit_factor": _ratio(float(wins), float(-losses)) if n else math.nan,
            "expectancy": float(pnl.mean()) if n else math.nan,
            "avg_trade_return": float(ret.mean()) if n else math.nan,
            "avg_holding_hours": float(hold.mean()) if n else math.nan,
            "open_pnl": float(sum(float(t.pnl) for t in rows if t.is_open)),  # type: ignore[attr-defined]
        }
        out[name] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    return out


def bar_breakdown(equity: np.ndarray, labels: Sequence[str], *, initial_equity: float,
                  position_value: np.ndarray | None = None) -> dict[str, dict[str, float | int | None]]:
    """Per label of each bar (the regime the scan saw at that bar): ``bars``, ``share`` of all
    bars, ``return`` (the compounded equity return over those bars: prod(1 + r_t) - 1 with r_t
    the bar's return from the previous close), ``pnl`` (sum of the equity changes) and
    ``exposure`` (share of those bars holding a position) [BT-3]."""
    eq = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate(([initial_equity], eq[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = eq / prev - 1.0
    lab = np.asarray(list(labels))
    out: dict[str, dict[str, float | int | None]] = {}
    n = len(eq)
    for name in sorted(set(lab.tolist())):
        m = lab == name
        values: dict[str, float | int | None] = {
            "bars": int(m.sum()), "share": float(m.sum() / n) if n else None,
            "return": float(np.prod(1.0 + r[m]) - 1.0), "pnl": float((eq - prev)[m].sum()),
        }
        if position_value is not None:
            values["exposure"] = float((np.asarray(position_value)[m] > 0).mean())
        out[name] = values
    return out
