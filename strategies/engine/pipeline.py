"""One scan of the whole market: screener -> regime -> score modules -> aggregator [PL-1], [PL-2].

:func:`scan` is a pure function of its arguments: no clock, no I/O, no randomness, so storing
its inputs (the candles window, books, tickers, params, EMA state, held markets) is enough to
recompute every score later (``explain_signal``).

Input window: ``candles_1m`` is 1-minute candles of every market ending at the bar being
evaluated (closed bars only). Modules run on ``module_timeframe``-minute bars (5) built from
it, end-aligned; the deepest look-back is VCB (100 bars of bandwidth after a 20-bar warm-up)
so the modules want ``RECOMMENDED_BARS`` = 1000 one-minute bars (at least ``min_bars`` = 300;
with fewer, warm-up flags explain the zeros). The regime's leader ADX / ATR need a longer
leader history: pass ``leader_history`` (1 m candles of the leader only, ending at the same
bar, ``FeatureConfig.leader_bars_needed`` long) or the leader row of ``candles_1m`` is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from execution.engine.types import Candles, MarketDataError, MarketInfo, OrderBook, Ticker
from regime.engine.classifier import RegimeThresholds, classify, max_positions
from regime.engine.features import FeatureConfig, compute_inputs, filled_bars, resample_end_aligned
from regime.engine.types import RegimeState
from strategies.engine import indicators as ind
from strategies.engine.aggregator import Aggregate, AggregatorParams, aggregate
from strategies.engine.modules import default_modules
from strategies.engine.modules.base import BookArrays, ScanContext, ScoreModule
from strategies.engine.screener import ScreenerParams, ScreenResult, candidates_for_top_n, screen
from strategies.engine.types import Action, Direction, MarketSignal, ModuleOutput

RECOMMENDED_BARS = 1000


@dataclass(frozen=True, slots=True)
class ScanParams:
    """Everything that tunes a scan (per trader profile)."""

    module_timeframe: int = 5                   # minutes per module bar
    leader: str | None = None                   # default: the first symbol
    min_bars: int = 300
    screener: ScreenerParams = field(default_factory=ScreenerParams)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    thresholds: RegimeThresholds = field(default_factory=RegimeThresholds)
    aggregator: AggregatorParams = field(default_factory=AggregatorParams)
    modules: tuple[ScoreModule, ...] = field(default_factory=default_modules)
    profile_max_positions: int = 10
    signals_for_all: bool = False               # MarketSignal objects for every market, not
                                                # just candidates and held markets


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The scan's verdicts. Arrays are ``[markets]`` in ``symbols`` order."""

    ts: int
    symbols: tuple[str, ...]
    screen: ScreenResult
    regime: RegimeState
    max_positions: int
    modules: tuple[ModuleOutput, ...]
    aggregate: Aggregate
    signals: tuple[MarketSignal, ...]
    ema_state: dict[str, float]

    @property
    def entries(self) -> tuple[MarketSignal, ...]:
        """ENTER proposals, best final score first."""
        return tuple(sorted((s for s in self.signals if s.action is Action.ENTER), key=lambda s: -s.final_score))

    @property
    def exits(self) -> tuple[MarketSignal, ...]:
        return tuple(s for s in self.signals if s.action is Action.EXIT)


def _current_books(books: Mapping[str, OrderBook | Sequence[OrderBook]] | None) -> dict[str, OrderBook]:
    out: dict[str, OrderBook] = {}
    for sym, b in (books or {}).items():
        if isinstance(b, OrderBook):
            out[sym] = b
        elif len(b):
            out[sym] = b[-1]
    return out


def scan(candles_1m: Candles, books: Mapping[str, OrderBook | Sequence[OrderBook]] | None = None,
         tickers: Mapping[str, Ticker] | None = None, params: ScanParams | None = None,
         ema_state: Mapping[str, float] | None = None, held: Mapping[str, Direction] | None = None,
         markets: Mapping[str, MarketInfo] | None = None, leader_history: Candles | None = None,
         bandit_weight: float | np.ndarray = 1.0) -> ScanResult:
    """Run one full scan at the last bar of ``candles_1m``.

    ``books``: symbol -> current OrderBook or recent snapshots (oldest first; MICRO uses the
    history for OFI). ``tickers``: symbol -> Ticker (24 h value, bid / ask). ``ema_state``:
    the previous scan's ``ScanResult.ema_state``. ``held``: symbol -> held side. ``markets``:
    symbol -> MarketInfo (caution flag, can_short). ``bandit_weight``: scalar or ``[markets]``.
    """
    p = params or ScanParams()
    if candles_1m.timeframe != "1m":
        raise MarketDataError("scan needs 1m candles")
    if candles_1m.n_bars < p.min_bars:
        raise MarketDataError(f"scan needs at least {p.min_bars} 1m bars, got {candles_1m.n_bars}")
    symbols = candles_1m.symbols
    n = len(symbols)
    ts = int(candles_1m.ts[-1])
    markets = markets or {}
    held = held or {}
    leader_idx = 0 if p.leader is None else candles_1m.index(p.leader)

    # Regime [RG-1], [RG-2]
    inputs = compute_inputs(candles_1m, leader=symbols[leader_idx], leader_history=leader_history,
                            config=p.features)
    regime = classify(inputs, p.thresholds)

    # Bars for the modules
    bars_1m, missing = filled_bars(candles_1m)
    bars = resample_end_aligned(bars_1m, p.module_timeframe)

    # Screener [PL-1]
    c = bars_1m.close
    last_close = c[:, -1]
    atr_pct = ind.atr(bars.high, bars.low, bars.close, 14)[:, -1] / bars.close[:, -1] * 100.0
    hour = min(60, candles_1m.n_bars)
    missing_share = (missing[:, -hour:] | np.isnan(c[:, -hour:])).mean(axis=1)
    day = min(1440, candles_1m.n_bars)
    value_candles = np.nansum(c[:, -day:] * bars_1m.volume[:, -day:], axis=1)
    current_books = _current_books(books)
    scr = screen(symbols, last_close, atr_pct, missing_share, p.screener, tickers=tickers, books=current_books,
                 markets=markets, value_from_candles=value_candles)

    # Score modules [SC-1]
    can_short = np.array([bool(markets[s].can_short) if s in markets else False for s in symbols])
    ctx = ScanContext(symbols=symbols, ts=ts, bars=bars, bars_1m=bars_1m, timeframe_minutes=p.module_timeframe,
                      leader_index=leader_idx, regime=regime, can_short=can_short,
                      books=BookArrays.from_books(symbols, books) if books else None)
    outputs = tuple(m.score(ctx) for m in p.modules)

    # Aggregation [SC-2]..[SC-4]
    held_mask = np.array([s in held for s in symbols])
    mask = np.ones(n, bool) if p.signals_for_all else (scr.candidate | held_mask)
    agg = aggregate(symbols, ts, outputs, regime, p.aggregator, ema_state=ema_state, held=held,
                    candidates=scr.candidate, can_short=can_short, bandit_weight=bandit_weight,
                    extra_reasons=scr.flags, signal_mask=mask)
    return ScanResult(ts, symbols, scr, regime, max_positions(regime.label, p.profile_max_positions), outputs,
                      agg, agg.signals, agg.ema_state)


def reaggregate(result: ScanResult, params: ScanParams, *, ema_state: Mapping[str, float] | None = None,
                held: Mapping[str, Direction] | None = None,
                markets: Mapping[str, MarketInfo] | None = None) -> Aggregate:
    """A second signal source on the same scan: the same regime and module outputs aggregated
    with other settings (weights, thresholds, penalties, ``top_n``), with its own score EMA
    (``ema_state``; the new one is in the result). The runtime guard compares it with the
    trader's own aggregation to detect model disagreement [RK-4]. Arrays only (no signals)."""
    markets = markets or {}
    symbols = result.symbols
    can_short = np.array([bool(markets[s].can_short) if s in markets else False for s in symbols])
    candidates = candidates_for_top_n(result.screen, params.screener.top_n)
    return aggregate(symbols, result.ts, result.modules, result.regime, params.aggregator, ema_state=ema_state,
                     held=held or {}, candidates=candidates, can_short=can_short, extra_reasons=result.screen.flags,
                     signal_mask=np.zeros(len(symbols), bool))
