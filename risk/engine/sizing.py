"""Position sizing [RK-1].

``qty = dollar_risk / risk_per_unit`` where

* ``dollar_risk = equity * risk_per_trade * drawdown_scale(drawdown)``;
* the stop is ``atr_stop_mult`` ATRs from the entry (below for a long, above for a short), put
  on the exchange tick grid (always towards the entry, so it never widens);
* ``risk_per_unit = |entry - stop| + taker_fee * (entry + stop)``: the loss per unit at the stop
  including the fees of both legs, so a stopped trade loses at most ``dollar_risk``.

The risk-based quantity is then capped, and every cap below it is recorded as a reason code:

=====================  ============================================================
CAP_PORTFOLIO_RISK     ``qty * risk_per_unit <= remaining portfolio risk budget``
CAP_MAX_POSITION       ``notional <= max_position_pct * equity``
CAP_CASH               ``notional * (1 + taker_fee) <= cash available``
CAP_LIQUIDITY          ``notional <= liquidity_min_ratio * average top-5 depth``
CAP_KELLY              ``notional <= kelly_with_cvar(stats) * equity`` (with enough trades)
CAP_SLIPPAGE           expected slippage from walking the book ``<= max_slippage``
=====================  ============================================================

The quantity is rounded *down* to the market's precision; an order below the minimum order
value becomes 0 (``BELOW_MIN_ORDER``), never rounded up. A skipped trade is a result with
``qty == 0`` and reason codes, never an exception; no result is negative or NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from execution.engine.precision import market_tick, round_price_to_tick, round_qty, to_decimal
from execution.engine.types import MarketInfo, OrderBook, Side
from risk.engine.montecarlo import TradeStats, kelly_with_cvar
from risk.engine.profiles import RiskProfile
from strategies.engine.types import Direction

ZERO = Decimal("0")
DEPTH_LEVELS = 5
_SHRINK = 1.0 - 1e-9        # keeps float -> Decimal conversion strictly inside every cap

# reason codes
SIZE_RISK = "SIZE_RISK"                    # the risk-based size applied unchanged
DRAWDOWN_SCALE = "DRAWDOWN_SCALE"          # dollar risk shrunk by the drawdown scale
CAP_PORTFOLIO_RISK = "CAP_PORTFOLIO_RISK"
CAP_MAX_POSITION = "CAP_MAX_POSITION"
CAP_CASH = "CAP_CASH"
CAP_LIQUIDITY = "CAP_LIQUIDITY"
CAP_KELLY = "CAP_KELLY"
CAP_SLIPPAGE = "CAP_SLIPPAGE"
KELLY_NO_EDGE = "KELLY_NO_EDGE"            # trade statistics show no edge: Kelly fraction 0
BELOW_MIN_ORDER = "BELOW_MIN_ORDER"
DRAWDOWN_LIMIT = "DRAWDOWN_LIMIT"          # drawdown at or beyond the profile limit: no size
INVALID_INPUT = "INVALID_INPUT"
NO_ORDER_BOOK = "NO_ORDER_BOOK"
STOP_TOO_CLOSE = "STOP_TOO_CLOSE"          # the stop rounds onto the entry: no defined risk


@dataclass(frozen=True, slots=True)
class SizingResult:
    """The size of one entry and why it is what it is.

    ``qty``/``entry_price``/``stop_price``/``notional`` are exchange-precise Decimals for the
    order; ``caps`` maps each limit to the quantity it allows (float, for the UI);
    ``reason_codes`` lists every cap that bound and, when ``qty == 0``, why nothing is traded.
    """

    qty: Decimal
    entry_price: Decimal
    stop_price: Decimal
    notional: Decimal
    dollar_risk: float            # target risk after the drawdown scale
    risk_amount: float            # loss at the stop of the final qty, fees included
    risk_per_unit: float
    drawdown_scale: float
    expected_slippage: float      # of the final qty, from walking the book (fraction)
    caps: dict[str, float] = field(default_factory=dict)
    reason_codes: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        return self.qty <= 0

    def to_dict(self) -> dict[str, object]:
        """JSON-safe (Decimal as string) for the Signal row and the UI."""
        return {
            "qty": str(self.qty), "entry_price": str(self.entry_price), "stop_price": str(self.stop_price),
            "notional": str(self.notional), "dollar_risk": self.dollar_risk, "risk_amount": self.risk_amount,
            "risk_per_unit": self.risk_per_unit, "drawdown_scale": self.drawdown_scale,
            "expected_slippage": self.expected_slippage,
            "caps": {k: (v if math.isfinite(v) else None) for k, v in self.caps.items()},
            "reason_codes": list(self.reason_codes),
        }


def drawdown_scale(drawdown: float, profile: RiskProfile) -> float:
    """Size multiplier for the current drawdown from peak equity (fraction).

    1 up to ``drawdown_scale_start``, then linear down to ``drawdown_scale_floor`` as the
    drawdown approaches ``max_drawdown``, and 0 at or beyond it (the guard halts there anyway).
    """
    if not math.isfinite(drawdown):
        return 0.0
    dd = max(drawdown, 0.0)
    start, limit, floor = profile.drawdown_scale_start, profile.max_drawdown, profile.drawdown_scale_floor
    if dd >= limit:
        return 0.0
    if dd <= start:
        return 1.0
    return 1.0 - (1.0 - floor) * (dd - start) / (limit - start)


def walk_book(levels: np.ndarray, qty: float) -> tuple[float, float]:
    """Average fill price and filled quantity of taking ``qty`` from ``levels`` ``[n x 2]``
    (price, qty) best first. Filled < qty when the book is too thin."""
    if qty <= 0 or len(levels) == 0:
        return float("nan"), 0.0
    prices, sizes = levels[:, 0], levels[:, 1]
    before = np.concatenate(([0.0], np.cumsum(sizes)[:-1]))   # exclusive prefix: no cancellation
    take = np.clip(qty - before, 0.0, sizes)
    filled = float(take.sum())
    return (float((take * prices).sum() / filled) if filled > 0 else float("nan")), filled


def slippage_of(levels: np.ndarray, qty: float) -> float:
    """Expected slippage of taking ``qty`` versus the touch (fraction, >= 0); inf when the book
    cannot fill it."""
    if qty <= 0:
        return 0.0
    avg, filled = walk_book(levels, qty)
    if filled < qty * (1 - 1e-9):
        return math.inf
    best = float(levels[0, 0])
    return abs(avg - best) / best


def max_qty_within_slippage(levels: np.ndarray, max_slippage: float, buy: bool) -> float:
    """Largest quantity whose average fill is within ``max_slippage`` of the touch, taking
    ``levels`` (asks for a ``buy``, else bids).

    Walking level k after filling levels < k fully, the average price is
    ``(V + p_k x) / (Q + x)``; setting it to the limit price ``A`` gives
    ``x = (A Q - V) / (p_k - A)``. Vectorised over levels, the first level that cannot be
    fully taken decides.
    """
    if len(levels) == 0:
        return 0.0
    prices, sizes = levels[:, 0].astype(np.float64), levels[:, 1].astype(np.float64)
    best = prices[0]
    limit = best * (1 + max_slippage) if buy else best * (1 - max_slippage)
    cum_q = np.concatenate(([0.0], np.cumsum(sizes)))[:-1]
    cum_v = np.concatenate(([0.0], np.cumsum(sizes * prices)))[:-1]
    denom = prices - limit
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(np.abs(denom) > 0, (limit * cum_q - cum_v) / denom, np.inf)
    # beyond the limit price a level only fills part; inside it, the whole level
    beyond = (prices > limit) if buy else (prices < limit)
    x = np.where(beyond, np.clip(x, 0.0, sizes), sizes)
    partial = np.flatnonzero(x < sizes)
    stop = partial[0] + 1 if partial.size else len(sizes)
    return float(x[:stop].sum())


def _price_dec(price: float, market: MarketInfo, side: Side) -> Decimal:
    """Put a price on the market's tick grid (BUY down, SELL up); unchanged when no tick is known."""
    value = to_decimal(price, "price")
    try:
        tick = market_tick(market, value)
    except ValueError:
        return value
    return round_price_to_tick(value, tick, side)


def _skip(reason: str, entry: Decimal = ZERO, stop: Decimal = ZERO, scale: float = 0.0,
          caps: dict[str, float] | None = None, codes: tuple[str, ...] = (), dollar_risk: float = 0.0,
          risk_per_unit: float = 0.0) -> SizingResult:
    return SizingResult(ZERO, entry, stop, ZERO, dollar_risk, 0.0, risk_per_unit, scale, 0.0,
                        caps or {}, tuple(dict.fromkeys((*codes, reason))))


def size_position(
    *,
    profile: RiskProfile,
    equity: float,
    cash_available: float,
    entry_price: float,
    atr: float,
    direction: Direction,
    market: MarketInfo,
    book: OrderBook | None,
    remaining_risk_budget: float,
    drawdown: float = 0.0,
    trade_stats: TradeStats | None = None,
) -> SizingResult:
    """Size one entry; see the module docstring for the formula and the caps.

    ``equity``/``cash_available``/``remaining_risk_budget`` are in quote currency
    (``remaining_risk_budget`` from ``portfolio.remaining_risk_budget``); ``drawdown`` is the
    fraction below peak equity; ``atr`` is in price units on the profile's ATR period.
    """
    numbers = (equity, cash_available, entry_price, atr, remaining_risk_budget, drawdown)
    if not all(isinstance(v, int | float | Decimal) and not isinstance(v, bool) and math.isfinite(v)
               for v in numbers):
        return _skip(INVALID_INPUT)
    # Decimal money from the database is fine here: the arithmetic below is float by design
    equity, cash_available, entry_price, atr, remaining_risk_budget, drawdown = map(float, numbers)
    if equity <= 0 or entry_price <= 0 or atr <= 0 or direction not in (Direction.LONG, Direction.SHORT):
        return _skip(INVALID_INPUT)
    is_long = direction is Direction.LONG
    entry_side, exit_side = (Side.BUY, Side.SELL) if is_long else (Side.SELL, Side.BUY)

    scale = drawdown_scale(drawdown, profile)
    if scale <= 0:
        return _skip(DRAWDOWN_LIMIT, scale=scale)
    dollar_risk = equity * profile.risk_per_trade * scale
    codes: list[str] = [DRAWDOWN_SCALE] if scale < 1.0 else []

    raw_stop = entry_price - profile.atr_stop_mult * atr if is_long else entry_price + profile.atr_stop_mult * atr
    if raw_stop <= 0:
        return _skip(INVALID_INPUT, scale=scale, dollar_risk=dollar_risk)
    try:
        entry_dec = _price_dec(entry_price, market, entry_side)
        # the stop order exits: SELL for a long rounds up, BUY for a short rounds down, i.e.
        # always towards the entry, so the rounded stop never risks more than intended
        stop_dec = _price_dec(raw_stop, market, exit_side)
    except ValueError:
        return _skip(INVALID_INPUT, scale=scale, dollar_risk=dollar_risk)
    entry, stop = float(entry_dec), float(stop_dec)
    if (stop >= entry) if is_long else (stop <= entry):
        return _skip(STOP_TOO_CLOSE, entry_dec, stop_dec, scale, dollar_risk=dollar_risk)
    fee = float(market.taker_fee)
    risk_per_unit = abs(entry - stop) + fee * (entry + stop)

    caps: dict[str, float] = {SIZE_RISK: dollar_risk / risk_per_unit}
    caps[CAP_PORTFOLIO_RISK] = max(remaining_risk_budget, 0.0) / risk_per_unit
    caps[CAP_MAX_POSITION] = profile.max_position_pct * equity / entry
    caps[CAP_CASH] = max(cash_available, 0.0) / (entry * (1.0 + fee))
    if book is None or len(book.asks if is_long else book.bids) == 0:
        return _skip(NO_ORDER_BOOK, entry_dec, stop_dec, scale, caps, tuple(codes), dollar_risk, risk_per_unit)
    caps[CAP_LIQUIDITY] = profile.liquidity_min_ratio * book.depth_value(DEPTH_LEVELS) / entry
    if trade_stats is not None and trade_stats.n_trades >= profile.kelly_min_trades and profile.kelly_fraction > 0:
        f = kelly_with_cvar(trade_stats.win_rate, trade_stats.avg_win, trade_stats.avg_loss,
                            trade_stats.cvar95, profile.kelly_fraction)
        caps[CAP_KELLY] = f * equity / entry
        if f <= 0:
            codes.append(KELLY_NO_EDGE)
    levels = np.asarray(book.asks if is_long else book.bids, dtype=np.float64)
    caps[CAP_SLIPPAGE] = max_qty_within_slippage(levels, profile.max_slippage, is_long)

    base = caps[SIZE_RISK]
    qty_f = max(min(caps.values()), 0.0) * _SHRINK
    bound = [code for code, limit in caps.items() if code != SIZE_RISK and limit < base]
    codes.extend(sorted(bound, key=lambda c: caps[c]) or [SIZE_RISK])

    qty = round_qty(to_decimal(qty_f, "qty"), market.qty_decimals, market.lot_size)
    notional = qty * entry_dec
    if qty <= 0 or notional < market.min_notional:
        return _skip(BELOW_MIN_ORDER, entry_dec, stop_dec, scale, caps, tuple(codes), dollar_risk, risk_per_unit)
    qty_float = float(qty)
    return SizingResult(
        qty=qty, entry_price=entry_dec, stop_price=stop_dec, notional=notional,
        dollar_risk=dollar_risk, risk_amount=qty_float * risk_per_unit, risk_per_unit=risk_per_unit,
        drawdown_scale=scale, expected_slippage=slippage_of(levels, qty_float), caps=caps,
        reason_codes=tuple(dict.fromkeys(codes)),
    )
