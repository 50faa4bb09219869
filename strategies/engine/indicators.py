"""Technical indicators over the whole market at once (no Django, no I/O).

Every function takes float64 arrays shaped ``[markets x bars]`` (a 1-D ``[bars]`` array is
treated as one market and the result comes back 1-D) and returns arrays of the same shape.

NaN policy: a market's series may start with NaN (listed later than the others, or warm-up of
an upstream indicator); after its first valid value it must be gap-free. Missing bars inside
the series must be filled explicitly by the caller first (see :func:`fill_missing_bars`), so an
indicator never silently bridges a gap. Output is NaN until the indicator is warmed up.

Smoothing conventions (chosen to match the reference library ``ta`` exactly):

* EMA: ``alpha = 2 / (n + 1)`` seeded with the first value, reported from the n-th value on
  (pandas ``ewm(span=n, adjust=False, min_periods=n)``).
* Wilder (RSI, ATR, ADX): ``alpha = 1 / n`` seeded with the mean of the first n inputs.

Recursive filters are evaluated in closed form per block of bars (a cumulative sum of
discounted inputs), so no Python loop runs over markets or bars.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "adx", "atr", "bollinger", "efficiency_ratio", "ema", "fill_missing_bars", "frac_diff",
    "frac_diff_weights", "macd", "microprice", "order_flow_imbalance", "rolling_max",
    "rolling_min", "rolling_std", "rolling_sum", "rsi", "sma", "true_range", "volume_spike", "wilder",
]


# --------------------------------------------------------------------------- helpers


def _as2d(fn: Callable[..., object]) -> Callable[..., object]:
    """Let a 2-D indicator accept 1-D input: array arguments are promoted, results squeezed."""

    @wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> object:
        one_d = isinstance(args[0], np.ndarray) and args[0].ndim == 1
        if not one_d:
            return fn(*args, **kwargs)
        args2 = tuple(a[None, :] if isinstance(a, np.ndarray) and a.ndim == 1 else a for a in args)
        out = fn(*args2, **kwargs)
        if isinstance(out, tuple):
            return type(out)(*(o[0] for o in out))
        return out[0]  # type: ignore[index]

    return wrapper


def _check(*arrays: np.ndarray) -> tuple[int, int]:
    """Fail fast: all inputs 2-D float arrays of one shape."""
    shape = arrays[0].shape
    if arrays[0].ndim != 2:
        raise ValueError(f"expected a [markets x bars] array, got shape {shape}")
    for a in arrays[1:]:
        if a.shape != shape:
            raise ValueError(f"shape mismatch: {a.shape} vs {shape}")
    return shape  # type: ignore[return-value]


def _first_valid(x: np.ndarray) -> np.ndarray:
    """Index of the first non-NaN bar per market (``bars`` when all NaN).

    Raises ValueError when a market has a NaN after its first valid value: gaps must be
    filled explicitly before any indicator sees them.
    """
    nan = np.isnan(x)
    first = np.where(nan.all(axis=1), x.shape[1], np.argmax(~nan, axis=1))
    if np.any(nan.sum(axis=1) != first):
        raise ValueError("NaN inside a series: fill missing bars first (fill_missing_bars)")
    return first


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """x shifted right by k bars along the last axis (NaN fill)."""
    out = np.full_like(x, np.nan)
    if k < x.shape[-1]:
        out[..., k:] = x[..., : x.shape[-1] - k]
    return out


def linear_recursion(u: np.ndarray, decay: float) -> np.ndarray:
    """``y[t] = decay * y[t-1] + u[t]`` with ``y[-1] = 0`` along the last axis, vectorised.

    Closed form per block: ``y[t0+j] = d^(j+1) y[t0-1] + d^j * cumsum_i(u[t0+i] d^-i)``. The
    block length keeps ``d^-j`` below ~1e250, so it never overflows; the rounding error stays
    at ``eps / (1 - d)`` of the input scale because the latest terms dominate each sum.
    """
    if not 0.0 < decay < 1.0:
        raise ValueError("decay must be in (0, 1)")
    n = u.shape[-1]
    block = max(1, min(n, int(575.0 / -np.log(decay))))
    y = np.empty_like(u)
    carry = np.zeros(u.shape[:-1])
    j = np.arange(block, dtype=np.float64)
    up = decay ** j
    down = decay ** -j
    for t0 in range(0, n, block):
        m = min(block, n - t0)
        seg = np.cumsum(u[..., t0:t0 + m] * down[:m], axis=-1) * up[:m]
        seg += carry[..., None] * (up[:m] * decay)
        y[..., t0:t0 + m] = seg
        carry = seg[..., -1]
    return y


def _seeded_recursion(x: np.ndarray, alpha: float, seed_idx: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """``y[s] = seed``, ``y[t] = (1 - alpha) y[t-1] + alpha x[t]`` for t > s; NaN before s.

    ``x`` may hold NaN only before ``seed_idx`` (per market).
    """
    n_mk, bars = x.shape
    if n_mk and np.all(seed_idx == seed_idx[0]):  # common case: every market starts together
        s0 = int(seed_idx[0])
        if s0 >= bars:
            return np.full_like(x, np.nan)
        u = x * alpha
        u[:, :s0] = 0.0
        u[:, s0] = seed
        y = linear_recursion(u, 1.0 - alpha)
        y[:, :s0] = np.nan
        return y
    t = np.arange(bars)[None, :]
    s = seed_idx[:, None]
    u = np.where(t > s, alpha * np.nan_to_num(x), 0.0)
    ok = seed_idx < bars
    rows = np.nonzero(ok)[0]
    u[rows, seed_idx[ok]] = seed[ok]
    y = linear_recursion(u, 1.0 - alpha)
    y[t < s] = np.nan
    return y


def _window_mean_at(x: np.ndarray, start: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``x[m, start:start+n]`` per market and the index of its last element."""
    n_mk, bars = x.shape
    end = start + n  # exclusive
    valid = end <= bars
    if n_mk and np.all(start == start[0]):
        s0 = int(start[0])
        if s0 + n > bars:
            return np.full(n_mk, np.nan), np.full(n_mk, bars)
        return x[:, s0:s0 + n].mean(axis=1), end - 1
    mean = np.full(n_mk, np.nan)
    rows = np.nonzero(valid)[0]
    if len(rows):
        cols = start[rows, None] + np.arange(n)[None, :]
        mean[rows] = x[rows[:, None], cols].mean(axis=1)
    return mean, np.where(valid, end - 1, bars)


def fill_missing_bars(close: np.ndarray, open_: np.ndarray | None = None, high: np.ndarray | None = None,
                      low: np.ndarray | None = None, volume: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-fill interior missing bars as flat no-trade bars.

    A missing bar (NaN close) inside a market's history becomes ``open = high = low = close =
    previous close`` with volume 0, which is what "nothing traded" means. Leading NaN (before
    the market's first bar) stay NaN. Returns ``(open, high, low, close, volume, missing)``
    where ``missing`` is the boolean mask of the filled bars.
    """
    close = np.asarray(close, dtype=np.float64)
    if close.ndim != 2:
        raise ValueError("fill_missing_bars needs [markets x bars]")
    bars = close.shape[1]
    nan = np.isnan(close)
    if not nan.any():  # the common case: nothing to fill, no copies
        shape_ok = all(a is None or np.shape(a) == close.shape for a in (open_, high, low, volume))
        if not shape_ok:
            raise ValueError("OHLCV arrays must share one shape")
        vol = np.zeros_like(close) if volume is None else np.asarray(volume, dtype=np.float64)
        if np.isnan(vol).any():
            vol = np.nan_to_num(vol)
        return (*(close if a is None else np.asarray(a, dtype=np.float64) for a in (open_, high, low)),
                close, vol, nan)
    idx = np.where(~nan, np.arange(bars)[None, :], 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    rows = np.arange(close.shape[0])[:, None]
    c = close[rows, idx]  # leading NaN stay NaN (index 0 is NaN there)
    started = np.maximum.accumulate(~nan, axis=1)
    missing = nan & started

    def fill(a: np.ndarray | None) -> np.ndarray:
        if a is None:
            return c.copy()
        a = np.asarray(a, dtype=np.float64)
        if a.shape != close.shape:
            raise ValueError(f"shape mismatch: {a.shape} vs {close.shape}")
        return np.where(missing, c, a)

    vol = np.zeros_like(close) if volume is None else np.asarray(volume, dtype=np.float64)
    if vol.shape != close.shape:
        raise ValueError(f"shape mismatch: {vol.shape} vs {close.shape}")
    vol = np.where(missing, 0.0, vol)
    vol = np.where(np.isnan(vol) & started, 0.0, vol)
    return fill(open_), fill(high), fill(low), c, vol, missing


# --------------------------------------------------------------------------- rolling primitives


@_as2d
def rolling_sum(x: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last n values (NaN until n values exist)."""
    _check(x)
    if n < 1:
        raise ValueError("n must be >= 1")
    first = _first_valid(x)
    bars = x.shape[1]
    c0 = np.zeros((x.shape[0], bars + 1))
    np.cumsum(np.nan_to_num(x), axis=1, out=c0[:, 1:])
    out = np.full_like(x, np.nan)
    if bars >= n:
        out[:, n - 1:] = c0[:, n:] - c0[:, : bars + 1 - n]
    t = np.arange(bars)[None, :]
    out[t < (first[:, None] + n - 1)] = np.nan
    return out


@_as2d
def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Simple moving average over n bars."""
    return rolling_sum(x, n) / n  # type: ignore[operator]


@_as2d
def rolling_std(x: np.ndarray, n: int) -> np.ndarray:
    """Population standard deviation (ddof 0) of the last n values.

    From running sums of ``x - r`` with ``r`` the market's mean level, which keeps the
    cancellation error of ``E[x^2] - E[x]^2`` at rounding level for price-like series.
    """
    _check(x)
    ref = np.zeros((x.shape[0], 1))
    ok = ~np.isnan(x).all(axis=1)
    if ok.any():
        ref[ok, 0] = np.nanmean(x[ok], axis=1)
    z = x - ref
    m1 = sma(z, n)
    m2 = sma(z * z, n)
    return np.sqrt(np.maximum(m2 - m1 * m1, 0.0))  # type: ignore[operator]


def _rolling_extreme(x: np.ndarray, n: int, op: np.ufunc) -> np.ndarray:
    """Rolling max/min by doubling: windows of 1, 2, 4, ... combined, O(log n) array passes."""
    _check(x)
    if n < 1:
        raise ValueError("n must be >= 1")
    bars = x.shape[1]
    out = np.full_like(x, np.nan)
    if bars < n:
        return out
    cur, width = x, 1
    while width * 2 <= n:
        nxt = np.full_like(x, np.nan)
        nxt[:, width:] = op(cur[:, width:], cur[:, :-width])
        cur, width = nxt, width * 2
    rest = n - width
    if rest:
        out[:, n - 1:] = op(cur[:, n - 1:], cur[:, n - 1 - rest: bars - rest])
    else:
        out[:, n - 1:] = cur[:, n - 1:]
    return out


@_as2d
def rolling_max(x: np.ndarray, n: int) -> np.ndarray:
    """Highest value of the last n bars (NaN while any of them is NaN)."""
    return _rolling_extreme(x, n, np.maximum)


@_as2d
def rolling_min(x: np.ndarray, n: int) -> np.ndarray:
    """Lowest value of the last n bars (NaN while any of them is NaN)."""
    return _rolling_extreme(x, n, np.minimum)


# --------------------------------------------------------------------------- moving averages


@_as2d
def ema(x: np.ndarray, n: int) -> np.ndarray:
    """Exponential moving average, ``alpha = 2/(n+1)``, seeded with the first value, valid from
    the n-th value (identical to pandas ``ewm(span=n, adjust=False, min_periods=n)``)."""
    _check(x)
    if n < 1:
        raise ValueError("n must be >= 1")
    first = _first_valid(x)
    rows = np.nonzero(first < x.shape[1])[0]
    seed = np.full(x.shape[0], np.nan)
    seed[rows] = x[rows, first[rows]]
    if n == 1:
        return x.copy()
    y = _seeded_recursion(x, 2.0 / (n + 1.0), first, seed)
    t = np.arange(x.shape[1])[None, :]
    y[t < (first[:, None] + n - 1)] = np.nan
    return y


@_as2d
def wilder(x: np.ndarray, n: int) -> np.ndarray:
    """Wilder's smoothing (``alpha = 1/n``) seeded with the mean of the first n values."""
    _check(x)
    first = _first_valid(x)
    seed, seed_idx = _window_mean_at(x, first, n)
    return _seeded_recursion(x, 1.0 / n, seed_idx, seed)


# --------------------------------------------------------------------------- oscillators


@_as2d
def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder's RSI (0..100): ``100 - 100 / (1 + avg_gain / avg_loss)``.

    Average gain and loss are Wilder-smoothed; all-gain windows give 100, flat windows 50.
    """
    _check(close)
    d = close - _shift(close, 1)
    gain = np.where(d > 0, d, 0.0)
    loss = np.where(d < 0, -d, 0.0)
    gain[np.isnan(d)] = np.nan
    loss[np.isnan(d)] = np.nan
    ag = wilder(gain, n)
    al = wilder(loss, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 - 100.0 / (1.0 + ag / al)
    out = np.where((al == 0) & (ag > 0), 100.0, out)
    out = np.where((al == 0) & (ag == 0), 50.0, out)
    return out


@_as2d
def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """``max(high - low, |high - prev close|, |low - prev close|)``; the first bar is high - low."""
    _check(high, low, close)
    pc = _shift(close, 1)
    hl = high - low
    tr = np.fmax(hl, np.fmax(np.abs(high - pc), np.abs(low - pc)))
    return np.where(np.isnan(pc), hl, tr)


@_as2d
def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> np.ndarray:
    """Average true range, Wilder-smoothed, first value = mean of the first n true ranges."""
    return wilder(true_range(high, low, close), n)  # type: ignore[arg-type]


class ADX(NamedTuple):
    adx: np.ndarray
    plus_di: np.ndarray
    minus_di: np.ndarray


@_as2d
def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int = 14) -> ADX:
    """Wilder's ADX with +DI / -DI (0..100).

    +DM = up-move if it exceeds the down-move and is positive (mirror for -DM); TR, +DM and
    -DM are Wilder-sums over n bars starting at the second bar; DX = 100 |+DI - -DI| /
    (+DI + -DI) (0 when both are 0); ADX = Wilder average of DX seeded with the mean of the
    first n DX values, so the first ADX is at bar 2n - 1.
    """
    _check(high, low, close)
    up = high - _shift(high, 1)
    down = _shift(low, 1) - low
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    tr = true_range(high, low, close)
    invalid = np.isnan(up)
    for a in (plus_dm, minus_dm):
        a[invalid] = np.nan
    tr = np.where(invalid, np.nan, tr)
    s_tr = wilder(tr, n)
    s_p = wilder(plus_dm, n)
    s_m = wilder(minus_dm, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        pdi = np.where(s_tr != 0, 100.0 * s_p / s_tr, 0.0)
        mdi = np.where(s_tr != 0, 100.0 * s_m / s_tr, 0.0)
        den = pdi + mdi
        dx = np.where(den != 0, 100.0 * np.abs(pdi - mdi) / den, 0.0)
    nan = np.isnan(s_tr)
    pdi[nan] = np.nan
    mdi[nan] = np.nan
    dx[nan] = np.nan
    return ADX(wilder(dx, n), pdi, mdi)  # type: ignore[arg-type]


class Bollinger(NamedTuple):
    middle: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    bandwidth: np.ndarray   # (upper - lower) / middle, a fraction
    percent_b: np.ndarray   # (close - lower) / (upper - lower)


@_as2d
def bollinger(close: np.ndarray, n: int = 20, k: float = 2.0) -> Bollinger:
    """Bollinger bands: SMA(n) +- k population standard deviations (ddof 0, as ``ta``)."""
    _check(close)
    mid = sma(close, n)
    sd = rolling_std(close, n)
    upper = mid + k * sd
    lower = mid - k * sd
    with np.errstate(divide="ignore", invalid="ignore"):
        bw = (upper - lower) / mid
        pb = np.where(upper > lower, (close - lower) / (upper - lower), 0.5)
    pb[np.isnan(mid)] = np.nan
    return Bollinger(mid, upper, lower, bw, pb)  # type: ignore[arg-type]


class MACD(NamedTuple):
    line: np.ndarray
    signal: np.ndarray
    hist: np.ndarray


@_as2d
def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> MACD:
    """MACD line = EMA(fast) - EMA(slow); signal = EMA(signal) of the line; hist = line - signal."""
    line = ema(close, fast) - ema(close, slow)  # type: ignore[operator]
    sig = ema(line, signal)
    return MACD(line, sig, line - sig)  # type: ignore[arg-type]


@_as2d
def volume_spike(volume: np.ndarray, n: int = 20) -> np.ndarray:
    """Volume of the bar divided by the mean volume of the n bars before it (current bar
    excluded so the spike does not dilute its own baseline). NaN when the baseline is 0."""
    _check(volume)
    base = _shift(sma(volume, n), 1)  # type: ignore[arg-type]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, volume / base, np.nan)


@_as2d
def efficiency_ratio(close: np.ndarray, n: int = 10) -> np.ndarray:
    """Kaufman efficiency ratio 0..1: ``|close - close[n ago]| / sum of |bar-to-bar change|``
    over n bars. 1 = a straight line, near 0 = back and forth. Flat windows give 0."""
    _check(close)
    net = np.abs(close - _shift(close, n))
    path = rolling_sum(np.abs(close - _shift(close, 1)), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        er = np.where(path > 0, net / path, 0.0)
    er[np.isnan(path) | np.isnan(net)] = np.nan
    return er


# --------------------------------------------------------------------------- microstructure


@_as2d
def order_flow_imbalance(bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray,
                         ask_qty: np.ndarray) -> np.ndarray:
    """Per-update order flow imbalance e_n (Cont, Kukanov & Stoikov 2014), ``[markets x updates]``.

    ``e_n = 1{Pb_n >= Pb_n-1} qb_n - 1{Pb_n <= Pb_n-1} qb_n-1
          - 1{Pa_n <= Pa_n-1} qa_n + 1{Pa_n >= Pa_n-1} qa_n-1``

    Positive = net buying pressure at the top of book. The first update has no predecessor
    and is NaN; sum over a window for the OFI of that window.
    """
    _check(bid_px, bid_qty, ask_px, ask_qty)
    pb, qb = _shift(bid_px, 1), _shift(bid_qty, 1)
    pa, qa = _shift(ask_px, 1), _shift(ask_qty, 1)
    e = ((bid_px >= pb) * bid_qty - (bid_px <= pb) * qb
         - (ask_px <= pa) * ask_qty + (ask_px >= pa) * qa)
    e[:, 0] = np.nan
    return e


@_as2d
def microprice(bid_px: np.ndarray, bid_qty: np.ndarray, ask_px: np.ndarray, ask_qty: np.ndarray) -> np.ndarray:
    """Size-weighted mid ``(bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)``: leans toward
    the side with less size, i.e. where the price is about to move (Stoikov's weighted mid)."""
    _check(bid_px, bid_qty, ask_px, ask_qty)
    tot = bid_qty + ask_qty
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tot > 0, (bid_px * ask_qty + ask_px * bid_qty) / tot, (bid_px + ask_px) / 2.0)


# --------------------------------------------------------------------------- fractional differencing


def frac_diff_weights(d: float, threshold: float = 1e-4, max_len: int = 10_000) -> np.ndarray:
    """FFD weights ``w_0 = 1, w_k = -w_k-1 (d - k + 1) / k``, cut where ``|w_k| < threshold``
    (Lopez de Prado, AFML ch. 5). Returned oldest-lag last: ``w[k]`` multiplies ``x[t-k]``."""
    if d < 0:
        raise ValueError("d must be >= 0")
    w = [1.0]
    for k in range(1, max_len):
        nxt = -w[-1] * (d - k + 1) / k
        if abs(nxt) < threshold:
            break
        w.append(nxt)
    return np.asarray(w)


@_as2d
def frac_diff(x: np.ndarray, d: float, threshold: float = 1e-4) -> np.ndarray:
    """Fixed-window fractional difference ``sum_k w_k x[t-k]``: stationary like returns but
    keeps the memory of the price level (d between 0 = level and 1 = first difference).
    NaN until the full weight window is available."""
    _check(x)
    w = frac_diff_weights(d, threshold)
    width = len(w)
    out = np.full_like(x, np.nan)
    if x.shape[1] >= width:
        win = sliding_window_view(x, width, axis=1)  # [..., t, j] = x[t + j], j oldest first
        out[:, width - 1:] = win @ w[::-1]
    return out
