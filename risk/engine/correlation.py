"""Vectorised correlation of returns for the correlation check [RK-2].

Pearson correlation over pairwise-complete observations (a bar missing in either series is
left out of that pair only), computed for all pairs at once with masked matrix products, so a
symbol with a gap does not drop the bar for everyone. Pairs with fewer than ``min_periods``
common observations, or a constant series, get NaN ("unknown"), never a made-up number.
"""

from __future__ import annotations

import numpy as np


def log_returns(close: np.ndarray) -> np.ndarray:
    """Per-bar log returns ``[markets x bars - 1]`` of closes ``[markets x bars]`` (NaN where
    either bar is missing or not positive)."""
    c = np.asarray(close, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lc = np.where(c > 0, np.log(np.where(c > 0, c, 1.0)), np.nan)
    return np.diff(lc, axis=-1)


def correlation_matrix(returns: np.ndarray, min_periods: int = 30) -> np.ndarray:
    """Pairwise-complete Pearson correlation ``[m x m]`` of ``returns`` ``[m x n]``."""
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("returns must be [markets x bars]")
    finite = np.isfinite(x)
    mask = finite.astype(np.float64)
    counts = finite.sum(axis=1, keepdims=True)
    row_mean = np.divide(np.where(finite, x, 0.0).sum(axis=1, keepdims=True), counts,
                         out=np.zeros((x.shape[0], 1)), where=counts > 0)
    xz = np.where(finite, x - row_mean, 0.0)   # centring first avoids cancellation; corr is shift-free
    n = mask @ mask.T                       # common observations per pair
    sx = xz @ mask.T                        # sum of x_i over bars where x_j exists too
    sxx = (xz * xz) @ mask.T
    sxy = xz @ xz.T
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = n * sxy - sx * sx.T
        var_i = n * sxx - sx * sx
        var_j = var_i.T
        denom = np.sqrt(var_i * var_j)
        corr = cov / denom
    tiny = 1e-18 * np.maximum(n * n, 1.0)
    corr[(n < min_periods) | ~(var_i > tiny) | ~(var_j > tiny)] = np.nan
    corr = np.clip(corr, -1.0, 1.0)
    diag = np.diag_indices_from(corr)
    corr[diag] = np.where(np.isfinite(np.diag(corr)), 1.0, np.nan)
    return corr


def correlations_with(candidate: np.ndarray, others: np.ndarray, min_periods: int = 30) -> np.ndarray:
    """Correlation ``[k]`` of one candidate's returns ``[n]`` with each row of ``others`` ``[k x n]``."""
    others = np.asarray(others, dtype=np.float64).reshape(-1, np.asarray(candidate).shape[-1])
    if others.shape[0] == 0:
        return np.empty(0)
    stacked = np.vstack([np.asarray(candidate, dtype=np.float64)[None, :], others])
    return correlation_matrix(stacked, min_periods)[0, 1:]
