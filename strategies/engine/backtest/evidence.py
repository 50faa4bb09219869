"""Evidence of signal quality for a backtest [BT-3], issue 14 part 3 (pure numpy, no Django).

Four figures, all on the backtest's own period and close panel (``close``: ``[markets x bars]``,
the close of every ticked bar, NaN where a market has no bar; gaps are forward-filled, a market
has no price before its first bar):

* ``calibration_table``: does a higher final score mean a better forward return? Every scored
  market-bar whose score is at or above ``floor`` (0: every LONG-or-NONE score; the runner signs
  SHORT scores negative, so they stay out: spot trades long only) falls in a ``width``-point
  bucket (``[0, 10)``, ..., ``[90, 100]``); per bucket: ``count``, and per horizon (60 and 240
  minutes, ``round(minutes / bar minutes)`` bars, at least 1) the number of market-bars with a
  close that far ahead (``n_60``), the mean NET forward return (``mean_net_60``) and the hit
  rate (share of net returns > 0, ``hit_60``). A market-bar's net forward return is a round trip
  at the closes, the fee charged as the backtest charges it on each side:
  ``close[t + h] * (1 - fee) / (close[t] * (1 + fee)) - 1``. The runner builds two tables: every
  scored market-bar, and the ENTER proposals only.
* ``buy_and_hold``: the universe bought in equal parts at the first bar's close (each market
  with a price there; one entry fee) and marked at every close; ``return`` sells at the last
  close (one exit fee), ``max_drawdown`` is that of the marked curve from the initial cash (so
  the entry fee counts as drawdown, as it does in the strategy's equity).
* ``random_baseline``: the strategy's trades with their entry times drawn at random. Trade k
  keeps its market, its holding time (``hold_bars[k]`` bars) and its weight ``w[k]`` (the share
  of the initial cash it put in: entry value / cash); its entry bar is drawn uniformly among the
  bars where the whole holding fits in the period; its return is the net round trip above at
  the closes. A draw's total return is ``sum_k w[k] * r[k]`` (the pnl of those trades over the
  initial cash), its mean trade return ``mean_k r[k]``. ``n_draws`` (>= 100) draws from
  ``numpy.random.default_rng(seed)``: deterministic. Reported: mean and the 5 % / 95 %
  quantiles of both.
* ``excess``: the strategy's ``sum_k w[k] * return[k]`` (its booked trade returns, which also
  pay spread and depth slippage, so the comparison does not flatter the strategy) minus the
  baseline mean, and its percentile within the baseline draws (share below, ties half).

``evidence`` computes everything from the trades and the close panel (what the pipeline runner
adds to its JSON; the learning gate and reports can call it on any run's trades).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

HORIZONS_MINUTES = (60, 240)
DEFAULT_DRAWS = 200
MIN_DRAWS = 100


def ffill(close: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along bars (``[markets x bars]``); NaN before a market's first price."""
    c = np.asarray(close, dtype=float)
    finite = np.isfinite(c)
    idx = np.where(finite, np.arange(c.shape[1])[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = np.take_along_axis(c, np.maximum(idx, 0), axis=1)
    return np.where(idx >= 0, out, np.nan)


def net_round_trip(entry: np.ndarray | float, exit_: np.ndarray | float, fee: float) -> np.ndarray | float:
    """Net return of buying at ``entry`` and selling at ``exit_`` with ``fee`` on each side."""
    return exit_ * (1.0 - fee) / (entry * (1.0 + fee)) - 1.0


def horizon_bars(minutes: int, bar_seconds: int) -> int:
    return max(1, int(round(minutes * 60 / bar_seconds)))


def forward_net_returns(close: np.ndarray, horizon: int, fee: float) -> np.ndarray:
    """``[markets x bars]`` net round trip from each close to the close ``horizon`` bars later
    (NaN without a price at either end)."""
    c = ffill(close)
    out = np.full(c.shape, np.nan)
    if horizon < c.shape[1]:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, :-horizon] = net_round_trip(c[:, :-horizon], c[:, horizon:], fee)
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def calibration_table(scores: np.ndarray, close: np.ndarray, *, bar_seconds: int, fee: float,
                      width: float = 10.0, floor: float = 0.0,
                      horizons: Sequence[int] = HORIZONS_MINUTES) -> list[dict[str, Any]]:
    """Rows per score bucket (module docstring); ``scores`` ``[markets x bars]`` like ``close``,
    NaN where a market-bar was not scored. Buckets without a market-bar are left out."""
    s = np.asarray(scores, dtype=float)
    if s.shape != np.shape(close):
        raise ValueError(f"scores {s.shape} and close {np.shape(close)} differ in shape")
    keep = np.isfinite(s) & (s >= floor)
    top = math.ceil(100.0 / width) - 1
    bucket = np.minimum(np.floor(np.where(keep, s, 0.0) / width), top).astype(np.int64)
    fwd = {h: forward_net_returns(close, horizon_bars(h, bar_seconds), fee) for h in horizons}
    rows = []
    for b in np.unique(bucket[keep]):
        sel = keep & (bucket == b)
        row: dict[str, Any] = {"bucket": f"{b * width:g}-{(b + 1) * width:g}", "lo": float(b * width),
                               "hi": float((b + 1) * width), "count": int(sel.sum())}
        for h, r in fwd.items():
            v = r[sel]
            v = v[np.isfinite(v)]
            row[f"n_{h}"] = len(v)
            row[f"mean_net_{h}"] = _mean(v)
            row[f"hit_{h}"] = _mean((v > 0).astype(float))
        rows.append(row)
    return rows


def buy_and_hold(close: np.ndarray, *, fee: float) -> dict[str, Any]:
    """Equal-weight buy-and-hold of every market priced at the first bar (module docstring)."""
    c = ffill(close)
    held = np.isfinite(c[:, 0]) & (c[:, 0] > 0) if c.size else np.zeros(0, bool)
    if not held.any():
        return {"return": None, "max_drawdown": None, "markets": 0}
    rel = c[held] / c[held, :1]
    curve = rel.mean(axis=0) / (1.0 + fee)           # marked value per unit of cash
    peak = np.maximum.accumulate(np.concatenate([[1.0], curve]))[1:]
    dd = 1.0 - curve / peak
    return {"return": float(curve[-1] * (1.0 - fee) - 1.0), "max_drawdown": float(dd.max()),
            "markets": int(held.sum())}


def _quantiles(x: np.ndarray) -> tuple[float, float, float]:
    return float(x.mean()), float(np.quantile(x, 0.05)), float(np.quantile(x, 0.95))


def random_baseline(close: np.ndarray, market: np.ndarray, hold_bars: np.ndarray, weight: np.ndarray, *,
                    fee: float, n_draws: int = DEFAULT_DRAWS, seed: int = 0) -> dict[str, Any]:
    """Random-entry baseline (module docstring): ``market``, ``hold_bars`` and ``weight`` per
    strategy trade. Returns the summary and the per-draw totals (``totals``, for percentiles)."""
    if n_draws < MIN_DRAWS:
        raise ValueError(f"n_draws must be at least {MIN_DRAWS}")
    c = ffill(close)
    n = c.shape[1]
    market = np.asarray(market, dtype=np.int64)
    hold = np.clip(np.asarray(hold_bars, dtype=np.int64), 0, max(n - 1, 0))
    w = np.asarray(weight, dtype=float)
    k = len(market)
    if k == 0 or n == 0:
        return {"draws": n_draws, "trades": 0, "seed": seed, "total_return_mean": None, "total_return_p05": None,
                "total_return_p95": None, "trade_return_mean": None, "trade_return_p05": None,
                "trade_return_p95": None, "unpriced": 0, "totals": np.zeros(0)}
    rng = np.random.default_rng(seed)
    u = rng.random((n_draws, k))
    entry = np.floor(u * (n - hold)[None, :]).astype(np.int64)        # 0 .. n - 1 - hold
    exit_ = entry + hold[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = net_round_trip(c[market[None, :], entry], c[market[None, :], exit_], fee)
    bad = ~np.isfinite(r)
    r = np.where(bad, 0.0, r)
    totals = r @ w
    means = r.mean(axis=1)
    tm, t05, t95 = _quantiles(totals)
    mm, m05, m95 = _quantiles(means)
    return {"draws": n_draws, "trades": k, "seed": seed, "total_return_mean": tm, "total_return_p05": t05,
            "total_return_p95": t95, "trade_return_mean": mm, "trade_return_p05": m05, "trade_return_p95": m95,
            "unpriced": int(bad.sum()), "totals": totals}


def percentile_of(value: float, draws: np.ndarray) -> float | None:
    """Share of ``draws`` below ``value`` (ties count half), in percent."""
    if not len(draws) or not math.isfinite(value):
        return None
    return float(100.0 * ((draws < value).sum() + 0.5 * (draws == value).sum()) / len(draws))


@dataclass(frozen=True)
class TradeArrays:
    """The trades as the baseline reads them: market row, entry / exit bar, weight, booked return."""

    market: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    weight: np.ndarray
    return_: np.ndarray

    @property
    def hold_bars(self) -> np.ndarray:
        return self.exit_bar - self.entry_bar


def trade_arrays(trades: Iterable[Any], symbols: Sequence[str], ts: np.ndarray, *, cash: float,
                 bar_seconds: int) -> TradeArrays:
    """Trades with ``symbol``, ``entry_ts``, ``exit_ts``, ``entry_value`` and ``return_``
    (objects or mappings; the pipeline's ``TradeRecord``) -> arrays on the bars ``ts`` (bar
    opens): an entry or exit time belongs to the last bar closed at that time (the backtest
    stamps fills at the close of the bar that decided them: ``bar open + bar_seconds``), and the
    trade is held ``exit bar - entry bar`` bars. Trades in other markets or with nothing bought
    are left out."""
    index = {s: i for i, s in enumerate(symbols)}
    ts = np.asarray(ts, dtype=np.int64)
    rows = []
    for t in trades:
        get = t.get if isinstance(t, dict) else lambda k, t=t: getattr(t, k)
        sym = get("symbol")
        value = float(get("entry_value"))
        if sym not in index or not value > 0:
            continue
        rows.append((index[sym], int(get("entry_ts")), int(get("exit_ts")), value / cash, float(get("return_"))))
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return TradeArrays(z, z, z, np.zeros(0), np.zeros(0))
    m, e_ts, x_ts, w, r = (np.array(col) for col in zip(*rows, strict=True))
    last = len(ts) - 1
    entry = np.clip(np.searchsorted(ts, e_ts - bar_seconds, side="right") - 1, 0, last)
    exit_ = np.clip(np.searchsorted(ts, x_ts - bar_seconds, side="right") - 1, entry, last)
    return TradeArrays(m.astype(np.int64), entry.astype(np.int64), exit_.astype(np.int64), w.astype(float),
                       r.astype(float))


def evidence(close: np.ndarray, ts: np.ndarray, symbols: Sequence[str], trades: Iterable[Any], *, cash: float,
             fee: float, bar_seconds: int, scores: np.ndarray | None = None, enter: np.ndarray | None = None,
             n_draws: int = DEFAULT_DRAWS, seed: int = 0, width: float = 10.0,
             floor: float = 0.0) -> dict[str, Any]:
    """Every figure of the module docstring as one JSON-safe dict. ``close``, ``scores`` and
    ``enter`` are ``[markets x bars]`` over the bars ``ts``; ``fee`` is per side."""
    close = np.asarray(close, dtype=float)
    ta = trade_arrays(trades, symbols, ts, cash=cash, bar_seconds=bar_seconds)
    base = random_baseline(close, ta.market, ta.hold_bars, ta.weight, fee=fee, n_draws=n_draws, seed=seed)
    totals = base.pop("totals")
    strategy_total = float(ta.weight @ ta.return_) if len(ta.market) else 0.0
    strategy_mean = float(ta.return_.mean()) if len(ta.market) else None
    out: dict[str, Any] = {
        "fee": fee,
        "bars": int(close.shape[1]),
        "horizons_minutes": list(HORIZONS_MINUTES),
        "horizon_bars": [horizon_bars(h, bar_seconds) for h in HORIZONS_MINUTES],
        "buy_and_hold": buy_and_hold(close, fee=fee),
        "random_baseline": base,
        "strategy": {"trades": int(len(ta.market)), "total_return": strategy_total,
                     "trade_return_mean": strategy_mean},
    }
    if len(ta.market):
        out["excess"] = {"total_return": strategy_total - base["total_return_mean"],
                         "trade_return_mean": strategy_mean - base["trade_return_mean"],
                         "percentile": percentile_of(strategy_total, totals)}
    else:
        out["excess"] = {"total_return": None, "trade_return_mean": None, "percentile": None}
    if scores is not None:
        s = np.asarray(scores, dtype=float)
        out["calibration"] = {
            "width": width, "floor": floor,
            "all": calibration_table(s, close, bar_seconds=bar_seconds, fee=fee, width=width, floor=floor),
            "enter": calibration_table(np.where(np.asarray(enter, bool), s, np.nan) if enter is not None
                                       else np.full(s.shape, np.nan), close, bar_seconds=bar_seconds, fee=fee,
                                       width=width, floor=floor),
        }
    return out
