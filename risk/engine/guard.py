"""Runtime guard and kill switches [RK-4]: a pure state machine over a trader's snapshot.

``evaluate(inputs, profile, state)`` -> ``GuardDecision``. The decision carries the new
``GuardState`` (JSON via ``to_dict``) that the service stores in TraderSafetyState, so trips
survive restarts. Trading states, in order of severity:

* ACTIVE: new entries allowed.
* HALTED: no new entries; open positions are managed normally (stops, exits).
* REDUCING: no new entries and open positions are reduced (``reduce_fraction``) or, for the
  emergency stop, all liquidated (``liquidate_all``).

Trips (``TRIP_RULES`` holds the same table for the docs and the UI):

=====================  ==========  =========================================================
code                   severity    clears
=====================  ==========  =========================================================
DAILY_LOSS_LIMIT       HALT        next 00:00 UTC
WEEKLY_LOSS_LIMIT      HALT        next Monday 00:00 UTC
MONTHLY_LOSS_LIMIT     HALT        1st of next month 00:00 UTC
CONSECUTIVE_LOSSES     HALT        after ``consecutive_loss_cooldown_seconds``; the losses
                                   so far are acknowledged, a further full run trips again
MAX_DRAWDOWN           HALT        manual reset only (peak equity rebased to current equity)
VOLATILITY_SPIKE       HALT        ATR% back below 80 % of the trigger, after the hold time
API_ERROR_RATE         HALT        error rate below half the limit, after the hold time
SLIPPAGE_ANOMALY       HALT        realised slippage below 80 % of the trigger, after hold
MODEL_DISAGREEMENT     HALT        disagreement below 80 % of the limit, after the hold time
DB_UNAVAILABLE         HALT        database reachable again (one tick of confirmation)
EXCHANGE_UNAVAILABLE   HALT        exchange reachable again (one tick of confirmation)
MASTER_KILL            HALT        the operator turns the master switch off
LEVERAGE_LIMIT         REDUCE      leverage back at or below ``max_leverage``
PANIC_REGIME           REDUCE      regime no longer PANIC, after the hold time
EMERGENCY_STOP         LIQUIDATE   manual reset only
=====================  ==========  =========================================================

A time-cleared trip stays until its time even if the condition improves; a condition-cleared
trip stays at least ``guard_min_hold_seconds`` (no flapping). Any trip can be reset by the
operator (``reset``), but a condition that still holds trips again on the next evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from regime.engine.types import RegimeLabel
from risk.engine.profiles import RiskProfile


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    HALTED = "HALTED"
    REDUCING = "REDUCING"


class Severity(StrEnum):
    HALT = "HALT"              # no new entries
    REDUCE = "REDUCE"          # no new entries, reduce open positions
    LIQUIDATE = "LIQUIDATE"    # no new entries, close everything

    @property
    def rank(self) -> int:
        return {"HALT": 1, "REDUCE": 2, "LIQUIDATE": 3}[self.value]


class ClearMode(StrEnum):
    TIME = "TIME"              # at ``clears_at_ts``
    CONDITION = "CONDITION"    # when the condition is gone (with hysteresis) and the hold passed
    MANUAL = "MANUAL"          # only by an operator reset


DAILY_LOSS_LIMIT = "DAILY_LOSS_LIMIT"
WEEKLY_LOSS_LIMIT = "WEEKLY_LOSS_LIMIT"
MONTHLY_LOSS_LIMIT = "MONTHLY_LOSS_LIMIT"
CONSECUTIVE_LOSSES = "CONSECUTIVE_LOSSES"
MAX_DRAWDOWN = "MAX_DRAWDOWN"
VOLATILITY_SPIKE = "VOLATILITY_SPIKE"
API_ERROR_RATE = "API_ERROR_RATE"
SLIPPAGE_ANOMALY = "SLIPPAGE_ANOMALY"
MODEL_DISAGREEMENT = "MODEL_DISAGREEMENT"
DB_UNAVAILABLE = "DB_UNAVAILABLE"
EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
MASTER_KILL = "MASTER_KILL"
LEVERAGE_LIMIT = "LEVERAGE_LIMIT"
PANIC_REGIME = "PANIC_REGIME"
EMERGENCY_STOP = "EMERGENCY_STOP"

TRIP_RULES: dict[str, tuple[Severity, ClearMode]] = {
    DAILY_LOSS_LIMIT: (Severity.HALT, ClearMode.TIME),
    WEEKLY_LOSS_LIMIT: (Severity.HALT, ClearMode.TIME),
    MONTHLY_LOSS_LIMIT: (Severity.HALT, ClearMode.TIME),
    CONSECUTIVE_LOSSES: (Severity.HALT, ClearMode.TIME),
    MAX_DRAWDOWN: (Severity.HALT, ClearMode.MANUAL),
    VOLATILITY_SPIKE: (Severity.HALT, ClearMode.CONDITION),
    API_ERROR_RATE: (Severity.HALT, ClearMode.CONDITION),
    SLIPPAGE_ANOMALY: (Severity.HALT, ClearMode.CONDITION),
    MODEL_DISAGREEMENT: (Severity.HALT, ClearMode.CONDITION),
    DB_UNAVAILABLE: (Severity.HALT, ClearMode.CONDITION),
    EXCHANGE_UNAVAILABLE: (Severity.HALT, ClearMode.CONDITION),
    MASTER_KILL: (Severity.HALT, ClearMode.CONDITION),
    LEVERAGE_LIMIT: (Severity.REDUCE, ClearMode.CONDITION),
    PANIC_REGIME: (Severity.REDUCE, ClearMode.CONDITION),
    EMERGENCY_STOP: (Severity.LIQUIDATE, ClearMode.MANUAL),
}

API_MIN_CALLS = 20          # below this many calls in the window the error rate is noise
HYSTERESIS = 0.8            # a condition trip clears below this share of its trigger
API_HYSTERESIS = 0.5
_NO_HOLD = (MASTER_KILL, LEVERAGE_LIMIT)       # operator switch / exposure: clear at once


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def period_starts(now_ts: int) -> dict[str, int]:
    """Epoch seconds at which the current UTC day, ISO week (Monday) and month started; the
    service sums PnL from these instants for the loss limits."""
    now = _utc(now_ts)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = day - timedelta(days=day.weekday())
    month = day.replace(day=1)
    return {"day": int(day.timestamp()), "week": int(week.timestamp()), "month": int(month.timestamp())}


def next_day_start(now_ts: int) -> int:
    return period_starts(now_ts)["day"] + 86_400


def next_week_start(now_ts: int) -> int:
    return period_starts(now_ts)["week"] + 7 * 86_400


def next_month_start(now_ts: int) -> int:
    month = _utc(period_starts(now_ts)["month"])
    nxt = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    return int(nxt.timestamp())


def disagreement_counts(score_a: np.ndarray, dir_a: np.ndarray, score_b: np.ndarray, dir_b: np.ndarray,
                        strong: tuple[float, float] = (70.0, 70.0), ratio: float = 0.5) -> tuple[int, int]:
    """(conflicts, strong markets) between two signal sources. A market is strong when either
    source scores it at or above its own ``strong`` (entry) threshold; the two conflict on it
    when they point opposite ways, or when the other source scores it below ``ratio`` times the
    strong one's score (one sees a setup the other barely sees). Different thresholds alone are
    no conflict: equal scores never conflict. Arrays are ``[markets]``; thresholds are
    (source a, source b)."""
    sa, sb = np.asarray(score_a, dtype=np.float64), np.asarray(score_b, dtype=np.float64)
    da, db = np.asarray(dir_a), np.asarray(dir_b)
    strong_a, strong_b = sa >= strong[0], sb >= strong[1]
    conflict = ((da * db) < 0) | (strong_a & (sb < ratio * sa)) | (strong_b & (sa < ratio * sb))
    strong_any = strong_a | strong_b
    return int((conflict & strong_any).sum()), int(strong_any.sum())


def disagreement_share(score_a: np.ndarray, dir_a: np.ndarray, score_b: np.ndarray, dir_b: np.ndarray,
                       strong: tuple[float, float] = (70.0, 70.0), ratio: float = 0.5) -> float:
    """``disagreement_counts`` as a share of the strong markets; 0 when no market is strong."""
    conflicts, n = disagreement_counts(score_a, dir_a, score_b, dir_b, strong, ratio)
    return conflicts / n if n else 0.0


@dataclass(frozen=True, slots=True)
class GuardInputs:
    """A trader's snapshot at ``now_ts``. Optional inputs left None are not judged.

    Returns are fractions of the equity at the period start (``period_starts``), negative for a
    loss; ``atr_pct`` and its baseline are the leader's (or the book's) ATR% now and over the
    reference window; ``api_error_rate`` is failed / total exchange calls over the window;
    slippage values are fractions; ``model_disagreement`` from ``disagreement_share``.
    """

    now_ts: int
    equity: float
    day_return: float = 0.0
    week_return: float = 0.0
    month_return: float = 0.0
    consecutive_losses: int = 0
    atr_pct: float | None = None
    atr_pct_baseline: float | None = None
    api_error_rate: float | None = None
    api_calls: int = 0
    realised_slippage: float | None = None
    expected_slippage: float | None = None
    model_disagreement: float | None = None
    leverage: float | None = None
    db_ok: bool = True
    exchange_ok: bool = True
    regime: RegimeLabel | None = None
    master_kill: bool = False
    emergency_stop: bool = False


@dataclass(frozen=True, slots=True)
class Trip:
    """One active kill switch: why, how bad, since when and how it clears."""

    code: str
    severity: Severity
    detail: str
    since_ts: int
    clear_mode: ClearMode
    clears_at_ts: int | None = None
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity.value, "detail": self.detail,
                "since_ts": self.since_ts, "clear_mode": self.clear_mode.value,
                "clears_at_ts": self.clears_at_ts, "value": _json_num(self.value), "limit": _json_num(self.limit)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trip:
        return cls(str(d["code"]), Severity(d["severity"]), str(d.get("detail", "")), int(d["since_ts"]),
                   ClearMode(d["clear_mode"]), d.get("clears_at_ts"), d.get("value"), d.get("limit"))


def _json_num(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


@dataclass(frozen=True, slots=True)
class GuardState:
    """What the guard remembers between ticks (persisted in TraderSafetyState)."""

    trading_state: TradingState = TradingState.ACTIVE
    trips: tuple[Trip, ...] = ()
    peak_equity: float = 0.0
    consecutive_loss_ack: int = 0
    last_ts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"trading_state": self.trading_state.value, "trips": [t.to_dict() for t in self.trips],
                "peak_equity": self.peak_equity, "consecutive_loss_ack": self.consecutive_loss_ack,
                "last_ts": self.last_ts}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GuardState:
        if not d:
            return cls()
        return cls(TradingState(d.get("trading_state", TradingState.ACTIVE)),
                   tuple(Trip.from_dict(t) for t in d.get("trips", ())), float(d.get("peak_equity", 0.0)),
                   int(d.get("consecutive_loss_ack", 0)), int(d.get("last_ts", 0)))

    def trip(self, code: str) -> Trip | None:
        return next((t for t in self.trips if t.code == code), None)


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """The guard's verdict for this tick.

    ``reduce_fraction``/``reduce_code``: the strongest non-PANIC reduction for the position
    manager (PANIC itself is handled per position from the regime, where winners and losers
    are told apart); ``liquidate_all`` for the emergency stop.
    """

    trading_state: TradingState
    trips: tuple[Trip, ...]
    new_trips: tuple[Trip, ...]
    cleared: tuple[Trip, ...]
    drawdown: float
    reduce_fraction: float = 0.0
    reduce_code: str = ""
    liquidate_all: bool = False
    state: GuardState = field(default_factory=GuardState)

    @property
    def allows_entries(self) -> bool:
        return self.trading_state is TradingState.ACTIVE

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(t.code for t in self.trips)

    @property
    def changed(self) -> bool:
        """True when the service must write an event, an audit row and an alert."""
        return bool(self.new_trips or self.cleared)


@dataclass(frozen=True, slots=True)
class _Cond:
    tripped: bool
    clear_ok: bool
    detail: str
    value: float | None = None
    limit: float | None = None
    reduce_fraction: float = 0.0


def _conditions(x: GuardInputs, p: RiskProfile, drawdown: float, ack: int) -> dict[str, _Cond]:
    """Each judged condition now: is it tripped, and is it clear enough to release a trip."""
    c: dict[str, _Cond] = {}
    for code, ret, limit, name in ((DAILY_LOSS_LIMIT, x.day_return, p.daily_loss_limit, "day"),
                                   (WEEKLY_LOSS_LIMIT, x.week_return, p.weekly_loss_limit, "week"),
                                   (MONTHLY_LOSS_LIMIT, x.month_return, p.monthly_loss_limit, "month")):
        bad = not math.isfinite(ret) or ret <= -limit
        c[code] = _Cond(bad, not bad, f"{name} loss {-ret:.2%} reached the limit {limit:.2%}", -ret, limit)
    run = x.consecutive_losses - ack
    c[CONSECUTIVE_LOSSES] = _Cond(run >= p.consecutive_loss_limit, True,
                                  f"{x.consecutive_losses} losses in a row (limit {p.consecutive_loss_limit})",
                                  float(x.consecutive_losses), float(p.consecutive_loss_limit))
    c[MAX_DRAWDOWN] = _Cond(drawdown >= p.max_drawdown, drawdown < p.max_drawdown,
                            f"drawdown {drawdown:.2%} from peak reached the limit {p.max_drawdown:.2%}",
                            drawdown, p.max_drawdown)
    if x.atr_pct is not None and x.atr_pct_baseline is not None and x.atr_pct_baseline > 0:
        ratio = x.atr_pct / x.atr_pct_baseline
        c[VOLATILITY_SPIKE] = _Cond(ratio >= p.volatility_spike_ratio, ratio < HYSTERESIS * p.volatility_spike_ratio,
                                    f"ATR% {ratio:.2f}x its baseline (limit {p.volatility_spike_ratio:.2f}x)",
                                    ratio, p.volatility_spike_ratio)
    if x.api_error_rate is not None and x.api_calls >= API_MIN_CALLS:
        rate = x.api_error_rate
        c[API_ERROR_RATE] = _Cond(rate >= p.api_error_rate_limit, rate < API_HYSTERESIS * p.api_error_rate_limit,
                                  f"API error rate {rate:.1%} over {x.api_calls} calls "
                                  f"(limit {p.api_error_rate_limit:.1%})", rate, p.api_error_rate_limit)
    if x.realised_slippage is not None:
        trigger = max(p.slippage_anomaly_ratio * (x.expected_slippage or 0.0), p.slippage_anomaly_abs)
        s = x.realised_slippage
        c[SLIPPAGE_ANOMALY] = _Cond(s > trigger, s <= HYSTERESIS * trigger,
                                    f"realised slippage {s:.3%} above {trigger:.3%}", s, trigger)
    if x.model_disagreement is not None:
        d = x.model_disagreement
        c[MODEL_DISAGREEMENT] = _Cond(d >= p.model_disagreement_limit, d < HYSTERESIS * p.model_disagreement_limit,
                                      f"{d:.0%} of strong signals conflict between sources "
                                      f"(limit {p.model_disagreement_limit:.0%})", d, p.model_disagreement_limit)
    if x.leverage is not None:
        lev = x.leverage
        over = not math.isfinite(lev) or lev > p.max_leverage
        frac = 1.0 if not math.isfinite(lev) else max(0.0, 1.0 - p.max_leverage / lev) if lev > 0 else 0.0
        c[LEVERAGE_LIMIT] = _Cond(over, not over, f"leverage {lev:.2f}x above {p.max_leverage:.2f}x",
                                  lev, p.max_leverage, frac)
    c[DB_UNAVAILABLE] = _Cond(not x.db_ok, x.db_ok, "database unavailable")
    c[EXCHANGE_UNAVAILABLE] = _Cond(not x.exchange_ok, x.exchange_ok, "exchange unavailable")
    c[MASTER_KILL] = _Cond(x.master_kill, not x.master_kill, "master kill switch is on")
    if x.regime is not None:
        panic = x.regime is RegimeLabel.PANIC
        c[PANIC_REGIME] = _Cond(panic, not panic, "PANIC regime", reduce_fraction=p.panic_reduce_fraction)
    c[EMERGENCY_STOP] = _Cond(x.emergency_stop, False, "emergency stop: liquidate everything", reduce_fraction=1.0)
    return c


def _clears_at(code: str, now_ts: int, p: RiskProfile) -> int | None:
    if code == DAILY_LOSS_LIMIT:
        return next_day_start(now_ts)
    if code == WEEKLY_LOSS_LIMIT:
        return next_week_start(now_ts)
    if code == MONTHLY_LOSS_LIMIT:
        return next_month_start(now_ts)
    if code == CONSECUTIVE_LOSSES:
        return now_ts + p.consecutive_loss_cooldown_seconds
    return None


def _hold(code: str, p: RiskProfile) -> int:
    if code in _NO_HOLD:
        return 0
    if code in (DB_UNAVAILABLE, EXCHANGE_UNAVAILABLE):
        return p.cadence_seconds
    return p.guard_min_hold_seconds


def _state_of(trips: tuple[Trip, ...]) -> TradingState:
    worst = max((t.severity.rank for t in trips), default=0)
    return TradingState.ACTIVE if worst == 0 else TradingState.HALTED if worst == 1 else TradingState.REDUCING


def evaluate(inputs: GuardInputs, profile: RiskProfile, state: GuardState | None = None) -> GuardDecision:
    """One guard step: release trips whose clearing rule is met, then trip every condition that
    holds now. Pure: the same inputs and state give the same decision."""
    prev = state or GuardState()
    now = int(inputs.now_ts)
    if now < prev.last_ts:
        raise ValueError(f"guard clock went backwards: {now} < {prev.last_ts}")
    equity = inputs.equity if math.isfinite(inputs.equity) else 0.0
    peak = max(prev.peak_equity, equity)
    drawdown = 1.0 - equity / peak if peak > 0 else 0.0
    ack = prev.consecutive_loss_ack if inputs.consecutive_losses >= prev.consecutive_loss_ack else 0
    conds = _conditions(inputs, profile, drawdown, ack)

    kept: list[Trip] = []
    cleared: list[Trip] = []
    for trip in prev.trips:
        cond = conds.get(trip.code)
        if trip.clear_mode is ClearMode.TIME:
            release = trip.clears_at_ts is not None and now >= trip.clears_at_ts
        elif trip.clear_mode is ClearMode.CONDITION:
            # a condition that is no longer judged (input absent) counts as cleared
            release = (cond is None or cond.clear_ok) and now - trip.since_ts >= _hold(trip.code, profile)
        else:
            release = False
        if release:
            cleared.append(trip)
            if trip.code == CONSECUTIVE_LOSSES:
                ack = inputs.consecutive_losses
        else:
            kept.append(trip)
    if any(t.code == CONSECUTIVE_LOSSES for t in cleared):
        conds = _conditions(inputs, profile, drawdown, ack)

    active = {t.code for t in kept}
    new: list[Trip] = []
    for code, cond in conds.items():
        if not cond.tripped:
            continue
        if code in active:
            kept = [replace(t, detail=cond.detail, value=cond.value) if t.code == code else t for t in kept]
            continue
        severity, mode = TRIP_RULES[code]
        trip = Trip(code, severity, cond.detail, now, mode, _clears_at(code, now, profile), cond.value, cond.limit)
        new.append(trip)
    trips = tuple(kept + new)
    trading_state = _state_of(trips)

    reduce_fraction, reduce_code = 0.0, ""
    for t in trips:
        if t.severity is Severity.REDUCE and t.code != PANIC_REGIME:
            frac = conds[t.code].reduce_fraction if t.code in conds else 0.0
            if frac > reduce_fraction:
                reduce_fraction, reduce_code = frac, t.code
    liquidate = any(t.severity is Severity.LIQUIDATE for t in trips)
    if liquidate:
        reduce_fraction, reduce_code = 1.0, EMERGENCY_STOP
    new_state = GuardState(trading_state, trips, peak, ack, now)
    return GuardDecision(trading_state, trips, tuple(new), tuple(cleared), drawdown, reduce_fraction,
                         reduce_code, liquidate, new_state)


def reset(state: GuardState, *, equity: float, consecutive_losses: int, codes: tuple[str, ...] | None = None
          ) -> GuardState:
    """Operator reset of the named trips (all when ``codes`` is None).

    Resetting MAX_DRAWDOWN rebases peak equity to the current equity (the operator accepts the
    loss); resetting CONSECUTIVE_LOSSES acknowledges the current run. Other conditions that
    still hold trip again on the next ``evaluate``.
    """
    chosen = set(codes) if codes is not None else {t.code for t in state.trips}
    kept = tuple(t for t in state.trips if t.code not in chosen)
    peak = equity if MAX_DRAWDOWN in chosen and math.isfinite(equity) and equity > 0 else state.peak_equity
    ack = consecutive_losses if CONSECUTIVE_LOSSES in chosen else state.consecutive_loss_ack
    return replace(state, trips=kept, trading_state=_state_of(kept), peak_equity=peak, consecutive_loss_ack=ack)
