"""Equity and drawdown curves for charts, thinned without losing their extremes.

Pure: numpy only. A year of one-minute bars is 525,600 points, far more than a chart can show
or a result row should carry. ``chart_curves`` computes the drawdown on the FULL curve, then
keeps, per bucket of consecutive points, the first and last point, the highest and lowest
equity, the deepest drawdown and the peak that drawdown is measured from (in time order,
without duplicates). The drawdown values returned are those of the full curve at the kept
points, so the deepest drawdown on the chart is the true maximum drawdown; and because each
bucket's deepest point keeps its peak, a drawdown recomputed from the thinned equity alone is
also exact at those points. The first and final equity are exact.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chart_curves", "drawdown_pct"]


def drawdown_pct(values: np.ndarray) -> np.ndarray:
    """Drawdown in percent at each point, ``(value / running peak - 1) * 100`` (0 or negative)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    return (values / np.maximum.accumulate(values) - 1.0) * 100.0


def chart_curves(ts: np.ndarray, equity: np.ndarray,
                 max_points: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ts, equity, drawdown %)`` at no more than ``max_points`` points (see the module
    docstring). ``ts`` and ``equity`` are 1-D of the same length, ``equity`` positive."""
    ts = np.asarray(ts)
    equity = np.asarray(equity, dtype=np.float64)
    if ts.ndim != 1 or ts.shape != equity.shape:
        raise ValueError("ts and equity must be 1-D arrays of the same length")
    if max_points < 6:
        raise ValueError("max_points must be at least 6")
    dd = drawdown_pct(equity)
    n = len(equity)
    if n <= max_points:
        return ts, equity, dd
    buckets = max_points // 6
    edges = np.linspace(0, n, buckets + 1).astype(np.int64)
    # Index of the running peak at each point (the last time the running maximum was set).
    idx = np.arange(n)
    peak_at = np.maximum.accumulate(np.where(equity >= np.maximum.accumulate(equity), idx, 0))
    keep = np.zeros(n, dtype=bool)
    keep[edges[:-1]] = True
    keep[edges[1:] - 1] = True
    # The bucket count is small (max_points / 6): a loop over buckets is cheap and clear.
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        deepest = lo + int(np.argmin(dd[lo:hi]))
        keep[lo + int(np.argmax(equity[lo:hi]))] = True
        keep[lo + int(np.argmin(equity[lo:hi]))] = True
        keep[deepest] = True
        keep[peak_at[deepest]] = True
    return ts[keep], equity[keep], dd[keep]
