"""The decision core of one tick [SPEC 4], [PL-2], [RK-1]..[RK-6], [EXE-1], [BT-1].

One tick, in this order (``run_core``):

1. resting orders meet the new bar; an order older than ``max(order_timeout_seconds, bar)`` is
   cancelled (``order_timed_out``);
2. the scan (screener -> regime -> modules -> aggregator) with the held markets, and where
   the trader has a second signal source (AI MODE: the deterministic profile beside the
   model) that source's aggregation of the same scan, for the guard's model disagreement;
3. the runtime guard [RK-4] on the marked-to-market equity (``decide_guard``; its inputs come
   from ``guard_inputs``, including the feeds of ``GuardFeedState``);
4. the position manager [RK-5] for every open position, its exit intents sent at market
   (a venue rejection below the minimum order makes the rest dust, an incomplete exit is
   retried next tick: ``exit_followup``);
5. entries, best final score first (or the Monte Carlo rank [RK-6] when the profile asks for
   it): the eight-check checklist [RK-2], sizing [RK-1], a limit order at the touch.

Everything that reads or writes state goes through a ``TickPort``: the live worker's port
(``traders.trading``) loads and stores Django rows and trades through the paper broker; the
backtester's port (``strategies.engine.backtest.pipeline``) keeps the books in memory and runs
the same fill model. Both get exactly the same decisions from the same inputs, because the
order of the calls and every input of every engine is decided here.

No Django, no I/O, no clock: ``now_ts`` is the close of the bar being ticked.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Protocol

import numpy as np

from execution.engine.types import (
    Candles,
    MarketInfo,
    OrderBook,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    Ticker,
    TimeInForce,
)
from regime.engine.types import RegimeLabel
from risk.engine.checks import (
    DEFAULT_MAX_DATA_AGE_SECONDS,
    CheckContext,
    Checklist,
    CheckResult,
    ExchangeHealth,
    run_checklist,
)
from risk.engine.guard import (
    EMERGENCY_STOP,
    PANIC_REGIME,
    GuardDecision,
    GuardInputs,
    GuardState,
    Trip,
    disagreement_counts,
    evaluate,
    reset,
)
from risk.engine.montecarlo import MCReport, evaluate_candidate, rank_candidates
from risk.engine.portfolio import PortfolioState, max_positions
from risk.engine.positions import ExitIntent, PositionState, PositionUpdate, manage_position
from risk.engine.profiles import RiskProfile
from risk.engine.sizing import SizingResult, size_position, slippage_of
from strategies.engine import indicators as ind
from strategies.engine.aggregator import Aggregate, AggregatorParams
from strategies.engine.calibration import CALIBRATIONS
from strategies.engine.pipeline import ScanParams, ScanResult
from strategies.engine.types import Direction, MarketSignal

BAR = 60
MODULE_TIMEFRAME_MINUTES = 5            # ScanParams.module_timeframe: ATR and returns use these bars
TIMEOUT_REASON = "timeout: remainder cancelled"

# Guard feeds [RK-4]
VOL_BASELINE_DAYS = 1.0                 # the ATR% baseline is an EMA over about one day of ticks
VOL_BASELINE_MIN_TICKS = 240            # judged only once the baseline has seen this many ticks
SLIPPAGE_WINDOW = 20                    # realised vs expected slippage over the last N taker fills
SLIPPAGE_MIN_FILLS = 3
DISAGREEMENT_WINDOW = 30                # model disagreement pooled over the last N ticks' strong markets
DISAGREEMENT_MIN_STRONG = 10            # judged only once the window holds this many strong markets

# Monte Carlo [RK-6]
MC_MIN_RETURNS = 30
MC_NO_EDGE = "MC_NO_EDGE"
MC_NO_DATA = "MC_NO_DATA"
MC_EDGE = "MC_EDGE"


# --------------------------------------------------------------------------- inputs


class Market(Protocol):
    """What a tick reads about the market at the bar (``execution.marketdata.MarketView`` and
    ``MarketFrame`` both fit)."""

    bar_ts: int
    candles: Candles
    leader_history: Candles | None
    books: Mapping[str, OrderBook]
    tickers: Mapping[str, Ticker]
    markets: Mapping[str, MarketInfo]
    data_ts: int

    def last_price(self, symbol: str) -> float: ...


@dataclass(frozen=True)
class MarketFrame:
    """The pure twin of ``MarketView``: 1-minute candles ending at ``bar_ts`` (window), the
    leader's longer history, books, tickers and rules at the bar's close."""

    exchange: str
    bar_ts: int
    candles: Candles
    leader_history: Candles | None
    books: Mapping[str, OrderBook]
    tickers: Mapping[str, Ticker]
    markets: Mapping[str, MarketInfo]
    data_ts: int

    def last_price(self, symbol: str) -> float:
        return last_price(self.candles, symbol)


def last_price(candles: Candles, symbol: str) -> float:
    """The newest finite close of ``symbol`` in the window (NaN when there is none)."""
    closes = candles.close[candles.index(symbol)]
    valid = closes[~np.isnan(closes)]
    return float(valid[-1]) if len(valid) else float("nan")


@dataclass(frozen=True)
class Derived:
    """Per-bar arrays derived from the candles window, ``[markets]`` / ``[markets x bars]``:
    ATR (``profile.atr_period``) of the module-timeframe bars at the last bar, and the log
    returns of those bars (correlation check, Monte Carlo). The backtester passes the arrays it
    precomputed; otherwise they are computed from the window (``derive``)."""

    atr: np.ndarray
    returns: np.ndarray
    bar_seconds: int = MODULE_TIMEFRAME_MINUTES * 60     # the length of the bars ``returns`` come from


def module_bars(candles: Candles):
    from regime.engine.features import filled_bars, resample_end_aligned

    return resample_end_aligned(filled_bars(candles)[0], MODULE_TIMEFRAME_MINUTES)


def derive(candles: Candles, atr_period: int) -> Derived:
    bars = module_bars(candles)
    atr = ind.atr(bars.high, bars.low, bars.close, atr_period)[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(bars.close), axis=1)
    return Derived(atr, returns)


#: [SC-3]'s score EMA weight for a one-minute tick; other cadences get the same smoothing per
#: unit of time (``tick_ema_alpha``), so a score means the same at every tick cadence [CA-2].
SCORE_EMA_ALPHA_PER_MINUTE = 0.3


def tick_ema_alpha(cadence_seconds: int) -> float:
    """The per-tick EMA weight with the smoothing of ``SCORE_EMA_ALPHA_PER_MINUTE`` per minute:
    ``1 - 0.7 ** minutes`` (0.3 at 1 minute, 0.83 at 5, ~1 at 15 and longer)."""
    # rounded so that one minute gives 0.3 exactly (not 0.30000000000000004)
    return round(1.0 - (1.0 - SCORE_EMA_ALPHA_PER_MINUTE) ** (max(int(cadence_seconds), 1) / 60.0), 12)


def scan_params(profile: RiskProfile) -> ScanParams:
    """The scan settings a profile implies (weights, thresholds, risk multiplier, cap, score
    calibration, and the score EMA for the profile's tick cadence)."""
    return ScanParams(
        aggregator=AggregatorParams(weights=dict(profile.module_weights), entry_threshold=profile.entry_threshold,
                                    exit_threshold=profile.exit_threshold, risk_multiplier=profile.risk_multiplier,
                                    calibration=CALIBRATIONS[profile.score_calibration],
                                    ema_alpha=tick_ema_alpha(profile.cadence_seconds)),
        profile_max_positions=profile.max_positions_cap,
    )


@dataclass(frozen=True)
class HeldPosition:
    """One open position as the tick sees it. ``qty`` is the booked (Decimal) quantity, 0 for
    an entry order that has not filled yet; ``state`` the position manager's view with ``qty``
    in step with the books; ``dust`` marks a remainder below the venue minimum (not managed)."""

    symbol: str
    direction: Direction
    qty: Decimal
    state: PositionState | None
    dust: bool = False


@dataclass(frozen=True)
class OrderOutcome:
    """What an order came to when the venue (or the fill model) answered."""

    status: str                      # an ``OrderStatus`` value
    filled_qty: Decimal = Decimal("0")
    avg_price: Decimal | None = None
    error: str = ""
    fills: int = 0


@dataclass(frozen=True)
class GuardContext:
    """Guard inputs from the trader's history: equity at the start of the UTC day / ISO week /
    month (``period_starts``), the current losing streak, the operator's switches and the
    guard state stored after the previous tick."""

    day_start_equity: Decimal
    week_start_equity: Decimal
    month_start_equity: Decimal
    consecutive_losses: int
    master_kill: bool
    emergency_stop: bool
    previous: GuardState


@dataclass(frozen=True)
class GuardOutcome:
    inputs: GuardInputs
    decision: GuardDecision
    released: Trip | None = None      # the emergency stop released by the operator this tick


@dataclass(frozen=True)
class ExitRecord:
    symbol: str
    reason: str
    qty: Decimal
    outcome: OrderOutcome
    followup: str                     # "", "DUST" or "RETRY"


@dataclass(frozen=True)
class EntryDecision:
    """One ENTER signal through the checklist, Monte Carlo, sizing and (maybe) execution."""

    signal: MarketSignal
    checklist: Checklist
    sizing: SizingResult | None
    monte_carlo: CheckResult | None = None
    mc_report: MCReport | None = None
    request: OrderRequest | None = None
    outcome: OrderOutcome | None = None

    @property
    def entered(self) -> bool:
        return self.outcome is not None

    def checks(self) -> list[dict[str, Any]]:
        """The stored checklist: eight checks, Monte Carlo when used, then sizing."""
        out: list[dict[str, Any]] = [c.to_dict() for c in self.checklist.results]
        if self.monte_carlo is not None:
            mc = self.monte_carlo.to_dict()
            if self.mc_report is not None:
                mc["mc"] = {k: v for k, v in self.mc_report.to_dict().items() if k not in ("ev", "win_prob", "cvar95")}
            out.append(mc)
        if self.sizing is not None:
            out.append({"code": "SIZING", "passed": not self.sizing.skipped, "detail": self.sizing.to_dict()})
        return out

    @property
    def reason_codes(self) -> tuple[str, ...]:
        codes = list(self.checklist.reason_codes)
        if self.monte_carlo is not None and not self.monte_carlo.passed:
            codes.append(self.monte_carlo.code)
        if self.sizing is not None:
            codes.extend(self.sizing.reason_codes)
        return tuple(codes)


@dataclass
class TickOutcome:
    """Everything the tick decided, for the caller's report and the backtester's statistics."""

    fills: int = 0
    entries: int = 0
    exits: int = 0
    scan: ScanResult | None = None
    guard: GuardOutcome | None = None
    updates: dict[str, PositionUpdate] = field(default_factory=dict)
    exit_records: list[ExitRecord] = field(default_factory=list)
    entry_decisions: list[EntryDecision] = field(default_factory=list)
    liquidated: bool = False
    feed: dict[str, Any] = field(default_factory=dict)


class TickPort(Protocol):
    """State and execution behind one tick. Every method is called by ``run_core`` only."""

    def resting_orders(self) -> Sequence[Any]: ...
    def advance(self, order: Any) -> int: ...                       # fills booked
    def order_open(self, order: Any) -> bool: ...
    def order_bar_ts(self, order: Any) -> int | None: ...
    def cancel(self, order: Any, reason: str) -> None: ...
    def held(self) -> dict[str, HeldPosition]: ...
    def cash(self) -> Decimal: ...
    def equity(self) -> Decimal: ...
    def blacklist(self, now_ts: int) -> Mapping[str, int]: ...     # symbol -> banned until [EXE-3]
    def scan(self, held: dict[str, Direction]) -> ScanResult: ...
    def second_opinion(self, scan: ScanResult, held: dict[str, Direction]) -> SecondOpinion | None: ...
    def guard_context(self, now_ts: int) -> GuardContext: ...
    def store_guard(self, outcome: GuardOutcome) -> None: ...
    def set_position_state(self, symbol: str, state: PositionState) -> None: ...
    def exit_order_id(self, symbol: str, n: int) -> str: ...
    def submit_exit(self, symbol: str, request: OrderRequest, reason: str) -> OrderOutcome: ...
    def after_exit(self, record: ExitRecord, request: OrderRequest) -> None: ...
    def liquidation_done(self) -> None: ...
    def record_entry(self, decision: EntryDecision) -> None: ...
    def entry_order_id(self, signal: MarketSignal) -> str: ...
    def submit_entry(self, decision: EntryDecision, request: OrderRequest, scan: ScanResult) -> OrderOutcome: ...
    def api_stats(self) -> tuple[int, int] | None: ...               # (calls, errors) or None


# --------------------------------------------------------------------------- pure pieces


def order_timed_out(order_bar_ts: int | None, now_ts: int, profile: RiskProfile, bar_seconds: int = BAR) -> bool:
    """[EXE-1]: a resting order is cancelled once it is ``order_timeout_seconds`` (at least one
    bar) old."""
    age = now_ts - (order_bar_ts if order_bar_ts is not None else now_ts)
    return age >= max(profile.order_timeout_seconds, bar_seconds)


def exit_followup(outcome: OrderOutcome, remaining_qty: Decimal) -> str:
    """After an exit order: ``DUST`` when the venue refused it as below its minimum (the rest
    stays on the books, unmanaged, so it cannot loop), ``RETRY`` when the book could not take it
    all (the manager asks again next tick), else ``""``."""
    if outcome.status == OrderStatus.NEW.value:
        return ""        # LIVE: queued in the outbox, sent after the tick commits [EXE-2]
    if outcome.status == OrderStatus.REJECTED.value and outcome.error == "below_min_notional":
        return "DUST"
    if outcome.status != OrderStatus.FILLED.value and remaining_qty > 0:
        return "RETRY"
    return ""


def period_return(start: Decimal, equity: Decimal) -> float:
    return float((equity - start) / start) if start else 0.0


@dataclass(frozen=True)
class GuardFeedState:
    """What the guard's feeds remember between ticks (JSON via ``to_dict``): the leader's ATR%
    baseline (an EMA over about a day of ticks), the last taker fills' expected and realised
    slippage, and the last ticks' (conflicts, strong markets) between two signal sources."""

    atr_baseline: float | None = None
    atr_ticks: int = 0
    slippage: tuple[tuple[float, float], ...] = ()
    disagreement: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"atr_baseline": self.atr_baseline, "atr_ticks": self.atr_ticks,
                "slippage": [list(s) for s in self.slippage],
                "disagreement": [list(d) for d in self.disagreement]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> GuardFeedState:
        if not d:
            return cls()
        base = d.get("atr_baseline")
        return cls(float(base) if base is not None else None, int(d.get("atr_ticks", 0)),
                   tuple((float(a), float(b)) for a, b in d.get("slippage", ())),
                   tuple((int(a), int(b)) for a, b in d.get("disagreement", ())))

    def with_atr(self, atr_pct: float, profile: RiskProfile) -> GuardFeedState:
        if not math.isfinite(atr_pct) or atr_pct <= 0:
            return self
        if self.atr_baseline is None:
            return replace(self, atr_baseline=atr_pct, atr_ticks=1)
        ticks_per_day = max(1.0, VOL_BASELINE_DAYS * 86_400 / max(profile.cadence_seconds, 1))
        alpha = 2.0 / (ticks_per_day + 1.0)
        return replace(self, atr_baseline=alpha * atr_pct + (1 - alpha) * self.atr_baseline,
                       atr_ticks=self.atr_ticks + 1)

    def with_slippage(self, expected: float, realised: float) -> GuardFeedState:
        if not (math.isfinite(expected) and math.isfinite(realised)):
            return self
        return replace(self, slippage=(*self.slippage, (expected, realised))[-SLIPPAGE_WINDOW:])

    def with_disagreement(self, counts: tuple[int, int] | None) -> GuardFeedState:
        """One tick's (conflicts, strong markets); None (one signal source this tick, e.g. no
        model deployed) empties the window, so an old conflict never outlives its sources."""
        if counts is None:
            return replace(self, disagreement=()) if self.disagreement else self
        return replace(self, disagreement=(*self.disagreement, counts)[-DISAGREEMENT_WINDOW:])

    @property
    def model_disagreement(self) -> float | None:
        """Conflicting share of the strong markets pooled over the window (None until it holds
        ``DISAGREEMENT_MIN_STRONG`` of them: one strong market is not a sample)."""
        strong = sum(n for _, n in self.disagreement)
        if strong < DISAGREEMENT_MIN_STRONG:
            return None
        return sum(c for c, _ in self.disagreement) / strong


@dataclass(frozen=True)
class SecondOpinion:
    """A second signal source's aggregation of the tick's scan (``strategies.engine.pipeline.
    reaggregate``), with the aggregation settings of both sources (each judges "strong" at its
    own entry threshold)."""

    aggregate: Aggregate
    own: AggregatorParams
    params: AggregatorParams


def scan_conflicts(scan: ScanResult, second: SecondOpinion, held: Mapping[str, Any]) -> tuple[int, int]:
    """(conflicts, strong markets) between the trader's aggregation and a second source's on the
    markets the trader acts on (screener candidates and held markets), a market being strong at
    either source's own entry threshold (``risk.engine.guard.disagreement_counts``) [RK-4]."""
    mask = scan.screen.candidate | np.array([s in held for s in scan.symbols], dtype=bool)
    own, other = scan.aggregate, second.aggregate
    return disagreement_counts(own.final_score[mask], own.direction[mask], other.final_score[mask],
                               other.direction[mask],
                               strong=(second.own.entry_threshold, second.params.entry_threshold))


def slippage_observation(book: OrderBook | None, side: Side, outcome: OrderOutcome) -> tuple[float, float] | None:
    """(expected, realised) slippage of a filled taker order: expected from walking the book the
    order met for the quantity that filled, realised from its average price, both versus the
    touch (fractions, >= 0 is worse)."""
    if book is None or outcome.avg_price is None or outcome.filled_qty <= 0:
        return None
    levels = book.asks if side is Side.BUY else book.bids
    if not len(levels):
        return None
    touch = float(levels[0, 0])
    expected = slippage_of(np.asarray(levels, dtype=np.float64), float(outcome.filled_qty))
    avg = float(outcome.avg_price)
    realised = (avg - touch) / touch if side is Side.BUY else (touch - avg) / touch
    return expected, realised


def guard_inputs(*, now_ts: int, equity: Decimal, ctx: GuardContext, scan: ScanResult, feed: GuardFeedState,
                 market: Market, held: Mapping[str, HeldPosition], api: tuple[int, int] | None) -> GuardInputs:
    """The guard's snapshot. Fed from stored data: loss limits (equity history), losing streak,
    volatility spike (the leader's 4 h ATR% of this scan vs its one-day EMA baseline, once the
    baseline has ``VOL_BASELINE_MIN_TICKS`` ticks), slippage anomaly (realised vs expected
    slippage of the last taker fills, from ``SLIPPAGE_MIN_FILLS``), gross leverage (position
    value / equity; at most 1 on spot), exchange health (market data no older than
    ``DEFAULT_MAX_DATA_AGE_SECONDS``), API error rate when the port counts venue calls, model
    disagreement when the trader has two signal sources (``GuardFeedState.model_disagreement``;
    None otherwise). ``db_ok`` is True because a tick that runs has its database."""
    atr_pct = float(scan.regime.inputs.btc_atr_pct_4h)
    baseline = feed.atr_baseline if feed.atr_ticks >= VOL_BASELINE_MIN_TICKS else None
    realised = expected = None
    if len(feed.slippage) >= SLIPPAGE_MIN_FILLS:
        expected = float(np.mean([s[0] for s in feed.slippage]))
        realised = float(np.mean([s[1] for s in feed.slippage]))
    gross = Decimal("0")
    for symbol, pos in held.items():
        price = market.last_price(symbol)
        if pos.qty > 0 and math.isfinite(price):
            gross += pos.qty * Decimal(repr(price))
    leverage = float(gross / equity) if equity > 0 else (math.inf if gross > 0 else 0.0)
    data_age = now_ts - market.data_ts
    calls, errors = api if api is not None else (0, 0)
    return GuardInputs(
        now_ts=now_ts, equity=float(equity),
        day_return=period_return(ctx.day_start_equity, equity),
        week_return=period_return(ctx.week_start_equity, equity),
        month_return=period_return(ctx.month_start_equity, equity),
        consecutive_losses=ctx.consecutive_losses,
        atr_pct=atr_pct if baseline is not None and math.isfinite(atr_pct) else None,
        atr_pct_baseline=baseline,
        api_error_rate=(errors / calls) if api is not None and calls > 0 else None, api_calls=calls,
        realised_slippage=realised, expected_slippage=expected,
        model_disagreement=feed.model_disagreement,
        leverage=leverage,
        db_ok=True, exchange_ok=data_age <= DEFAULT_MAX_DATA_AGE_SECONDS,
        regime=scan.regime.label,
        master_kill=ctx.master_kill, emergency_stop=ctx.emergency_stop,
    )


def decide_guard(inputs: GuardInputs, profile: RiskProfile, previous: GuardState) -> GuardOutcome:
    """[RK-4] one guard step. The emergency stop clears by hand only: the operator releasing
    the master switch once this trader's liquidation is done is that reset."""
    released = previous.trip(EMERGENCY_STOP)
    if released is not None and not inputs.emergency_stop and not inputs.master_kill:
        previous = reset(previous, equity=inputs.equity, consecutive_losses=inputs.consecutive_losses,
                         codes=(EMERGENCY_STOP,))
    else:
        released = None
    return GuardOutcome(inputs, evaluate(inputs, profile, previous), released)


def held_scores(scan: ScanResult, held: Mapping[str, HeldPosition]) -> dict[str, float]:
    """[SC-4]: a held market is judged by its score on the held side; a signal that turned to
    the other side (or to none) scores 0 there, as in the aggregator's EXIT."""
    return {s.symbol: s.final_score if (s.symbol in held and held[s.symbol].direction is s.direction) else 0.0
            for s in scan.signals}


def tick_regime(scan: ScanResult, decision: GuardDecision) -> RegimeLabel:
    """A PANIC episode lasts as long as the guard's PANIC_REGIME trip, which holds through a
    flickering label, so a winner is reduced once per episode and not at every flicker [RK-5]."""
    return RegimeLabel.PANIC if PANIC_REGIME in decision.codes else scan.regime.label


def mc_rng(seed: int, bar_ts: int, symbol: str) -> np.random.Generator:
    """A reproducible stream per (seed, bar, market)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(bar_ts), zlib.crc32(symbol.encode())])


def monte_carlo(signal: MarketSignal, returns: np.ndarray, profile: RiskProfile, market: MarketInfo,
                atr: float, price: float, *, seed: int, bar_ts: int,
                bar_seconds: int = MODULE_TIMEFRAME_MINUTES * 60) -> tuple[CheckResult, MCReport | None]:
    """[RK-6] EV / win probability / CVaR of one candidate from its recent module-bar returns
    (block bootstrap, ``mc_paths`` x ``mc_horizon_bars``, net of the taker fee and the profile's
    slippage allowance both ways, frozen at the ATR stop). ``bar_seconds``: the returns' bar."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < MC_MIN_RETURNS:
        return CheckResult("monte_carlo", False, MC_NO_DATA, f"{r.size} returns, need {MC_MIN_RETURNS}"), None
    stop = profile.atr_stop_mult * atr / price if price > 0 and math.isfinite(atr) and atr > 0 else None
    report = evaluate_candidate(
        r, mc_rng(seed, bar_ts, signal.symbol), n_paths=profile.mc_paths, horizon=profile.mc_horizon_bars,
        bar_seconds=bar_seconds, fee=float(market.taker_fee), slippage=profile.max_slippage / 2,
        stop_loss=stop if stop is not None and 0 < stop < 1 else None, direction=int(signal.direction) or 1)
    if report.t_star_bars == 0:
        return CheckResult("monte_carlo", False, MC_NO_EDGE,
                           f"no horizon with a positive EV (best {report.ev_per_hour:.5f}/h)"), report
    return CheckResult("monte_carlo", True, MC_EDGE,
                       f"EV {report.ev_per_hour:.5f}/h at T* {report.t_star_bars} bars"), report


# --------------------------------------------------------------------------- the tick


def run_core(port: TickPort, *, profile: RiskProfile, market: Market, bar_ts: int,
             feed: GuardFeedState | None = None, derived: Derived | None = None, mc_seed: int = 0,
             bar_seconds: int = BAR) -> TickOutcome:
    """Run one tick through ``port`` (see the module docstring for the order). ``feed`` is the
    guard feeds' state after the previous tick (the new one is in ``TickOutcome.feed``);
    ``derived`` the precomputed ATR / returns arrays (computed from the window when None);
    ``mc_seed`` seeds the Monte Carlo streams (with the bar and the market); ``bar_seconds``
    the length of the bar being ticked (1 minute live; the tuner's backtests tick longer bars)."""
    out = TickOutcome()
    now_ts = bar_ts + bar_seconds
    feed = feed or GuardFeedState()

    # 1. Resting orders from earlier ticks meet the new bar; stale ones are cancelled [EXE-1].
    for order in port.resting_orders():
        out.fills += port.advance(order)
        if port.order_open(order) and order_timed_out(port.order_bar_ts(order), now_ts, profile, bar_seconds):
            port.cancel(order, TIMEOUT_REASON)

    # 2. Scan the market.
    held = port.held()
    held_dirs = {s: p.direction for s, p in held.items()}
    scan = port.scan(held_dirs)
    out.scan = scan
    second = port.second_opinion(scan, held_dirs)
    feed = feed.with_disagreement(scan_conflicts(scan, second, held) if second is not None else None)

    # 3. Runtime guard [RK-4].
    equity = port.equity()
    ctx = port.guard_context(now_ts)
    inputs = guard_inputs(now_ts=now_ts, equity=equity, ctx=ctx, scan=scan, feed=feed, market=market, held=held,
                          api=port.api_stats())
    guard = decide_guard(inputs, profile, ctx.previous)
    out.guard = guard
    port.store_guard(guard)
    decision = guard.decision
    feed = feed.with_atr(float(scan.regime.inputs.btc_atr_pct_4h), profile)

    # 4. Manage open positions [RK-5].
    derived = derived or derive(market.candles, profile.atr_period)
    atr = derived.atr
    scores = held_scores(scan, held)
    regime = tick_regime(scan, decision)
    liquidate = decision.liquidate_all or ctx.emergency_stop
    for symbol, position in list(held.items()):
        i = market.candles.index(symbol)
        price = market.last_price(symbol)
        if not math.isfinite(price) or position.dust or position.state is None:
            continue
        update = manage_position(
            position.state, profile=profile, price=price, atr=float(atr[i]) if math.isfinite(atr[i]) else 0.0,
            now_ts=now_ts, high=float(market.candles.high[i, -1]), low=float(market.candles.low[i, -1]),
            score=scores.get(symbol), regime=regime, liquidate_all=liquidate,
            reduce_fraction=decision.reduce_fraction, reduce_code=decision.reduce_code or "GUARD_REDUCE",
            market=market.markets[symbol],
        )
        out.updates[symbol] = update
        port.set_position_state(symbol, update.state)
        for n, intent in enumerate(update.intents):
            feed = _exit(port, out, market, symbol, n, intent, feed)
    if ctx.emergency_stop and not port.held():
        out.liquidated = True
        port.liquidation_done()

    # 5. Entries: checklist, Monte Carlo, sizing, execution [RK-1], [RK-2], [RK-6], [EXE-1].
    equity = port.equity()
    held = port.held()
    candidates = [s for s in scan.entries if s.symbol not in held]
    mc: dict[str, tuple[CheckResult, MCReport | None]] = {}
    if profile.use_monte_carlo and candidates and _entries_possible(held, scan, decision, profile):
        candidates, mc = _mc_rank(candidates, profile, market, derived, seed=mc_seed, bar_ts=bar_ts)
    blacklist = port.blacklist(now_ts) if candidates else {}
    for sig in candidates:
        held = port.held()
        if sig.symbol in held:
            continue
        entry = decide_entry(sig, profile=profile, market=market, scan=scan, decision=decision, held=held,
                             equity=equity, cash=port.cash(), derived=derived, now_ts=now_ts,
                             mc=mc.get(sig.symbol), order_id=port.entry_order_id, blacklist=blacklist)
        port.record_entry(entry)
        out.entry_decisions.append(entry)
        if entry.request is None:
            continue
        outcome = port.submit_entry(entry, entry.request, scan)
        out.entry_decisions[-1] = replace(entry, outcome=outcome)
        out.fills += outcome.fills
        out.entries += 1
        obs = slippage_observation(market.books.get(sig.symbol), entry.request.side, outcome)
        if obs is not None:
            feed = feed.with_slippage(*obs)
        equity = port.equity()
    out.feed = feed.to_dict()
    return out


def _exit(port: TickPort, out: TickOutcome, market: Market, symbol: str, n: int, intent: ExitIntent,
          feed: GuardFeedState) -> GuardFeedState:
    position = port.held().get(symbol)
    if position is None:
        return feed
    qty = min(intent.qty, position.qty)
    if qty <= 0:
        return feed
    request = OrderRequest(client_order_id=port.exit_order_id(symbol, n), symbol=symbol, side=intent.side,
                           type=OrderType.MARKET, qty=qty)
    outcome = port.submit_exit(symbol, request, intent.reason_code)
    out.fills += outcome.fills
    out.exits += 1
    after = port.held().get(symbol)
    record = ExitRecord(symbol, intent.reason_code, qty, outcome,
                        exit_followup(outcome, after.qty if after is not None else Decimal("0")))
    out.exit_records.append(record)
    port.after_exit(record, request)
    obs = slippage_observation(market.books.get(symbol), intent.side, outcome)
    return feed.with_slippage(*obs) if obs is not None else feed


def _entries_possible(held: Mapping[str, HeldPosition], scan: ScanResult, decision: GuardDecision,
                      profile: RiskProfile) -> bool:
    """False when the checklist is bound to refuse every entry this tick whatever the order
    (guard not ACTIVE, no regime slot free): then the Monte Carlo ranking is not worth running."""
    open_count = sum(1 for p in held.values() if p.qty > 0)
    return decision.allows_entries and open_count < max_positions(scan.regime.label, profile)


def _mc_rank(candidates: list[MarketSignal], profile: RiskProfile, market: Market, derived: Derived, *,
             seed: int, bar_ts: int) -> tuple[list[MarketSignal], dict[str, tuple[CheckResult, MCReport | None]]]:
    """[RK-6]: candidates with a positive edge first, best EV per hour first (``rank_candidates``);
    the others keep their score order after them (their MC check fails, so they are not entered)."""
    mc: dict[str, tuple[CheckResult, MCReport | None]] = {}
    for sig in candidates:
        i = market.candles.index(sig.symbol)
        mc[sig.symbol] = monte_carlo(sig, derived.returns[i], profile, market.markets[sig.symbol],
                                     float(derived.atr[i]), market.last_price(sig.symbol), seed=seed, bar_ts=bar_ts,
                                     bar_seconds=derived.bar_seconds)
    with_report = [s for s in candidates if mc[s.symbol][1] is not None]
    ranked = [with_report[k] for k in rank_candidates([mc[s.symbol][1] for s in with_report])]
    return ranked + [s for s in candidates if s not in ranked], mc


def decide_entry(sig: MarketSignal, *, profile: RiskProfile, market: Market, scan: ScanResult,
                 decision: GuardDecision, held: Mapping[str, HeldPosition], equity: Decimal, cash: Decimal,
                 derived: Derived, now_ts: int, mc: tuple[CheckResult, MCReport | None] | None,
                 order_id: Any, blacklist: Mapping[str, int] | None = None) -> EntryDecision:
    """Checklist, Monte Carlo verdict, sizing and the order for one ENTER signal. ``request`` is
    None when anything refuses it (or the side cannot be traded on a spot venue)."""
    states = tuple(p.state for p in held.values() if p.qty > 0 and p.state is not None)
    portfolio = PortfolioState(equity=float(equity), cash=float(cash), positions=states)
    i = market.candles.index(sig.symbol)
    open_idx = [market.candles.index(s) for s in held]
    returns = derived.returns
    ctx = CheckContext(
        signal=sig, profile=profile, regime=scan.regime, market=market.markets[sig.symbol],
        book=market.books.get(sig.symbol), portfolio=portfolio, guard=decision, now_ts=now_ts,
        health=ExchangeHealth(data_age_seconds=max(0.0, now_ts - market.data_ts)),
        candidate_returns=returns[i], open_returns=returns[open_idx] if open_idx else None,
        blacklist=dict(blacklist or {}),
    )
    checklist = run_checklist(ctx)
    mc_check, mc_report = mc if mc is not None else (None, None)
    sizing = None
    if checklist.passed and (mc_check is None or mc_check.passed):
        sizing = size_position(
            profile=profile, equity=float(equity), cash_available=float(cash),
            entry_price=float(market.books[sig.symbol].best_ask), atr=float(derived.atr[i]), direction=sig.direction,
            market=market.markets[sig.symbol], book=market.books.get(sig.symbol),
            remaining_risk_budget=portfolio.remaining_risk_budget(profile), drawdown=decision.drawdown,
            trade_stats=mc_report.trade_stats() if mc_report is not None and mc_check.passed else None,
        )
    entry = EntryDecision(sig, checklist, sizing, mc_check, mc_report)
    if sizing is None or sizing.skipped:
        return entry
    side = Side.BUY if sig.direction is Direction.LONG else Side.SELL
    if side is Side.SELL:
        return entry      # spot venue: a short entry needs a perpetual venue (ccxt swap)
    request = OrderRequest(client_order_id=order_id(sig), symbol=sig.symbol, side=side, type=OrderType.LIMIT,
                           qty=sizing.qty, price=sizing.entry_price, tif=TimeInForce.GTC)
    return replace(entry, request=request)
