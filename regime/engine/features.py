"""The regime inputs [RG-1] computed from 1-minute candles of the whole market.

All bars are resampled inside the engine, END-aligned: the last 4 h bar is the 240 minutes
ending at the evaluated bar, the one before it the 240 minutes before that, and so on. So
the inputs move every minute instead of jumping at clock boundaries, and the per-bar function
(:func:`compute_inputs`, used live) and the whole-history function
(:func:`compute_input_series`, used for evaluation and backtests) see exactly the same bars.

Inputs (at bar t):

* ``btc_adx_4h``: Wilder ADX of the leader over a 4 h window: ADX(16) on 15-minute bars by
  default (``FeatureConfig.leader_tf`` / ``adx_period``). ADX(14) on literal 4 h bars looks
  back ~56 h and cannot see regimes that last 1-12 h (measured in ``docs/regime.md``); set
  ``leader_tf=240, adx_period=14`` for that reading.
* ``btc_atr_pct_4h``: ATR(16) of the leader on 15-minute bars (4 h window) as a percentage of
  its close.
* ``btc_atr_rel``: that ATR% divided by its own median over the last ``vol_baseline_bars``
  leader bars (96 x 15 m = 24 h, the current bar included): 1 = this market's normal, 3 =
  three times as volatile as over the last day. Scale-free, so one threshold means the same on
  any venue, market and timeframe (the absolute ATR% of a calm BTC minute and of the
  simulator's KRW markets differ by a factor of three).
* ``breadth_up_1h``: share of markets whose close is above the close 60 minutes earlier.
* ``dispersion_1h``: cross-sectional standard deviation (ddof 0) of those 1 h returns.
* ``top5_value_share_1h``: traded value (close x volume) of the 5 busiest markets over the
  last 60 minutes divided by the value of all markets.
* ``whipsaw_5m``: of the leader's last 12 five-minute returns, the mean of (a) 1 - Kaufman
  efficiency ratio and (b) the share of consecutive returns that change sign; 0 = a straight
  line, 1 = every bar reverses and the hour went nowhere.

History needed: the leader needs ``(2 * adx_period + 1) * leader_tf`` minutes (8.25 h at the
defaults) for the first ADX value; pass 3x that so Wilder smoothing has settled, and at least
``(3 * atr_period + vol_baseline_bars) * leader_tf`` for a settled ATR plus a full day of
baseline (``FeatureConfig.leader_bars_needed``, 2160 minutes = 36 h). ``btc_atr_rel`` exists
once half the baseline has ATR values (about 16 h). The market-wide inputs need 61 one-minute bars. Missing
bars are forward-filled as flat no-trade bars before anything is computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from execution.engine.types import Candles, MarketDataError
from regime.engine.types import RegimeInputs
from strategies.engine import indicators as ind

INPUT_NAMES: tuple[str, ...] = (
    "btc_adx_4h", "btc_atr_pct_4h", "breadth_up_1h", "dispersion_1h", "top5_value_share_1h", "whipsaw_5m",
    "btc_atr_rel",
)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Windows of the six inputs (minutes unless stated)."""

    leader_tf: int = 15           # leader bar length for ADX / ATR: 16 x 15 m = a 4 h window
    adx_period: int = 16          # in leader bars
    atr_period: int = 16          # in leader bars
    return_window: int = 60       # breadth and dispersion horizon (1 h)
    value_window: int = 60        # traded-value horizon (1 h)
    top_k: int = 5                # markets in the value share
    whipsaw_tf: int = 5           # leader bar length for whipsaw (5 m)
    whipsaw_bars: int = 12        # number of whipsaw bars (1 h of 5 m)
    vol_baseline_bars: int = 96   # leader bars in the ATR% baseline of ``btc_atr_rel`` (96 x 15 m = 24 h)

    @property
    def leader_bars_needed(self) -> int:
        """1-minute leader bars for a settled ADX (three times the first-value requirement) and a
        full ``btc_atr_rel`` baseline (a settled ATR, then ``vol_baseline_bars`` more)."""
        return max(3 * (2 * self.adx_period + 1), 3 * self.atr_period + self.vol_baseline_bars) * self.leader_tf

    @property
    def baseline_min_values(self) -> int:
        """ATR% values the baseline needs at least (half the window); fewer gives NaN."""
        return max(1, self.vol_baseline_bars // 2)

    @property
    def market_bars_needed(self) -> int:
        """1-minute bars of every market needed for breadth, dispersion, value share, whipsaw."""
        return max(self.return_window, self.value_window, self.whipsaw_tf * self.whipsaw_bars) + 1


@dataclass(frozen=True, slots=True)
class InputSeries:
    """The six inputs at every bar of a history, each float64 ``[bars]`` (NaN while warming up)."""

    ts: np.ndarray
    btc_adx_4h: np.ndarray
    btc_atr_pct_4h: np.ndarray
    breadth_up_1h: np.ndarray
    dispersion_1h: np.ndarray
    top5_value_share_1h: np.ndarray
    whipsaw_5m: np.ndarray
    btc_atr_rel: np.ndarray

    def at(self, i: int) -> RegimeInputs:
        return RegimeInputs(*(float(getattr(self, n)[i]) for n in INPUT_NAMES))

    @property
    def valid(self) -> np.ndarray:
        """Bars where all inputs exist."""
        return np.all([np.isfinite(getattr(self, n)) for n in INPUT_NAMES], axis=0)


# --------------------------------------------------------------------------- resampling


@dataclass(frozen=True, slots=True)
class Bars:
    """Plain OHLCV arrays ``[markets x bars]`` (float64)."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


def filled_bars(candles: Candles) -> tuple[Bars, np.ndarray]:
    """Candles with interior missing bars forward-filled as flat no-trade bars, and the mask."""
    o, h, lo, c, v, missing = ind.fill_missing_bars(candles.close, candles.open, candles.high,
                                                    candles.low, candles.volume)
    return Bars(o, h, lo, c, v), missing


def resample_end_aligned(bars: Bars, factor: int) -> Bars:
    """Aggregate ``factor`` consecutive bars, the last bucket ending at the last bar.

    The oldest ``bars % factor`` bars are dropped. A bucket touching a NaN (a market not yet
    listed) is NaN.
    """
    if factor < 1:
        raise ValueError("factor must be >= 1")
    if factor == 1:
        return bars
    n_mk, n = bars.close.shape
    nb = n // factor
    start = n - nb * factor

    def part(a: np.ndarray, j: int) -> np.ndarray:
        return a[:, start + j::factor]  # the j-th minute of every bucket (strided view)

    o = part(bars.open, 0)
    c = part(bars.close, factor - 1)
    h, lo, v = part(bars.high, 0).copy(), part(bars.low, 0).copy(), part(bars.volume, 0).copy()
    bad = np.isnan(part(bars.close, 0))
    for j in range(1, factor):  # factor array passes instead of a slow short-axis reduction
        np.fmax(h, part(bars.high, j), out=h)
        np.fmin(lo, part(bars.low, j), out=lo)
        v += part(bars.volume, j)
        bad |= np.isnan(part(bars.close, j))
    if bad.any():
        o, h, lo, c, v = (np.where(bad, np.nan, a) for a in (o, h, lo, c, v))
    else:
        o, c = o.copy(), c.copy()
    return Bars(o, h, lo, c, v)


# --------------------------------------------------------------------------- per-bar (live)


def _leader_index(candles: Candles, leader: str | None) -> int:
    if candles.n_markets == 0:
        raise MarketDataError("no markets")
    if leader is None:
        return 0
    try:
        return candles.index(leader)
    except ValueError:
        raise MarketDataError(f"leader {leader!r} not among the candles' symbols") from None


def leader_stats(b: Bars, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADX, ATR% and relative ATR at the last bar of every row of resampled leader bars
    ``b`` (``[rows x leader bars]``, each row one leader history ending at its evaluated bar).

    ``btc_atr_rel`` = the last ATR% / the median of the ATR% values of the last
    ``vol_baseline_bars`` leader bars (the last one included; NaN values skipped; NaN with fewer
    than ``baseline_min_values``). Used by :func:`compute_inputs` and by the backtest's batched
    leader statistics, so both give the same numbers."""
    rows, width = b.close.shape
    if width == 0:
        nan = np.full(rows, np.nan)
        return nan, nan.copy(), nan.copy()
    adx = ind.adx(b.high, b.low, b.close, cfg.adx_period).adx[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = ind.atr(b.high, b.low, b.close, cfg.atr_period) / b.close * 100.0
    last = pct[:, -cfg.vol_baseline_bars:]
    ok = np.isfinite(last)
    rel = np.full(rows, np.nan)
    enough = ok.sum(axis=1) >= cfg.baseline_min_values
    if enough.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            med = np.nanmedian(last[enough], axis=1)
            rel[enough] = np.where(med > 0, pct[enough, -1] / med, np.nan)
    return adx, pct[:, -1], rel


def _leader_4h_stats(leader_1m: Bars, cfg: FeatureConfig) -> tuple[float, float, float]:
    adx, pct, rel = leader_stats(resample_end_aligned(leader_1m, cfg.leader_tf), cfg)
    return float(adx[0]), float(pct[0]), float(rel[0])


def _whipsaw(closes: np.ndarray) -> float:
    """Whipsaw of one leader from its last ``whipsaw_bars + 1`` sampled closes (oldest first)."""
    r = np.diff(closes)
    path = np.abs(r).sum()
    er = abs(closes[-1] - closes[0]) / path if path > 0 else 0.0
    s = np.sign(r)
    flips = (s[1:] * s[:-1] < 0).sum() / max(len(r) - 1, 1)
    return float(0.5 * (1.0 - er) + 0.5 * flips)


def compute_inputs(candles_1m: Candles, leader: str | None = None, leader_history: Candles | None = None,
                   config: FeatureConfig | None = None) -> RegimeInputs:
    """The six inputs at the last bar of ``candles_1m``.

    ``leader``: symbol of the market leader (default: the first symbol). ``leader_history``:
    optional longer 1-minute history of the leader (one market, ending at the same bar) for the
    4 h ADX / ATR, so the all-market window can stay short. The whole leader history given is
    used (Wilder smoothing depends on where it starts), so the same input gives the same
    value; pass ``FeatureConfig.leader_bars_needed`` bars. Inputs that lack history are NaN.
    """
    cfg = config or FeatureConfig()
    if candles_1m.timeframe != "1m":
        raise MarketDataError("regime inputs need 1m candles")
    li = _leader_index(candles_1m, leader)
    # Market-wide inputs only need the tail.
    tail = candles_1m.tail(cfg.market_bars_needed)
    bars, _ = filled_bars(tail)
    c = bars.close
    n = c.shape[1]
    rw, vw = cfg.return_window, cfg.value_window
    if n > rw:
        ret = c[:, -1] / c[:, -1 - rw] - 1.0
        ok = np.isfinite(ret)
        breadth = float((ret[ok] > 0).mean()) if ok.any() else float("nan")
        dispersion = float(ret[ok].std()) if ok.any() else float("nan")
    else:
        breadth = dispersion = float("nan")
    if n >= vw:
        value = np.nansum(c[:, -vw:] * bars.volume[:, -vw:], axis=1)
        total = value.sum()
        k = min(cfg.top_k, len(value))
        top = np.partition(value, len(value) - k)[len(value) - k:].sum()
        share = float(top / total) if total > 0 else float("nan")
    else:
        share = float("nan")
    step, wb = cfg.whipsaw_tf, cfg.whipsaw_bars
    if n > step * wb:
        idx = np.arange(n - 1 - step * wb, n, step)
        lc = c[li, idx]
        whip = _whipsaw(lc) if np.all(np.isfinite(lc)) else float("nan")
    else:
        whip = float("nan")
    if leader_history is not None:
        if leader_history.n_markets != 1 or leader_history.timeframe != "1m":
            raise MarketDataError("leader_history must be one market of 1m candles")
        if leader_history.ts[-1] != candles_1m.ts[-1]:
            raise MarketDataError("leader_history must end at the same bar as candles_1m")
        lead_bars, _ = filled_bars(leader_history)
    else:
        lead_bars, _ = filled_bars(candles_1m.select((candles_1m.symbols[li],)))
    adx, atr_pct, atr_rel = _leader_4h_stats(lead_bars, cfg)
    return RegimeInputs(adx, atr_pct, breadth, dispersion, share, whip, atr_rel)


# --------------------------------------------------------------------------- whole history


def _phase_matrix(x: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrange ``x[step-1:]`` as ``[step phases x k]`` right-aligned (leading NaN pad) so a
    per-market indicator run over the rows equals running it on every end-aligned resample.
    Returns the matrix and, for every bar t >= step - 1, its (row, column)."""
    n = len(x)
    t = np.arange(step - 1, n)
    phase = (t - (step - 1)) % step
    k = (t - (step - 1)) // step            # position within its phase, 0-based
    count = np.bincount(phase, minlength=step)  # bars per phase
    width = int(count.max()) if len(count) else 0
    col = k + (width - count[phase])        # right-align
    mat = np.full((step, width), np.nan)
    mat[phase, col] = x[t]
    return mat, phase, col


def _trailing_median(x: np.ndarray, window: int, min_values: int) -> np.ndarray:
    """Row-wise median of the last ``window`` values (NaN skipped; NaN with fewer than
    ``min_values`` finite values), as ``np.nanmedian`` over each trailing window."""
    import pandas as pd

    frame = pd.DataFrame(np.ascontiguousarray(x.T))
    return frame.rolling(window, min_periods=min_values).median().to_numpy().T


def _leader_4h_series(lb: Bars, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = lb.close.shape[1]
    f = cfg.leader_tf
    adx = np.full(n, np.nan)
    atr_pct = np.full(n, np.nan)
    atr_rel = np.full(n, np.nan)
    if n < f:
        return adx, atr_pct, atr_rel
    hi = ind.rolling_max(lb.high, f)[0]
    lo = ind.rolling_min(lb.low, f)[0]
    cl = lb.close[0]
    # Mark buckets touching a pre-listing NaN as NaN, like resample_end_aligned.
    bad = np.isnan(ind.rolling_sum(np.where(np.isnan(cl), 1.0, 0.0)[None, :], f)[0])
    hi = np.where(bad, np.nan, hi)
    H, ph, col = _phase_matrix(hi, f)
    L, _, _ = _phase_matrix(lo, f)
    C, _, _ = _phase_matrix(np.where(np.isnan(hi), np.nan, cl), f)
    a = ind.adx(H, L, C, cfg.adx_period).adx
    with np.errstate(invalid="ignore", divide="ignore"):
        r = ind.atr(H, L, C, cfg.atr_period) / C * 100.0
        med = _trailing_median(r, cfg.vol_baseline_bars, cfg.baseline_min_values)
        rel = np.where(med > 0, r / med, np.nan)
    adx[f - 1:] = a[ph, col]
    atr_pct[f - 1:] = r[ph, col]
    atr_rel[f - 1:] = rel[ph, col]
    return adx, atr_pct, atr_rel


def compute_input_series(candles_1m: Candles, leader: str | None = None,
                         config: FeatureConfig | None = None) -> InputSeries:
    """The six inputs at every bar of ``candles_1m`` (vectorised; same values as calling
    :func:`compute_inputs` on every prefix of the history)."""
    cfg = config or FeatureConfig()
    if candles_1m.timeframe != "1m":
        raise MarketDataError("regime inputs need 1m candles")
    li = _leader_index(candles_1m, leader)
    bars, _ = filled_bars(candles_1m)
    c = bars.close
    n_mk, n = c.shape
    rw, vw = cfg.return_window, cfg.value_window

    ret = np.full_like(c, np.nan)
    if n > rw:
        ret[:, rw:] = c[:, rw:] / c[:, :-rw] - 1.0
    ok = np.isfinite(ret)
    cnt = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        breadth = np.where(cnt > 0, (ok & (ret > 0)).sum(axis=0) / cnt, np.nan)
        r0 = np.where(ok, ret, 0.0)
        mean = r0.sum(axis=0) / cnt
        dispersion = np.sqrt(np.maximum((np.where(ok, (ret - mean) ** 2, 0.0)).sum(axis=0) / cnt, 0.0))
    dispersion = np.where(cnt > 0, dispersion, np.nan)

    value = np.nan_to_num(c * bars.volume)
    csum = np.zeros((n_mk, n + 1))
    np.cumsum(value, axis=1, out=csum[:, 1:])
    share = np.full(n, np.nan)
    if n >= vw:
        win = csum[:, vw:] - csum[:, :-vw]        # value over the window ending at t = vw-1..n-1
        win = np.maximum(win, 0.0)
        k = min(cfg.top_k, n_mk)
        top = np.partition(win, n_mk - k, axis=0)[n_mk - k:].sum(axis=0)
        tot = win.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            share[vw - 1:] = np.where(tot > 0, top / tot, np.nan)

    step, wb = cfg.whipsaw_tf, cfg.whipsaw_bars
    lc = c[li]
    whip = np.full(n, np.nan)
    span = step * wb
    if n > span:
        d = np.full(n, np.nan)
        d[step:] = lc[step:] - lc[:-step]
        m = n - span
        # returns r_k(t) = d[t - step*k], k = 0..wb-1, for t = span..n-1
        rk = np.stack([d[span - step * k: n - step * k] for k in range(wb)])  # [wb x m], newest first
        path = np.abs(rk).sum(axis=0)
        net = np.abs(lc[span:] - lc[:m])
        with np.errstate(invalid="ignore", divide="ignore"):
            er = np.where(path > 0, net / path, 0.0)
        s = np.sign(rk)
        flips = (s[1:] * s[:-1] < 0).sum(axis=0) / max(wb - 1, 1)
        w = 0.5 * (1.0 - er) + 0.5 * flips
        w[~np.all(np.isfinite(rk), axis=0) | ~np.isfinite(net)] = np.nan
        whip[span:] = w

    lead = Bars(*(a[li:li + 1] for a in (bars.open, bars.high, bars.low, bars.close, bars.volume)))
    adx, atr_pct, atr_rel = _leader_4h_series(lead, cfg)
    return InputSeries(candles_1m.ts, adx, atr_pct, breadth, dispersion, share, whip, atr_rel)
