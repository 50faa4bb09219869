"""The window-only part of every bar's scan, computed for blocks of bars at once [BT-1].

``strategies.engine.pipeline.scan`` at bar t reads only the window of candles ending at t (and
the leader's longer history) for everything except the aggregation, which carries the score
EMA and the held markets from bar to bar. ``ScanPrecompute`` produces, for every bar, exactly
what ``scan`` computes before ``aggregate``: the regime (inputs and classification), the
screener result and the eight modules' outputs, plus the tick's ATR and returns arrays, with
the same functions on the same numbers:

* module bars: the scan resamples its 1000 one-minute bars (gaps forward-filled inside the
  window) into 200 end-aligned 5-minute buckets. Here the forward fill and the bucket rules
  (open of the first minute, ``fmax``/``fmin`` chains and the volume sum in the same order,
  NaN when a minute is NaN) run once over the whole period, and the window's buckets are every
  fifth bucket ending at t. The forward fill of a window equals the whole-period one when no
  market's window begins inside a gap after the market's first bar; a bar where one does is
  computed from its own materialised window (``filled_bars`` + ``resample_end_aligned``).
* row-wise modules (every module whose rule looks at one market at a time: TP, VCB, LSR, MR,
  MOM, MICRO) and the indicators score the stacked windows of a block of bars as one
  ``[bars x markets, 200]`` array: each row's numbers go through the same operations as in a
  single scan. Modules that compare markets (LF: the leader; REGIME: ranks across markets)
  and any module not known to be row-wise run once per bar on that bar's slice.
* the regime's leader ADX / ATR: the leader's windows of a block are stacked and go through
  ``filled_bars``, ``resample_end_aligned`` and the indicators together; the market-wide inputs
  come from ``compute_inputs`` on the bar's window itself.

Equality with ``scan`` on every bar is asserted by ``tests/engine/test_backtest_pipeline.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from execution.engine.types import Candles, MarketInfo, Ticker
from regime.engine.classifier import classify, max_positions
from regime.engine.features import Bars, compute_inputs, filled_bars, leader_stats, resample_end_aligned
from regime.engine.types import RegimeInputs, RegimeState
from strategies.engine import indicators as ind
from strategies.engine.modules.base import ScanContext
from strategies.engine.pipeline import ScanParams
from strategies.engine.screener import ScreenResult, screen
from strategies.engine.types import ModuleOutput
from traders.engine.tick import Derived

#: Modules whose score of a market reads only that market's rows (safe to stack windows).
ROW_WISE_MODULES = frozenset({"TP", "VCB", "LSR", "MR", "MOM", "MICRO"})
MAX_ROWS = 4096          # stacked rows per block (bars x markets): bounds the block's memory


@dataclass(frozen=True)
class BarScan:
    """What ``scan`` has computed at one bar just before ``aggregate``."""

    ts: int
    regime: RegimeState
    screen: ScreenResult
    outputs: tuple[ModuleOutput, ...]
    can_short: np.ndarray
    max_positions: int


def _full_fill(c: Candles) -> tuple[Bars, np.ndarray]:
    o, h, lo, cl, v, missing = ind.fill_missing_bars(c.close, c.open, c.high, c.low, c.volume)
    return Bars(o, h, lo, cl, v), missing


def _rolling_buckets(b: Bars, factor: int) -> Bars:
    """Bucket of ``factor`` minutes ending at every minute (``resample_end_aligned``'s rules),
    ``[markets x bars]``; NaN before the first complete bucket."""
    n = b.close.shape[1]
    out = [np.full_like(b.close, np.nan) for _ in range(5)]
    if n < factor:
        return Bars(*out)
    e = slice(factor - 1, n)

    def part(a: np.ndarray, j: int) -> np.ndarray:
        return a[:, j: n - factor + 1 + j]

    o = part(b.open, 0)
    c = part(b.close, factor - 1)
    h, lo, v = part(b.high, 0).copy(), part(b.low, 0).copy(), part(b.volume, 0).copy()
    bad = np.isnan(part(b.close, 0))
    for j in range(1, factor):
        np.fmax(h, part(b.high, j), out=h)
        np.fmin(lo, part(b.low, j), out=lo)
        v += part(b.volume, j)
        bad |= np.isnan(part(b.close, j))
    for arr, val in zip(out, (o, h, lo, c, v), strict=True):
        arr[:, e] = np.where(bad, np.nan, val)
    return Bars(*out)


class ScanPrecompute:
    """Per-bar ``BarScan`` and ``Derived`` for bars ``start <= t < end`` of ``candles`` (the
    whole period), computed block by block on demand."""

    def __init__(self, candles: Candles, markets: Mapping[str, MarketInfo], params: ScanParams, *,
                 window_bars: int, leader_bars: int, atr_period: int, tickers: Callable[[int], dict[str, Ticker]],
                 block_bars: int = 256, start: int, end: int, workers: int = 1) -> None:
        self.c, self.markets, self.p = candles, markets, params
        self.window, self.leader_bars, self.atr_period = window_bars, leader_bars, atr_period
        self.tickers = tickers
        self.start, self.end = start, end
        self.symbols = candles.symbols
        m = len(self.symbols)
        self.block = max(1, min(block_bars, MAX_ROWS // max(m, 1)))
        self.tf = params.module_timeframe
        self.leader_idx = 0 if params.leader is None else candles.index(params.leader)
        self.can_short = np.array([bool(markets[s].can_short) if s in markets else False for s in self.symbols])
        self.full, self.missing = _full_fill(candles)
        self.buckets = _rolling_buckets(self.full, self.tf)
        raw_close = candles.close
        finite = np.isfinite(raw_close)
        n = raw_close.shape[1]
        first_valid = np.where(finite.any(axis=1), np.argmax(finite, axis=1), n)
        ts_idx = np.arange(n)
        w0 = ts_idx - window_bars + 1
        ok = w0 >= 0
        w0c = np.maximum(w0, 0)
        # the window's own forward fill equals the whole-period one (see the module docstring)
        self.clean = ok & np.all((w0c[None, :] <= first_valid[:, None]) | finite[:, w0c], axis=0)
        self._block_id = -1
        self._parts: list[BarScan] = []
        self._derived: list[Derived] = []
        self.workers = max(1, int(workers))
        self._pool = None
        self._pending: dict[int, object] = {}
        if self.workers > 1:
            self._start_pool()

    # ------------------------------------------------------------------ access

    def at(self, t: int) -> BarScan:
        self._load(t)
        part = self._parts[t - self._block_start]
        assert part is not None
        return part

    def derived(self, t: int) -> Derived:
        self._load(t)
        d = self._derived[t - self._block_start]
        assert d is not None
        return d

    def _load(self, t: int) -> None:
        if not self.start <= t < self.end:
            raise IndexError(f"bar {t} outside the precomputed range [{self.start}, {self.end})")
        b = (t - self.start) // self.block
        if b != self._block_id:
            a = self.start + b * self.block
            if self._pool is not None:
                self._parts, self._derived = self._from_pool(b)
            else:
                self._parts, self._derived = self._compute(a, min(a + self.block, self.end))
            self._block_id, self._block_start = b, a

    # ------------------------------------------------------------------ worker processes

    @property
    def n_blocks(self) -> int:
        return -(-(self.end - self.start) // self.block)

    def _bounds(self, b: int) -> tuple[int, int]:
        a = self.start + b * self.block
        return a, min(a + self.block, self.end)

    def _start_pool(self) -> None:
        """Blocks are pure functions of the candles: ``workers`` forked processes compute the
        next blocks while the caller runs the event loop. Where processes cannot be forked (a
        daemonic worker, no fork on the platform) everything runs in this process."""
        global _ACTIVE
        import multiprocessing as mp

        try:
            ctx = mp.get_context("fork")
            _ACTIVE = self
            self._pool = ctx.Pool(self.workers)
        except (AssertionError, OSError, ValueError):
            self._pool, self.workers = None, 1

    def _from_pool(self, b: int) -> tuple[list[BarScan], list[Derived]]:
        for k in range(b, min(b + self.workers + 1, self.n_blocks)):
            if k not in self._pending:
                self._pending[k] = self._pool.apply_async(_compute_block, (self._bounds(k),))
        result = self._pending.pop(b).get()
        for k in [k for k in self._pending if k < b]:
            self._pending.pop(k)
        return result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    # ------------------------------------------------------------------ one block

    def _window(self, t: int) -> Candles:
        c = self.c
        s = slice(max(0, t - self.window + 1), t + 1)
        return Candles(c.symbols, "1m", c.ts[s], c.open[:, s], c.high[:, s], c.low[:, s], c.close[:, s],
                       c.volume[:, s])

    def _leader(self, t: int) -> Candles:
        c, i = self.c, self.leader_idx
        s = slice(max(0, t - self.leader_bars + 1), t + 1)
        return Candles((c.symbols[i],), "1m", c.ts[s], c.open[i:i + 1, s], c.high[i:i + 1, s], c.low[i:i + 1, s],
                       c.close[i:i + 1, s], c.volume[i:i + 1, s])

    def _module_bars(self, ts: list[int]) -> tuple[Bars, list[Bars], list[Bars]]:
        """Stacked module-timeframe bars ``[len(ts) * markets x buckets]``, and per bar the
        module bars and the 1-minute window bars (views)."""
        m, f = len(self.symbols), self.tf
        nb = self.window // f
        first = self.window - nb * f          # resample drops the oldest window % f minutes
        stacked, one_min = [], []
        clean = [t for t in ts if self.clean[t]]
        out_rows: dict[int, Bars] = {}
        if clean:
            tt = np.array(clean)
            ends = (tt - self.window + 1 + first + f - 1)[:, None] + f * np.arange(nb)[None, :]   # [k x nb]
            arrays = []
            for a in (self.buckets.open, self.buckets.high, self.buckets.low, self.buckets.close,
                      self.buckets.volume):
                g = a[:, ends]                                  # [m x k x nb]
                arrays.append(np.ascontiguousarray(g.transpose(1, 0, 2)).reshape(len(clean) * m, nb))
            for k, t in enumerate(clean):
                out_rows[t] = Bars(*(x[k * m:(k + 1) * m] for x in arrays))
        for t in ts:
            if t in out_rows:
                s = slice(t - self.window + 1, t + 1)
                one_min.append(Bars(*(a[:, s] for a in (self.full.open, self.full.high, self.full.low,
                                                        self.full.close, self.full.volume))))
            else:
                b1, _ = filled_bars(self._window(t))
                out_rows[t] = resample_end_aligned(b1, f)
                one_min.append(b1)
            stacked.append(out_rows[t])
        widths = {b.close.shape[1] for b in stacked}
        if len(widths) == 1:
            all_bars = Bars(*(np.concatenate([getattr(b, n) for b in stacked]) for n in
                              ("open", "high", "low", "close", "volume")))
        else:      # windows shorter than window_bars (only before the first full window)
            all_bars = None
        return all_bars, stacked, one_min

    def _leader_stats(self, ts: list[int]) -> list[tuple[float, float, float]]:
        """The regime's leader ADX / ATR% (``compute_inputs`` with ``leader_history``) per bar."""
        cfg = self.p.features
        groups: dict[int, list[int]] = {}
        for t in ts:
            groups.setdefault(self._leader(t).n_bars, []).append(t)
        stats: dict[int, tuple[float, float, float]] = {}
        for _, members in groups.items():
            raws = [self._leader(t) for t in members]
            cat = Candles(tuple(f"L{k}" for k in range(len(raws))), "1m", raws[0].ts,
                          *(np.concatenate([getattr(r, n) for r in raws]) for n in
                            ("open", "high", "low", "close", "volume")))
            lb, _ = filled_bars(cat)
            adx, pct, rel = leader_stats(resample_end_aligned(lb, cfg.leader_tf), cfg)
            for k, t in enumerate(members):
                stats[t] = (float(adx[k]), float(pct[k]), float(rel[k]))
        return [stats[t] for t in ts]

    def _compute(self, a: int, b: int) -> tuple[list[BarScan], list[Derived]]:
        p, m = self.p, len(self.symbols)
        ts = list(range(a, b))
        all_bars, per_bar, one_min = self._module_bars(ts)
        leader = self._leader_stats(ts)
        # Row-wise modules and indicators on the stacked windows.
        stacked_out: dict[str, ModuleOutput] = {}
        row_mods = [mod for mod in p.modules if mod.name in ROW_WISE_MODULES]
        if all_bars is not None:
            k = len(ts)
            big_ctx = ScanContext(symbols=self.symbols * k, ts=0, bars=all_bars, bars_1m=all_bars,
                                  timeframe_minutes=self.tf, leader_index=self.leader_idx, regime=None,  # type: ignore[arg-type]
                                  can_short=np.tile(self.can_short, k), books=None)
            for mod in row_mods:
                stacked_out[mod.name] = mod.score(big_ctx)
            atr14 = big_ctx.ind.atr(14)[:, -1]
            atr_p = atr14 if self.atr_period == 14 else big_ctx.ind.atr(self.atr_period)[:, -1]
            with np.errstate(divide="ignore", invalid="ignore"):
                rets = np.diff(np.log(all_bars.close), axis=1)
        parts: list[BarScan] = []
        derived: list[Derived] = []
        for j, t in enumerate(ts):
            window = self._window(t)
            last = window.select((self.symbols[self.leader_idx],)).tail(1)
            inp = compute_inputs(window, leader=self.symbols[self.leader_idx], leader_history=last, config=p.features)
            adx, atr_pct_l, atr_rel_l = leader[j]
            inputs = RegimeInputs(adx, atr_pct_l, inp.breadth_up_1h, inp.dispersion_1h, inp.top5_value_share_1h,
                                  inp.whipsaw_5m, atr_rel_l)
            regime = classify(inputs, p.thresholds)
            bars = per_bar[j]
            rows = slice(j * m, (j + 1) * m)
            if all_bars is not None:
                a14, ap, r = atr14[rows], atr_p[rows], rets[rows]
            else:
                a14 = ind.atr(bars.high, bars.low, bars.close, 14)[:, -1]
                ap = a14 if self.atr_period == 14 else ind.atr(bars.high, bars.low, bars.close, self.atr_period)[:, -1]
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = np.diff(np.log(bars.close), axis=1)
            # Screener [PL-1], as in scan
            b1 = one_min[j]
            n_bars = window.n_bars
            c1 = b1.close
            last_close = c1[:, -1]
            atr_pct = a14 / bars.close[:, -1] * 100.0
            hour = min(60, n_bars)
            if self.clean[t]:
                miss = self.missing[:, t - hour + 1: t + 1]
            else:
                _, miss_w = filled_bars(window)
                miss = miss_w[:, -hour:]
            missing_share = (miss | np.isnan(c1[:, -hour:])).mean(axis=1)
            day = min(1440, n_bars)
            value_candles = np.nansum(np.ascontiguousarray(c1[:, -day:] * b1.volume[:, -day:]), axis=1)
            scr = screen(self.symbols, last_close, atr_pct, missing_share, p.screener, tickers=self.tickers(t),
                         books={}, markets=self.markets, value_from_candles=value_candles)
            ctx = ScanContext(symbols=self.symbols, ts=int(self.c.ts[t]), bars=bars, bars_1m=b1,
                              timeframe_minutes=self.tf, leader_index=self.leader_idx, regime=regime,
                              can_short=self.can_short, books=None)
            outputs = []
            for mod in p.modules:
                if mod.name in stacked_out:
                    o = stacked_out[mod.name]
                    outputs.append(ModuleOutput(o.module, o.score[rows], o.direction[rows], o.reasons[rows],
                                                {key: v[rows] for key, v in o.raw.items()}))
                else:
                    outputs.append(mod.score(ctx))
            parts.append(BarScan(int(self.c.ts[t]), regime, scr, tuple(outputs), self.can_short,
                                 max_positions(regime.label, p.profile_max_positions)))
            derived.append(Derived(np.ascontiguousarray(ap), np.ascontiguousarray(r)))
        return parts, derived


_ACTIVE: ScanPrecompute | None = None      # the precompute a forked worker serves


def _compute_block(bounds: tuple[int, int]) -> tuple[list[BarScan], list[Derived]]:
    assert _ACTIVE is not None
    return _ACTIVE._compute(*bounds)
