"""Pre-trade checklist [RK-2]: eight checks, all must pass, every failure is reported.

Each check returns ``CheckResult(check, passed, code, detail)``; a denial is a value with a
reason code, never an exception. ``run_checklist`` runs all eight (no short-circuit) so the
trader can store every denial and the UI can answer "why not".

======================  ======================================================================
check                   denial codes
======================  ======================================================================
score                   SCORE_INVALID, SCORE_BELOW_THRESHOLD, NO_DIRECTION, SHORT_NOT_ALLOWED
regime                  REGIME_UNKNOWN, REGIME_NO_ENTRIES (CHOP, PANIC)
liquidity               NO_ORDER_BOOK, SPREAD_TOO_WIDE, LIQUIDITY_TOO_THIN
risk_budget             ALREADY_IN_POSITION, MAX_POSITIONS_REACHED, RISK_BUDGET_EXHAUSTED
correlation             CORR_TOO_MANY_HIGH, CORR_AVG_TOO_HIGH
exchange_health         EXCHANGE_DOWN, MARKET_DATA_STALE, API_ERROR_RATE_HIGH
market_status           EXCHANGE_MAINTENANCE, MARKET_CAUTION, SYMBOL_BLACKLISTED
risk_manager            GUARD_NO_DECISION, GUARD_HALTED, GUARD_REDUCING
======================  ======================================================================

Missing inputs fail closed (no regime, no book, no guard decision: no entry), except the
correlation check, which passes with CORR_NO_DATA when there is not enough history to judge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from execution.engine.types import MarketInfo, OrderBook
from regime.engine.types import RegimeLabel, RegimeState
from risk.engine.correlation import correlations_with
from risk.engine.guard import API_MIN_CALLS, GuardDecision, TradingState
from risk.engine.portfolio import PortfolioState, max_positions
from risk.engine.profiles import RiskProfile
from strategies.engine.types import Direction, MarketSignal

DEPTH_LEVELS = 5
DEFAULT_MAX_DATA_AGE_SECONDS = 180.0
CHECK_NAMES = ("score", "regime", "liquidity", "risk_budget", "correlation", "exchange_health",
               "market_status", "risk_manager")


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: str
    passed: bool
    code: str
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"check": self.check, "passed": self.passed, "code": self.code, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ExchangeHealth:
    """Venue and API health at the tick. ``data_age_seconds``: age of the newest market data;
    ``api_error_rate``: failed / total calls over ``api_calls`` recent calls."""

    exchange_ok: bool = True
    maintenance: bool = False
    api_error_rate: float = 0.0
    api_calls: int = 0
    data_age_seconds: float = 0.0


@dataclass(frozen=True)
class CheckContext:
    """Everything the checklist reads for one candidate.

    ``order_value``: the intended order value in quote currency (the sized notional); None
    means the venue minimum. Correlation: either ``correlations`` (one value per open position)
    or ``candidate_returns`` ``[bars]`` with ``open_returns`` ``[open positions x bars]``.
    ``blacklist`` maps symbol -> blacklisted-until epoch seconds [EXE-3].
    """

    signal: MarketSignal
    profile: RiskProfile
    regime: RegimeState | RegimeLabel | None
    market: MarketInfo
    book: OrderBook | None
    portfolio: PortfolioState
    guard: GuardDecision | None
    now_ts: int
    health: ExchangeHealth = field(default_factory=ExchangeHealth)
    order_value: float | None = None
    correlations: np.ndarray | None = None
    candidate_returns: np.ndarray | None = None
    open_returns: np.ndarray | None = None
    corr_min_periods: int = 30
    blacklist: Mapping[str, int] = field(default_factory=dict)
    max_data_age_seconds: float = DEFAULT_MAX_DATA_AGE_SECONDS

    @property
    def regime_label(self) -> RegimeLabel | None:
        return self.regime.label if isinstance(self.regime, RegimeState) else self.regime


@dataclass(frozen=True, slots=True)
class Checklist:
    """All eight results; ``passed`` only when every check passed."""

    symbol: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def denials(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.denials)

    def to_dict(self) -> dict[str, object]:
        return {"symbol": self.symbol, "passed": self.passed, "results": [r.to_dict() for r in self.results]}


def _ok(check: str, code: str, detail: str = "") -> CheckResult:
    return CheckResult(check, True, code, detail)


def _deny(check: str, code: str, detail: str) -> CheckResult:
    return CheckResult(check, False, code, detail)


def check_score(ctx: CheckContext) -> CheckResult:
    """final_score >= entry_threshold, with a tradable direction."""
    s, p = ctx.signal, ctx.profile
    if not math.isfinite(s.final_score):
        return _deny("score", "SCORE_INVALID", f"final score is {s.final_score!r}")
    if s.final_score < p.entry_threshold:
        return _deny("score", "SCORE_BELOW_THRESHOLD",
                     f"final score {s.final_score:.1f} < entry threshold {p.entry_threshold:.1f}")
    if s.direction is Direction.NONE:
        return _deny("score", "NO_DIRECTION", "the signal has no direction")
    if s.direction is Direction.SHORT and not ctx.market.can_short:
        return _deny("score", "SHORT_NOT_ALLOWED", f"{ctx.market.symbol} cannot be shorted on this venue")
    return _ok("score", "SCORE_OK", f"final score {s.final_score:.1f} >= {p.entry_threshold:.1f}")


def check_regime(ctx: CheckContext) -> CheckResult:
    """[RG-4]: CHOP and PANIC allow no new entries; no regime means no entry."""
    label = ctx.regime_label
    if label is None:
        return _deny("regime", "REGIME_UNKNOWN", "no regime evaluation for this tick")
    if label in (RegimeLabel.CHOP, RegimeLabel.PANIC):
        return _deny("regime", "REGIME_NO_ENTRIES", f"{label.value} allows no new entries")
    return _ok("regime", "REGIME_OK", label.value)


def check_liquidity(ctx: CheckContext) -> CheckResult:
    """Order value <= liquidity_min_ratio x average top-5 depth, and the spread is acceptable."""
    book, p = ctx.book, ctx.profile
    if book is None or len(book.bids) == 0 or len(book.asks) == 0:
        return _deny("liquidity", "NO_ORDER_BOOK", "no two-sided order book")
    spread = book.spread_pct / 100.0
    if not math.isfinite(spread) or spread > p.max_spread:
        return _deny("liquidity", "SPREAD_TOO_WIDE", f"spread {spread:.3%} > {p.max_spread:.3%}")
    depth = book.depth_value(DEPTH_LEVELS)
    value = ctx.order_value if ctx.order_value is not None else float(ctx.market.min_notional)
    capacity = p.liquidity_min_ratio * depth
    if not math.isfinite(value) or value > capacity or capacity <= 0:
        return _deny("liquidity", "LIQUIDITY_TOO_THIN",
                     f"order {value:,.2f} > {p.liquidity_min_ratio} x top-5 depth {depth:,.2f}")
    ratio = value / depth if depth > 0 else math.inf
    return _ok("liquidity", "LIQUIDITY_OK", f"order is {ratio:.1%} of top-5 depth")


def check_risk_budget(ctx: CheckContext) -> CheckResult:
    """A free position slot and remaining portfolio risk budget >= one trade's risk."""
    pf, p = ctx.portfolio, ctx.profile
    if ctx.signal.symbol in pf.symbols:
        return _deny("risk_budget", "ALREADY_IN_POSITION", f"{ctx.signal.symbol} is already held")
    cap = max_positions(ctx.regime_label, p)
    if pf.open_count >= cap:
        return _deny("risk_budget", "MAX_POSITIONS_REACHED", f"{pf.open_count} open, max {cap}")
    remaining = pf.remaining_risk_budget(p)
    per_trade = max(pf.equity, 0.0) * p.risk_per_trade
    if pf.equity <= 0 or remaining < per_trade:
        return _deny("risk_budget", "RISK_BUDGET_EXHAUSTED",
                     f"remaining risk budget {remaining:,.2f} < risk per trade {per_trade:,.2f}")
    return _ok("risk_budget", "RISK_BUDGET_OK", f"remaining {remaining:,.2f}, {cap - pf.open_count} slot(s)")


def check_correlation(ctx: CheckContext) -> CheckResult:
    """At most ``max_high_corr_positions`` open positions with corr > corr_high to the
    candidate, and average correlation with open positions <= max_avg_corr."""
    p = ctx.profile
    corr = ctx.correlations
    if corr is None and ctx.candidate_returns is not None and ctx.open_returns is not None:
        corr = correlations_with(ctx.candidate_returns, ctx.open_returns, ctx.corr_min_periods)
    if ctx.portfolio.open_count == 0:
        return _ok("correlation", "CORR_OK", "no open positions")
    known = np.asarray(corr, dtype=np.float64) if corr is not None else np.empty(0)
    known = known[np.isfinite(known)]
    if known.size == 0:
        return _ok("correlation", "CORR_NO_DATA", "not enough common history to judge")
    n_high = int((known > p.corr_high).sum())
    avg = float(known.mean())
    if n_high > p.max_high_corr_positions:
        return _deny("correlation", "CORR_TOO_MANY_HIGH",
                     f"{n_high} open positions with corr > {p.corr_high} (max {p.max_high_corr_positions})")
    if avg > p.max_avg_corr:
        return _deny("correlation", "CORR_AVG_TOO_HIGH", f"average corr {avg:.2f} > {p.max_avg_corr:.2f}")
    return _ok("correlation", "CORR_OK", f"average corr {avg:.2f}, {n_high} above {p.corr_high}")


def check_exchange_health(ctx: CheckContext) -> CheckResult:
    """The exchange answers, market data is fresh and the API error rate is below the limit."""
    h, p = ctx.health, ctx.profile
    if not h.exchange_ok:
        return _deny("exchange_health", "EXCHANGE_DOWN", "exchange unavailable")
    if not math.isfinite(h.data_age_seconds) or h.data_age_seconds > ctx.max_data_age_seconds:
        return _deny("exchange_health", "MARKET_DATA_STALE",
                     f"newest market data is {h.data_age_seconds:.0f}s old (max {ctx.max_data_age_seconds:.0f}s)")
    if h.api_calls >= API_MIN_CALLS and h.api_error_rate >= p.api_error_rate_limit:
        return _deny("exchange_health", "API_ERROR_RATE_HIGH",
                     f"API error rate {h.api_error_rate:.1%} >= {p.api_error_rate_limit:.1%}")
    return _ok("exchange_health", "HEALTH_OK")


def check_market_status(ctx: CheckContext) -> CheckResult:
    """No exchange maintenance, no caution flag on the market, symbol not blacklisted."""
    if ctx.health.maintenance:
        return _deny("market_status", "EXCHANGE_MAINTENANCE", "exchange maintenance")
    if ctx.market.caution:
        return _deny("market_status", "MARKET_CAUTION", f"{ctx.market.symbol} carries an exchange caution flag")
    until = ctx.blacklist.get(ctx.signal.symbol)
    if until is not None and ctx.now_ts < until:
        return _deny("market_status", "SYMBOL_BLACKLISTED",
                     f"{ctx.signal.symbol} blacklisted for {until - ctx.now_ts}s after repeated failures")
    return _ok("market_status", "MARKET_OK")


def check_risk_manager(ctx: CheckContext) -> CheckResult:
    """The runtime guard allows entries (trading state ACTIVE); no decision means no entry."""
    g = ctx.guard
    if g is None:
        return _deny("risk_manager", "GUARD_NO_DECISION", "the runtime guard has not evaluated this tick")
    if g.trading_state is TradingState.ACTIVE:
        return _ok("risk_manager", "GUARD_OK")
    code = "GUARD_HALTED" if g.trading_state is TradingState.HALTED else "GUARD_REDUCING"
    return _deny("risk_manager", code, ", ".join(g.codes) or g.trading_state.value)


CHECKS: tuple[Callable[[CheckContext], CheckResult], ...] = (
    check_score, check_regime, check_liquidity, check_risk_budget, check_correlation,
    check_exchange_health, check_market_status, check_risk_manager,
)


def run_checklist(ctx: CheckContext) -> Checklist:
    """Run all eight checks (no short-circuit) and return every result."""
    return Checklist(ctx.signal.symbol, tuple(check(ctx) for check in CHECKS))
