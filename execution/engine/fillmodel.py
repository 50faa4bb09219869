"""The fill model shared by the simulator, replay and paper trading [EX-2], [EXE-4].

One deterministic set of rules decides how an order meets a market described by an
``OrderBook`` (for immediate execution) and OHLCV bars (for resting orders):

* ``submit(request, book, ts, market)`` validates the order and returns its ``OrderState``.
  Rejections are values, not exceptions: ``status=REJECTED`` and ``error`` says why
  (``below_min_notional``, ``price_not_on_tick``, ``qty_precision``, ``post_only_would_cross``,
  ``no_liquidity``, ``market_mismatch``, ``limit_needs_qty``, ``post_only_needs_limit``, ``sell_by_quote_amount``,
  ``reduce_only_unsupported``).
* Latency: with ``FillConfig.latency_ms == 0`` the order meets ``book`` at once. Otherwise it
  is ``NEW`` and becomes active at the first ``on_bar`` whose ``book.ts`` is at least
  ``ts + latency``; it then meets *that* book (on a bar-driven venue latency is quantised up
  to the next observation: a market order sent at a bar close executes on the next close).
* Taker execution walks the book level by level (VWAP): a BUY takes asks from the best up
  (never below the best ask it saw), a SELL takes bids from the best down. A limit order only
  takes levels at or better than its price; the rest rests (GTC), or expires (IOC). FOK
  executes only if the whole quantity is available within the limit, else ``EXPIRED``.
  Market orders that exhaust the book fill partially and the remainder ``EXPIRED``
  (``error="book_exhausted"``). A market BUY may be sized by ``quote_amount`` (Upbit
  ``price`` orders): the notional spent never exceeds it; the fee is charged on top.
* POST_ONLY is rejected if it would cross the book when it becomes active.
* Resting limit orders are makers: they fill at their own price only when a later bar trades
  *through* it (BUY: ``low < price``; SELL: ``high > price``; touching is not enough because
  the queue position is unknown). A bar counts only if it began at or after the order became
  active (``order.ts``). Each bar fills at most ``participation * bar.volume`` of one order.
* Fees: every fill pays ``notional * rate`` (maker or taker rate of the ``MarketInfo``) in quote,
  rounded up to ``fee_quantum``; rates must be positive, so every fill has a fee > 0.
* Precision: limit prices must already be on the tick grid (``precision.market_tick``: Upbit's
  KRW table at ``ts``, or the market's fixed tick) and quantities on the lot/decimals grid
  (``precision.round_qty``); book prices off the grid are corrupt data and raise
  ``MarketDataError``. Every fill price is therefore on the grid. The venue minimum
  (``MarketInfo.min_notional``, 5,000 KRW on Upbit) is checked on the order's value.

Values on the order side are ``Decimal``; the book and bars are numpy floats converted through
their shortest repr. ``OrderState`` is mutated in place as fills arrive (its ``fills`` list
grows; quantities of all fills add up to ``filled_qty``). Nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

import numpy as np

from execution.engine.precision import market_tick, round_qty, to_decimal
from execution.engine.types import (
    Candles,
    Fill,
    Liquidity,
    MarketDataError,
    MarketInfo,
    OrderBook,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)

ZERO = Decimal("0")


@dataclass(frozen=True, slots=True)
class FillConfig:
    """Venue behaviour that is not a property of one market."""

    latency_ms: int = 0               # order becomes active this long after submission
    participation: float = 0.10       # max share of one bar's volume a resting order can take
    fee_quantum: Decimal = Decimal("0.00000001")   # fees are rounded up to this (quote units)

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not (0 < self.participation <= 1):
            raise ValueError("participation must be in (0, 1]")
        if self.fee_quantum <= 0:
            raise ValueError("fee_quantum must be positive")


@dataclass(frozen=True, slots=True)
class Bar:
    """One market's OHLCV bar covering ``[ts, ts + seconds)``; NaN prices = no trades."""

    ts: int
    seconds: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def is_missing(self) -> bool:
        return not all(math.isfinite(v) for v in (self.open, self.high, self.low, self.close, self.volume))

    @classmethod
    def from_candles(cls, candles: Candles, market: int, bar: int, seconds: int) -> Bar:
        return cls(int(candles.ts[bar]), seconds, float(candles.open[market, bar]),
                   float(candles.high[market, bar]), float(candles.low[market, bar]),
                   float(candles.close[market, bar]), float(candles.volume[market, bar]))


def check_book(book: OrderBook, symbol: str) -> None:
    """Fail fast on a book that cannot be real: wrong market, NaN, unsorted or crossed."""
    if book.symbol != symbol:
        raise MarketDataError(f"book is for {book.symbol}, order for {symbol}")
    for side, arr, sign in (("bids", book.bids, -1), ("asks", book.asks, 1)):
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise MarketDataError(f"{side} must be [levels x 2]")
        if len(arr) and (not np.all(np.isfinite(arr)) or np.any(arr <= 0)):
            raise MarketDataError(f"{side} contain NaN or non-positive values")
        if len(arr) > 1 and not np.all(sign * np.diff(arr[:, 0]) > 0):
            raise MarketDataError(f"{side} are not sorted best first")
    if len(book.bids) and len(book.asks) and book.best_bid >= book.best_ask:
        raise MarketDataError(f"crossed book for {symbol}: {book.best_bid} >= {book.best_ask}")


class FillModel:
    """Deterministic order matching against books and bars (see the module docstring)."""

    def __init__(self, config: FillConfig | None = None) -> None:
        self.config = config or FillConfig()

    # ------------------------------------------------------------------ public API

    def submit(self, request: OrderRequest, book: OrderBook, ts: int, market: MarketInfo) -> OrderState:
        """Validate and (without latency) execute ``request`` against ``book`` at ``ts``."""
        state = OrderState(client_order_id=request.client_order_id, symbol=request.symbol, side=request.side,
                           type=request.type, status=OrderStatus.NEW, qty=request.qty, price=request.price,
                           quote_amount=request.quote_amount, ts=int(ts), tif=request.tif)
        check_book(book, request.symbol)
        reason = self._validate(request, book, ts, market)
        if reason:
            state.status = OrderStatus.REJECTED
            state.error = reason
            return state
        if self.config.latency_ms == 0:
            self._activate(state, book, int(ts), market)
        return state

    def on_bar(self, order: OrderState, bar: Bar, book: OrderBook | None, market: MarketInfo) -> list[Fill]:
        """Advance one order by one completed bar; returns the new fills (also appended to it).

        ``book`` is the book at the end of the bar (needed to activate a delayed order).
        """
        if order.status.is_final:
            return []
        if order.status is OrderStatus.NEW:
            if book is None:
                return []
            if book.ts * 1000 < order.ts * 1000 + self.config.latency_ms:
                return []
            check_book(book, order.symbol)
            before = len(order.fills)
            self._activate(order, book, int(book.ts), market)
            return order.fills[before:]
        if order.type is not OrderType.LIMIT or bar.ts < order.ts or bar.is_missing:
            return []
        if bar.volume < 0 or bar.high < bar.low:
            raise MarketDataError(f"invalid bar for {order.symbol} at {bar.ts}")
        price = order.price
        assert price is not None
        p = float(price)
        through = bar.low < p if order.side is Side.BUY else bar.high > p
        if not through:
            return []
        remaining = self._remaining_qty(order)
        cap = round_qty(to_decimal(bar.volume * self.config.participation), market.qty_decimals, market.lot_size)
        qty = min(remaining, cap)
        if qty <= 0:
            return []
        fill = self._fill(order, price, qty, bar.ts + bar.seconds, Liquidity.MAKER, market)
        self._update_status(order, resting=True)
        return [fill]

    def cancel(self, order: OrderState, ts: int) -> OrderState:
        """Cancel what is left of an order (a partial fill stays on it)."""
        if not order.status.is_final:
            order.status = OrderStatus.CANCELLED
        return order

    # ------------------------------------------------------------------ validation

    def _validate(self, request: OrderRequest, book: OrderBook, ts: int, market: MarketInfo) -> str:
        if request.symbol != market.symbol:
            return "market_mismatch"
        if market.maker_fee <= 0 or market.taker_fee <= 0:
            raise ValueError(f"fees of {market.symbol} must be positive (fees are always charged)")
        if request.reduce_only and not market.can_short:
            return "reduce_only_unsupported"
        if request.tif is TimeInForce.POST_ONLY and request.type is not OrderType.LIMIT:
            return "post_only_needs_limit"
        if request.qty is not None and round_qty(request.qty, market.qty_decimals, market.lot_size) != request.qty:
            return "qty_precision"
        if request.type is OrderType.LIMIT:
            assert request.price is not None
            if request.qty is None:
                return "limit_needs_qty"
            tick = self._tick(market, request.price, ts)
            if tick is not None and request.price % tick != 0:
                return "price_not_on_tick"
            notional = request.price * request.qty
        elif request.quote_amount is not None and request.qty is None:
            if request.side is Side.SELL:
                return "sell_by_quote_amount"
            notional = request.quote_amount
        else:
            assert request.qty is not None
            side_levels = book.asks if request.side is Side.BUY else book.bids
            if not len(side_levels):
                return "no_liquidity"
            notional = request.qty * to_decimal(float(side_levels[0, 0]))
        if notional < market.min_notional:
            return "below_min_notional"
        return ""

    @staticmethod
    def _tick(market: MarketInfo, price: Decimal, ts: int) -> Decimal | None:
        if market.tick_size is None and market.quote != "KRW":
            return None
        return market_tick(market, price, ts)

    # ------------------------------------------------------------------ execution

    def _activate(self, order: OrderState, book: OrderBook, ts: int, market: MarketInfo) -> None:
        """The order reaches the venue: post-only / FOK checks, taker sweep, then rest or expire."""
        order.ts = ts
        levels = book.asks if order.side is Side.BUY else book.bids
        limit = order.price if order.type is OrderType.LIMIT else None
        crosses = len(levels) > 0 and limit is not None and (
            (order.side is Side.BUY and to_decimal(float(levels[0, 0])) <= limit)
            or (order.side is Side.SELL and to_decimal(float(levels[0, 0])) >= limit))
        if order.tif is TimeInForce.POST_ONLY:
            if crosses:
                order.status = OrderStatus.REJECTED
                order.error = "post_only_would_cross"
            else:
                order.status = OrderStatus.OPEN
            return
        if order.type is OrderType.MARKET and not len(levels):
            order.status = OrderStatus.EXPIRED
            order.error = "no_liquidity"
            return
        plan = self._sweep(order, levels, limit, ts, market)
        if order.tif is TimeInForce.FOK and not self._completes(order, plan, market):
            order.status = OrderStatus.EXPIRED
            order.error = "fok_not_fillable"
            return
        for price, qty in plan:
            self._fill(order, price, qty, ts, Liquidity.TAKER, market)
        if order.type is OrderType.MARKET:
            if self._is_complete(order, market):
                order.status = OrderStatus.FILLED
            else:
                order.status = OrderStatus.EXPIRED
                order.error = "book_exhausted"
            return
        if self._is_complete(order, market):
            order.status = OrderStatus.FILLED
        elif order.tif in (TimeInForce.IOC, TimeInForce.FOK):
            order.status = OrderStatus.EXPIRED
        else:
            self._update_status(order, resting=True)

    def _sweep(self, order: OrderState, levels: np.ndarray, limit: Decimal | None, ts: int,
               market: MarketInfo) -> list[tuple[Decimal, Decimal]]:
        """(price, qty) per book level the order would take, best first, without mutating it."""
        plan: list[tuple[Decimal, Decimal]] = []
        by_quote = order.qty is None
        remaining_qty = ZERO if by_quote else self._remaining_qty(order)
        remaining_quote = (order.quote_amount or ZERO) - self._spent(order) if by_quote else ZERO
        for raw_price, raw_qty in levels:
            price = to_decimal(float(raw_price))
            tick = self._tick(market, price, ts)
            if tick is not None and price % tick != 0:
                raise MarketDataError(f"book price {price} of {order.symbol} is off the tick grid {tick}")
            if limit is not None and ((order.side is Side.BUY and price > limit)
                                      or (order.side is Side.SELL and price < limit)):
                break
            available = round_qty(to_decimal(float(raw_qty)), market.qty_decimals, market.lot_size)
            if by_quote:
                want = round_qty(remaining_quote / price, market.qty_decimals, market.lot_size)
            else:
                want = remaining_qty
            qty = min(available, want)
            if qty <= 0:
                if want <= 0:
                    break
                continue
            plan.append((price, qty))
            if by_quote:
                remaining_quote -= price * qty
            else:
                remaining_qty -= qty
            if (remaining_qty <= 0 and not by_quote) or (by_quote and want <= available):
                break
        return plan

    def _completes(self, order: OrderState, plan: list[tuple[Decimal, Decimal]], market: MarketInfo) -> bool:
        if order.qty is not None:
            return sum((q for _, q in plan), ZERO) >= self._remaining_qty(order)
        spent = sum((p * q for p, q in plan), ZERO)
        last = plan[-1][0] if plan else None
        left = (order.quote_amount or ZERO) - self._spent(order) - spent
        return last is not None and left < self._min_unit_value(last, market)

    def _is_complete(self, order: OrderState, market: MarketInfo) -> bool:
        if order.qty is not None:
            return order.filled_qty >= order.qty
        if not order.fills:
            return False
        left = (order.quote_amount or ZERO) - self._spent(order)
        return left < self._min_unit_value(order.fills[-1].price, market)

    @staticmethod
    def _min_unit_value(price: Decimal, market: MarketInfo) -> Decimal:
        """Value of the smallest quantity step at ``price``: leftover quote below it is dust."""
        unit = Decimal(1).scaleb(-market.qty_decimals)
        if market.lot_size > unit:
            unit = market.lot_size
        return price * unit

    @staticmethod
    def _remaining_qty(order: OrderState) -> Decimal:
        assert order.qty is not None
        return order.qty - order.filled_qty

    @staticmethod
    def _spent(order: OrderState) -> Decimal:
        return sum((f.price * f.qty for f in order.fills), ZERO)

    def _fill(self, order: OrderState, price: Decimal, qty: Decimal, ts: int, liquidity: Liquidity,
              market: MarketInfo) -> Fill:
        if qty <= 0:
            raise AssertionError("fill quantity must be positive")
        if order.qty is not None and order.filled_qty + qty > order.qty:
            raise AssertionError("overfill")
        rate = market.maker_fee if liquidity is Liquidity.MAKER else market.taker_fee
        q = self.config.fee_quantum
        fee = (price * qty * rate / q).to_integral_value(rounding=ROUND_CEILING) * q
        fill = Fill(order.client_order_id, order.symbol, order.side, price, qty, fee, int(ts), liquidity,
                    f"{order.client_order_id}:{len(order.fills) + 1}")
        order.fills.append(fill)
        order.filled_qty += qty
        order.fee += fee
        order.avg_price = self._spent(order) / order.filled_qty
        return fill

    def _update_status(self, order: OrderState, resting: bool) -> None:
        if order.qty is not None and order.filled_qty >= order.qty:
            order.status = OrderStatus.FILLED
        elif order.filled_qty > 0:
            order.status = OrderStatus.PARTIALLY_FILLED
        elif resting:
            order.status = OrderStatus.OPEN
