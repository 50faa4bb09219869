"""What follows a regime label on data without ground truth [RG-2] (pure numpy).

Real candles carry no true regime, so a label is judged by the market's next hours. For every
bar ``t`` and every market, over the next ``horizon`` bars ``t .. t + horizon``:

* ``vol``: realised volatility, the standard deviation of the bar log returns, scaled to one
  hour (``x sqrt(60 / bar_minutes)``), in percent;
* ``efficiency``: directional efficiency ``|net log move| / path length`` (0 = went nowhere,
  1 = a straight line), the path measured on closes ``path_step`` bars apart (15 minutes by
  default: on 1-minute closes the path is dominated by tick noise and a random walk already
  scores 1/sqrt(240) = 0.06, on 15-minute steps a random walk scores ~0.2 and a trend clearly
  more); NaN when the path is flat;
* ``drawdown``: the worst peak-to-trough fall inside the window, in percent of the peak
  (``max_s (1 - close_s / max_{u <= s} close_u)``), the peak counted from ``close_t``.

The market-level values are averaged over the markets that have the whole window (a
universe-level figure); bars whose window runs past the data are NaN. :func:`label_outcomes`
then reports, for each label, its share of bars and the median and mean of the three metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regime.engine.evaluate import ALL_LABELS

METRICS: tuple[str, ...] = ("vol", "efficiency", "drawdown")


@dataclass(frozen=True, slots=True)
class ForwardMetrics:
    """Universe means ``[bars]`` of the three forward metrics (NaN where the window is short)."""

    vol: np.ndarray
    efficiency: np.ndarray
    drawdown: np.ndarray


def _windows(x: np.ndarray, horizon: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, horizon + 1)


def forward_metrics(close: np.ndarray, horizon: int, bar_minutes: int = 1, path_step: int | None = None,
                    chunk: int = 8192) -> ForwardMetrics:
    """Forward metrics of ``close`` ``[markets x bars]`` (forward-filled, NaN = not listed) over
    the next ``horizon`` bars; ``path_step`` (bars, default 15 minutes) spaces the closes of the
    efficiency path and must divide ``horizon``."""
    c = np.atleast_2d(np.asarray(close, dtype=np.float64))
    n_mk, n = c.shape
    if horizon < 2:
        raise ValueError("horizon must be at least 2 bars")
    step = path_step if path_step is not None else max(1, 15 // max(1, bar_minutes))
    while horizon % step:
        step -= 1           # the largest step <= the requested one that divides the horizon
    sums = {m: np.zeros(n) for m in METRICS}
    counts = {m: np.zeros(n) for m in METRICS}
    scale = 100.0 * np.sqrt(60.0 / bar_minutes)
    m_valid = n - horizon
    for i in range(n_mk):
        if m_valid <= 0:
            break
        lc = np.log(c[i])
        net = np.abs(lc[horizon:] - lc[:-horizon])           # |net move| from bar t to t + horizon
        path = np.zeros(m_valid)
        ds = np.abs(lc[step:] - lc[:-step])                  # |move| over one path step from bar t
        for j in range(horizon // step):
            path += ds[j * step: j * step + m_valid]
        with np.errstate(invalid="ignore", divide="ignore"):
            eff = np.where(path > 0, net / path, np.nan)
        vol = np.full(m_valid, np.nan)
        dd = np.full(m_valid, np.nan)
        for a in range(0, m_valid, chunk):
            b = min(m_valid, a + chunk)
            w = _windows(c[i, a:b + horizon], horizon)       # closes t .. t + horizon
            with np.errstate(invalid="ignore"):
                vol[a:b] = np.std(np.diff(np.log(w), axis=1), axis=1, ddof=1) * scale
                peak = np.maximum.accumulate(w, axis=1)
                dd[a:b] = np.max(1.0 - w / peak, axis=1) * 100.0
        for name, v in (("vol", vol), ("efficiency", eff), ("drawdown", dd)):
            ok = np.isfinite(v)
            sums[name][:m_valid][ok] += v[ok]
            counts[name][:m_valid][ok] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = {m: np.where(counts[m] > 0, sums[m] / counts[m], np.nan) for m in METRICS}
    return ForwardMetrics(**out)


def label_outcomes(labels: np.ndarray | Sequence[str], fwd: ForwardMetrics, mask: np.ndarray | None = None,
                   label_names: Sequence[str] = ALL_LABELS) -> dict[str, dict[str, float | int | None]]:
    """Per label: ``bars``, ``share`` of the scored bars, and ``<metric>_median`` /
    ``<metric>_mean`` over its bars whose forward window is complete (None when it has none)."""
    lab = np.asarray(labels).astype(str)
    sel = np.ones(len(lab), bool) if mask is None else np.asarray(mask, bool)
    total = int(sel.sum())
    out: dict[str, dict[str, float | int | None]] = {}
    for name in label_names:
        on = sel & (lab == name)
        row: dict[str, float | int | None] = {"bars": int(on.sum()), "share": float(on.sum() / total) if total else 0.0}
        for m in METRICS:
            v = getattr(fwd, m)[on]
            v = v[np.isfinite(v)]
            row[f"{m}_median"] = float(np.median(v)) if len(v) else None
            row[f"{m}_mean"] = float(np.mean(v)) if len(v) else None
        out[name] = row
    return out
