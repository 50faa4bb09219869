"""Position manager [RK-5]: what to do with one open position on one tick.

Rules, in priority order (the first rule that closes the position ends the tick):

1. ``EMERGENCY_LIQUIDATE``: the operator's emergency stop closes everything at market.
2. ``STOP_LOSS`` / ``TRAILING_STOP``: the bar traded through the stop (low <= stop for a long):
   close at market. ``TRAILING_STOP`` when the stop had been moved from the initial one.
3. PANIC regime: a losing position (R <= 0) is closed (``PANIC_CLOSE``); a winner is reduced by
   ``panic_reduce_fraction`` once per PANIC episode (``PANIC_REDUCE``) and its stop moved to
   break-even. A guard ``reduce_fraction`` (e.g. leverage above limit) reduces once per trip.
4. ``TIME_STOP``: open for ``time_stop_seconds`` and still below ``time_stop_min_r``: close.
5. ``SCORE_EXIT``: the market's final score fell to ``exit_threshold`` or below: close, once the
   position is at least ``score_exit_min_hold_seconds`` old (a setup's score fades within
   minutes while its move takes hours; stops and targets protect the position meanwhile).
6. ``TAKE_PROFIT_n``: scale-out plan, e.g. at 1R sell 1/3 of the initial quantity, at 2R
   another 1/3; after the first, the stop moves to break-even plus round-trip fees.
7. Trailing stop: once the best price reached ``trailing_activation_r`` (or every scale-out is
   done) the stop follows ``best price -/+ trailing_atr_mult * ATR``. Every stop change goes
   through ``_tighten``: a stop only ever moves towards the price, never away.

R is the initial risk per unit ``|entry - initial_stop|``. The returned state carries the new
stop, best price and scale-out count; ``qty`` changes only when fills arrive (``on_fill``).
A partial exit that would leave less than the minimum order value closes the whole position
instead (no dust), and a scale-out below the minimum order value is skipped (marked done).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any

from execution.engine.precision import round_qty, to_decimal
from execution.engine.types import MarketInfo, Side
from regime.engine.types import RegimeLabel
from risk.engine.profiles import RiskProfile
from strategies.engine.types import Direction

EMERGENCY_LIQUIDATE = "EMERGENCY_LIQUIDATE"
STOP_LOSS = "STOP_LOSS"
TRAILING_STOP = "TRAILING_STOP"
PANIC_CLOSE = "PANIC_CLOSE"
PANIC_REDUCE = "PANIC_REDUCE"
GUARD_REDUCE = "GUARD_REDUCE"
TIME_STOP = "TIME_STOP"
SCORE_EXIT = "SCORE_EXIT"
TAKE_PROFIT = "TAKE_PROFIT"          # suffixed with the level number: TAKE_PROFIT_1
TP_BELOW_MIN_ORDER = "TP_BELOW_MIN_ORDER"
_PANIC = "PANIC"


class OrderStyle(StrEnum):
    MARKET = "market"                        # must execute now (stops, emergency)
    LIMIT = "limit"                          # passive (take profit at the level price)
    LIMIT_THEN_MARKET = "limit_then_market"  # limit first, market after the timeout [EXE-1]


@dataclass(frozen=True, slots=True)
class PositionState:
    """One open position as the position manager sees it (floats; persisted via ``to_dict``).

    ``highest_price``/``lowest_price`` are the extremes since entry; ``reductions`` lists the
    one-off reductions already applied in the current episode (``"PANIC"``, guard trip codes);
    ``closing`` is set once a full close was requested so it is not requested again.
    """

    symbol: str
    direction: Direction
    entry_price: float
    qty: float
    initial_qty: float
    initial_stop: float
    stop: float
    highest_price: float
    lowest_price: float
    opened_ts: int
    scale_outs_done: int = 0
    trailing_active: bool = False
    reductions: tuple[str, ...] = ()
    closing: bool = False

    def __post_init__(self) -> None:
        nums = (self.entry_price, self.qty, self.initial_qty, self.initial_stop, self.stop)
        if not all(math.isfinite(v) for v in nums):
            raise ValueError(f"{self.symbol}: position numbers must be finite")
        if self.direction not in (Direction.LONG, Direction.SHORT):
            raise ValueError(f"{self.symbol}: direction must be LONG or SHORT")
        if self.entry_price <= 0 or self.qty < 0 or self.initial_qty <= 0:
            raise ValueError(f"{self.symbol}: entry and initial qty must be positive, qty >= 0")
        if self.risk_unit <= 0 or self.sign * (self.entry_price - self.initial_stop) <= 0:
            raise ValueError(f"{self.symbol}: the initial stop must be on the losing side of the entry")

    @classmethod
    def open(cls, symbol: str, direction: Direction, entry_price: float, qty: float, stop: float,
             opened_ts: int) -> PositionState:
        """A freshly filled position."""
        return cls(symbol, Direction(direction), entry_price, qty, qty, stop, stop, entry_price, entry_price,
                   opened_ts)

    @property
    def sign(self) -> int:
        return 1 if self.direction is Direction.LONG else -1

    @property
    def risk_unit(self) -> float:
        """1R: the initial stop distance per unit."""
        return abs(self.entry_price - self.initial_stop)

    @property
    def best_price(self) -> float:
        return self.highest_price if self.direction is Direction.LONG else self.lowest_price

    def r_multiple(self, price: float) -> float:
        return self.sign * (price - self.entry_price) / self.risk_unit

    @property
    def open_risk(self) -> float:
        """Loss versus entry if the current stop is hit (0 once the stop is past break-even)."""
        return max(self.sign * (self.entry_price - self.stop), 0.0) * self.qty

    def on_fill(self, qty_closed: float) -> PositionState:
        """The position after an exit fill of ``qty_closed`` units."""
        if qty_closed < 0:
            raise ValueError("qty_closed must be >= 0")
        left = max(self.qty - qty_closed, 0.0)
        return replace(self, qty=left, closing=self.closing and left > 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["direction"] = int(self.direction)
        d["reductions"] = list(self.reductions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PositionState:
        data = dict(d)
        data["direction"] = Direction(int(data["direction"]))
        data["reductions"] = tuple(data.get("reductions", ()))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class ExitIntent:
    """Sell (or buy back) ``qty`` of ``symbol``; ``qty_fraction`` of the position held at the
    start of the tick; ``price_hint`` is the level that triggered it (for a limit order)."""

    symbol: str
    side: Side
    qty: Decimal
    qty_fraction: float
    reason_code: str
    style: OrderStyle
    close_all: bool
    price_hint: float | None = None


@dataclass(frozen=True, slots=True)
class PositionUpdate:
    state: PositionState
    intents: tuple[ExitIntent, ...]
    notes: tuple[str, ...] = ()

    @property
    def reason_codes(self) -> tuple[str, ...]:
        return tuple(i.reason_code for i in self.intents) + self.notes


def _tighten(pos: PositionState, candidate: float) -> float:
    """The tighter of the current stop and ``candidate`` (a stop never widens)."""
    if not math.isfinite(candidate):
        return pos.stop
    return max(pos.stop, candidate) if pos.direction is Direction.LONG else min(pos.stop, candidate)


def manage_position(
    pos: PositionState,
    *,
    profile: RiskProfile,
    price: float,
    atr: float,
    now_ts: int,
    high: float | None = None,
    low: float | None = None,
    score: float | None = None,
    regime: RegimeLabel | None = None,
    liquidate_all: bool = False,
    reduce_fraction: float = 0.0,
    reduce_code: str = GUARD_REDUCE,
    market: MarketInfo | None = None,
) -> PositionUpdate:
    """Decide this tick's exits for one position. ``high``/``low`` are the extremes traded since
    the previous tick (default: ``price``); ``score`` the market's final score this tick (None =
    not scored); ``reduce_fraction`` the guard's reduction (with ``reduce_code`` as the episode
    key); ``market`` supplies precision, minimum order and fees."""
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"{pos.symbol}: price must be positive and finite, got {price!r}")
    hi = price if high is None or not math.isfinite(high) else max(high, price)
    lo = price if low is None or not math.isfinite(low) else min(low, price)
    state = replace(pos, highest_price=max(pos.highest_price, hi), lowest_price=min(pos.lowest_price, lo))
    if state.qty <= 0 or state.closing:
        return PositionUpdate(state, ())
    exit_side = Side.SELL if pos.direction is Direction.LONG else Side.BUY
    fallback = OrderStyle.LIMIT_THEN_MARKET if profile.allow_market_fallback else OrderStyle.LIMIT
    decimals = market.qty_decimals if market else 8
    lot = market.lot_size if market else Decimal("0")
    min_notional = float(market.min_notional) if market else 0.0
    fee = float(market.taker_fee) if market else 0.0

    def close(reason: str, style: OrderStyle, hint: float | None = None) -> PositionUpdate:
        qty = round_qty(to_decimal(state.qty, "qty"), decimals, lot)
        intent = ExitIntent(pos.symbol, exit_side, qty, 1.0, reason, style, True, hint)
        return PositionUpdate(replace(state, closing=True), (intent,))

    # 1. emergency stop
    if liquidate_all:
        return close(EMERGENCY_LIQUIDATE, OrderStyle.MARKET)
    # 2. stop through the bar (the stop rested during the bar, so test it before moving it)
    hit = lo <= state.stop if pos.direction is Direction.LONG else hi >= state.stop
    if hit:
        return close(STOP_LOSS if state.stop == state.initial_stop else TRAILING_STOP, OrderStyle.MARKET,
                     state.stop)

    r_now = state.r_multiple(price)
    notes: list[str] = []
    intents: list[ExitIntent] = []
    remaining = state.qty

    def partial(fraction_of_initial: float, reason: str, style: OrderStyle, hint: float | None,
                of_current: bool = False) -> bool:
        """Queue a partial exit; returns True when it turned into a full close."""
        nonlocal remaining
        want = remaining * fraction_of_initial if of_current else state.initial_qty * fraction_of_initial
        qty = round_qty(to_decimal(min(want, remaining), "qty"), decimals, lot)
        left = remaining - float(qty)
        if left * price < max(min_notional, 0.0) or left <= 0 or float(qty) >= remaining:
            qty = round_qty(to_decimal(remaining, "qty"), decimals, lot)
            intents.append(ExitIntent(pos.symbol, exit_side, qty, remaining / state.qty, reason, style, True, hint))
            remaining = 0.0
            return True
        if float(qty) * price < min_notional or qty <= 0:
            notes.append(TP_BELOW_MIN_ORDER if reason.startswith(TAKE_PROFIT) else reason + "_BELOW_MIN_ORDER")
            return False
        intents.append(ExitIntent(pos.symbol, exit_side, qty, float(qty) / state.qty, reason, style, False, hint))
        remaining = left
        return False

    # 3. PANIC and guard reductions, once per episode
    reductions = list(state.reductions)
    if regime is RegimeLabel.PANIC:
        if _PANIC not in reductions:
            if r_now <= 0 or profile.panic_reduce_fraction >= 1.0:
                return close(PANIC_CLOSE, fallback)
            reductions.append(_PANIC)
            if partial(profile.panic_reduce_fraction, PANIC_REDUCE, fallback, None, of_current=True):
                return PositionUpdate(replace(state, closing=True, reductions=tuple(reductions)), tuple(intents),
                                      tuple(notes))
            state = replace(state, stop=_tighten(state, state.entry_price))
    elif _PANIC in reductions:
        reductions.remove(_PANIC)
    if reduce_fraction > 0 and reduce_code not in reductions:
        reductions.append(reduce_code)
        if reduce_fraction >= 1.0:
            return close(reduce_code, fallback)
        if partial(reduce_fraction, reduce_code, fallback, None, of_current=True):
            return PositionUpdate(replace(state, closing=True, reductions=tuple(reductions)), tuple(intents),
                                  tuple(notes))
    elif reduce_fraction <= 0 and reduce_code in reductions:
        reductions.remove(reduce_code)
    state = replace(state, reductions=tuple(reductions))

    # 4. time stop, 5. score exit (both close whatever is left)
    if profile.time_stop_seconds > 0 and now_ts - state.opened_ts >= profile.time_stop_seconds \
            and r_now < profile.time_stop_min_r:
        return _close_rest(state, intents, notes, TIME_STOP, fallback, exit_side, decimals, lot, remaining)
    if score is not None and math.isfinite(score) and score <= profile.exit_threshold \
            and now_ts - state.opened_ts >= profile.score_exit_min_hold_seconds:
        return _close_rest(state, intents, notes, SCORE_EXIT, fallback, exit_side, decimals, lot, remaining)

    # 6. take-profit scale-outs, judged on the best price traded since the previous tick
    r_best_tick = state.r_multiple(hi if pos.direction is Direction.LONG else lo)
    plan = profile.take_profit_plan
    done = state.scale_outs_done
    while done < len(plan) and r_best_tick >= plan[done][0]:
        level_r, fraction = plan[done]
        level_price = state.entry_price + state.sign * level_r * state.risk_unit
        done += 1
        if partial(fraction, f"{TAKE_PROFIT}_{done}", OrderStyle.LIMIT, level_price):
            return PositionUpdate(replace(state, scale_outs_done=done, closing=True), tuple(intents), tuple(notes))
        if done == 1 and profile.breakeven_after_first_tp:
            breakeven = state.entry_price * (1 + state.sign * 2 * fee)
            state = replace(state, stop=_tighten(state, breakeven))
    state = replace(state, scale_outs_done=done)

    # 7. trailing stop (only ever tightens)
    activated = state.trailing_active or state.r_multiple(state.best_price) >= profile.trailing_activation_r \
        or (len(plan) > 0 and done >= len(plan))
    if activated and math.isfinite(atr) and atr > 0:
        trail = state.best_price - state.sign * profile.trailing_atr_mult * atr
        state = replace(state, trailing_active=True, stop=_tighten(state, trail))
    elif activated:
        state = replace(state, trailing_active=True)
    return PositionUpdate(state, tuple(intents), tuple(notes))


def _close_rest(state: PositionState, intents: list[ExitIntent], notes: list[str], reason: str,
                style: OrderStyle, side: Side, decimals: int, lot: Decimal, remaining: float) -> PositionUpdate:
    qty = round_qty(to_decimal(remaining, "qty"), decimals, lot)
    if qty > 0:
        intents.append(ExitIntent(state.symbol, side, qty, remaining / state.qty, reason, style, True))
    return PositionUpdate(replace(state, closing=True), tuple(intents), tuple(notes))
