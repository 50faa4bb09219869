"""Forward-return labels of a feature snapshot [AI-1].

A snapshot describes one market at the close of the bar ``bar_ts`` (bar-open epoch seconds) at
price ``price`` (that bar's close). Its labels answer "what would a long trade opened at that
moment have made", net of the round trip's costs::

    r_net = r - (2 * fee + 2 * slippage)

For a horizon of ``H`` minutes the window is the ``H`` one-minute bars that open at
``bar_ts + 60 .. bar_ts + H * 60`` (they close at the decision time + H minutes). Nothing after
the window is read, so no label can see past its own horizon.

* ``label_ret_60m`` / ``label_ret_240m``: last close in the 60 / 240 minute window over
  ``price``, minus 1, minus the round-trip cost.
* ``label_mfe_240m``: maximum favourable excursion: highest high in the 240 minute window over
  ``price`` - 1 - cost (the best exit the path offered, net).
* ``label_mae_240m``: maximum adverse excursion: lowest low in the window over ``price`` - 1 -
  cost (the worst mark, net; usually negative).
* ``label_dd_240m``: the deepest peak-to-trough fall inside the window, ``min_t(low_t / peak_t
  - 1)`` with ``peak_t`` the highest of ``price`` and the highs of the bars before ``t`` (a path
  property: no cost, always <= 0).

A label exists only once its horizon has passed: ``known_until`` (the newest bar-open time the
market data is complete to) must be at or after ``bar_ts + H * 60``. Until then it is None, and
the labeller tries again later. A window that has passed but holds no bar of the market (a
delisting, a long gap) has no label either, and is final (``Labels.complete``).

Labels are from the long side (the spot venues trade long only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

HORIZON_SHORT = 60      # minutes
HORIZON_LONG = 240      # minutes
LABEL_FIELDS = ("label_ret_60m", "label_ret_240m", "label_mfe_240m", "label_mae_240m", "label_dd_240m")


@dataclass(frozen=True, slots=True)
class LabelCosts:
    """Per-side costs as fractions of notional (0.0005 = 5 bp)."""

    fee: float
    slippage: float

    def __post_init__(self) -> None:
        for name in ("fee", "slippage"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite fraction >= 0, got {value!r}")

    @property
    def round_trip(self) -> float:
        return 2.0 * self.fee + 2.0 * self.slippage


@dataclass(frozen=True, slots=True)
class Labels:
    """The five labels (None where not yet known or not computable) and whether they are final."""

    label_ret_60m: float | None = None
    label_ret_240m: float | None = None
    label_mfe_240m: float | None = None
    label_mae_240m: float | None = None
    label_dd_240m: float | None = None
    complete: bool = False          # the long horizon has passed: nothing will change any more

    def as_fields(self) -> dict[str, float | None]:
        return {name: getattr(self, name) for name in LABEL_FIELDS}


@dataclass(frozen=True, slots=True)
class SymbolBars:
    """One market's 1-minute bars (bar-open ``ts`` strictly increasing; int64 / float64 ``[bars]``).

    Missing bars are simply absent (or NaN, which is dropped)."""

    ts: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.ts)
        for name in ("high", "low", "close"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"{name} must have the shape of ts")
        if n > 1 and not np.all(np.diff(self.ts) > 0):
            raise ValueError("bar timestamps must be strictly increasing")

    @classmethod
    def from_arrays(cls, ts, high, low, close) -> SymbolBars:
        ts = np.asarray(ts, dtype=np.int64)
        high, low, close = (np.asarray(a, dtype=np.float64) for a in (high, low, close))
        ok = np.isfinite(high) & np.isfinite(low) & np.isfinite(close)
        return cls(ts[ok], high[ok], low[ok], close[ok])


def _window(bars: SymbolBars, bar_ts: int, minutes: int, bar_seconds: int) -> slice:
    lo = np.searchsorted(bars.ts, bar_ts + bar_seconds, side="left")
    hi = np.searchsorted(bars.ts, bar_ts + minutes * 60, side="right")
    return slice(int(lo), int(hi))


def label_snapshot(bar_ts: int, price: float, bars: SymbolBars, costs: LabelCosts, known_until: int,
                   bar_seconds: int = 60) -> Labels:
    """Labels of one snapshot from its market's bars; see the module docstring.

    ``bars`` may hold any range (earlier and later bars are ignored); ``known_until`` is the
    bar-open time up to which the market data is complete."""
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"snapshot price must be positive, got {price!r}")
    cost = costs.round_trip
    short_due = known_until >= bar_ts + HORIZON_SHORT * 60
    long_due = known_until >= bar_ts + HORIZON_LONG * 60
    ret_60 = None
    if short_due:
        w = _window(bars, bar_ts, HORIZON_SHORT, bar_seconds)
        if w.stop > w.start:
            ret_60 = float(bars.close[w.stop - 1] / price - 1.0 - cost)
    if not long_due:
        return Labels(label_ret_60m=ret_60)
    w = _window(bars, bar_ts, HORIZON_LONG, bar_seconds)
    if w.stop <= w.start:
        return Labels(label_ret_60m=ret_60, complete=True)
    high, low, close = bars.high[w], bars.low[w], bars.close[w]
    peak = np.maximum.accumulate(np.concatenate(([price], high[:-1])))
    return Labels(
        label_ret_60m=ret_60,
        label_ret_240m=float(close[-1] / price - 1.0 - cost),
        label_mfe_240m=float(high.max() / price - 1.0 - cost),
        label_mae_240m=float(low.min() / price - 1.0 - cost),
        label_dd_240m=float(min(0.0, (low / peak - 1.0).min())),
        complete=True,
    )
