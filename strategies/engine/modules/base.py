"""Common interface of the score modules [SC-1] and the shared scan context.

A module is a small frozen dataclass (its parameters) with a ``name`` and a
``score(ctx) -> ModuleOutput`` that judges every market at once from ``ctx``. Indicators are
computed once per scan through ``ctx.ind`` (a memo keyed by indicator and parameters), so two
modules asking for EMA(20) share one array.

Normalisation [SC-2]: raw metrics become 0..100 with :func:`linear` (0 at ``lo``, 100 at
``hi``, clipped) or :func:`logistic` (50 at ``mid``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from execution.engine.types import OrderBook
from regime.engine.features import Bars
from regime.engine.types import RegimeState
from strategies.engine import indicators as ind
from strategies.engine.types import Direction, ModuleOutput


def linear(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 at ``lo``, 100 at ``hi`` (either order), clipped; NaN -> 0."""
    with np.errstate(invalid="ignore"):
        v = np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 100.0
    return np.nan_to_num(v, nan=0.0)


def logistic(x: np.ndarray, mid: float, scale: float) -> np.ndarray:
    """``100 / (1 + exp(-(x - mid) / scale))``; NaN -> 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        v = 100.0 / (1.0 + np.exp(-(x - mid) / scale))
    return np.nan_to_num(v, nan=0.0)


class Indicators:
    """Per-scan memo of indicators on the module timeframe bars (``[markets x bars]``)."""

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self._memo: dict[tuple[object, ...], object] = {}

    def _get(self, key: tuple[object, ...], fn: object) -> object:
        if key not in self._memo:
            self._memo[key] = fn()  # type: ignore[operator]
        return self._memo[key]

    def ema(self, n: int) -> np.ndarray:
        return self._get(("ema", n), lambda: ind.ema(self.bars.close, n))  # type: ignore[return-value]

    def atr(self, n: int = 14) -> np.ndarray:
        b = self.bars
        return self._get(("atr", n), lambda: ind.atr(b.high, b.low, b.close, n))  # type: ignore[return-value]

    def adx(self, n: int = 14) -> ind.ADX:
        b = self.bars
        return self._get(("adx", n), lambda: ind.adx(b.high, b.low, b.close, n))  # type: ignore[return-value]

    def rsi(self, n: int = 14) -> np.ndarray:
        return self._get(("rsi", n), lambda: ind.rsi(self.bars.close, n))  # type: ignore[return-value]

    def bollinger(self, n: int = 20, k: float = 2.0) -> ind.Bollinger:
        return self._get(("bb", n, k), lambda: ind.bollinger(self.bars.close, n, k))  # type: ignore[return-value]

    def macd(self, fast: int = 12, slow: int = 26, signal: int = 9) -> ind.MACD:
        return self._get(("macd", fast, slow, signal),
                         lambda: ind.macd(self.bars.close, fast, slow, signal))  # type: ignore[return-value]

    def volume_spike(self, n: int = 20) -> np.ndarray:
        return self._get(("vs", n), lambda: ind.volume_spike(self.bars.volume, n))  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class BookArrays:
    """Top-of-book history of the markets that have books, ``[markets x snapshots]`` float64,
    right-aligned (NaN where a market has fewer snapshots), and the row mask ``has_book``."""

    bid_px: np.ndarray
    bid_qty: np.ndarray
    ask_px: np.ndarray
    ask_qty: np.ndarray
    has_book: np.ndarray

    @classmethod
    def from_books(cls, symbols: Sequence[str], books: Mapping[str, Sequence[OrderBook] | OrderBook] | None
                   ) -> BookArrays:
        """Pack per-symbol snapshots (oldest first; one OrderBook counts as one snapshot)."""
        n = len(symbols)
        books = books or {}
        seqs: list[Sequence[OrderBook]] = []
        for s in symbols:
            b = books.get(s)
            seqs.append(() if b is None else (b,) if isinstance(b, OrderBook) else tuple(b))
        width = max((len(q) for q in seqs), default=0)
        arrs = np.full((4, n, max(width, 1)), np.nan)
        for i, q in enumerate(seqs):  # marshalling only: books exist for the few screened markets
            for j, ob in enumerate(q):
                col = width - len(q) + j
                if len(ob.bids) and len(ob.asks):
                    arrs[:, i, col] = (ob.bids[0, 0], ob.bids[0, 1], ob.asks[0, 0], ob.asks[0, 1])
        has = np.isfinite(arrs[0, :, -1])
        return cls(arrs[0], arrs[1], arrs[2], arrs[3], has)


@dataclass(slots=True)
class ScanContext:
    """Everything a module may look at for one scan (read-only by convention).

    ``bars``: module timeframe OHLCV (``timeframe_minutes``, end-aligned, gaps filled);
    ``bars_1m``: the 1-minute bars; ``regime``: this scan's regime; ``can_short``: bool
    ``[markets]``; ``books``: top-of-book arrays or None when no books were given.
    """

    symbols: tuple[str, ...]
    ts: int
    bars: Bars
    bars_1m: Bars
    timeframe_minutes: int
    leader_index: int
    regime: RegimeState
    can_short: np.ndarray
    books: BookArrays | None = None
    ind: Indicators = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.symbols)
        if self.bars.close.shape[0] != n or self.bars_1m.close.shape[0] != n:
            raise ValueError("bars and symbols disagree on the number of markets")
        if self.can_short.shape != (n,):
            raise ValueError("can_short must be [markets]")
        self.ind = Indicators(self.bars)

    @property
    def n_markets(self) -> int:
        return len(self.symbols)


@runtime_checkable
class ScoreModule(Protocol):
    """A plug-in score module [SC-1]."""

    name: str

    def score(self, ctx: ScanContext) -> ModuleOutput: ...


def build_reasons(flags: Sequence[tuple[str, np.ndarray]], n: int) -> tuple[tuple[str, ...], ...]:
    """Per-market reason tuples from named boolean masks, without a Python loop over markets:
    markets are grouped by their flag combination and each combination is built once."""
    if not flags:
        return ((),) * n
    code = np.zeros(n, dtype=np.int64)
    for bit, (_, mask) in enumerate(flags):
        code |= np.asarray(mask, dtype=bool).astype(np.int64) << bit
    uniq, inv = np.unique(code, return_inverse=True)
    combos = [tuple(name for bit, (name, _) in enumerate(flags) if (u >> bit) & 1) for u in uniq.tolist()]
    return tuple(combos[i] for i in inv.tolist())


def output(name: str, long_score: np.ndarray, short_score: np.ndarray, flags: Sequence[tuple[str, np.ndarray]],
           raw: dict[str, np.ndarray], can_short: np.ndarray) -> ModuleOutput:
    """Pick the stronger side per market (shorts only where allowed) and pack a ModuleOutput."""
    long_score = np.clip(np.nan_to_num(long_score), 0.0, 100.0)
    short_score = np.where(can_short, np.clip(np.nan_to_num(short_score), 0.0, 100.0), 0.0)
    is_long = long_score >= short_score
    score = np.where(is_long, long_score, short_score)
    direction = np.where(score > 0, np.where(is_long, Direction.LONG, Direction.SHORT), Direction.NONE)
    n = len(score)
    return ModuleOutput(name, score.astype(np.float64), direction.astype(np.int8), build_reasons(flags, n),
                        {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()})


def last(a: np.ndarray, k: int = 1) -> np.ndarray:
    """Column ``-k`` of a ``[markets x bars]`` array (NaN when there are fewer bars)."""
    if a.shape[1] < k:
        return np.full(a.shape[0], np.nan)
    return a[:, -k]
