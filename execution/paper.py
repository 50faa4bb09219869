"""PAPER execution [EXE-4]: the same fill model as the simulator and backtests, run against the
collected books and bars, with every order and fill stored and booked to the trader.

Worker-only (never imported by web code). The caller holds the trader row lock and an open
transaction; the client order id is stored before the fill model sees the order.
"""

from __future__ import annotations

from decimal import Decimal

from execution.engine.accounting import Book, apply_fill
from execution.engine.fillmodel import Bar, FillConfig, FillModel
from execution.engine.types import Fill as EngineFill
from execution.engine.types import (
    Liquidity,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from execution.marketdata import MarketView
from execution.models import Fill, Order, Position, Trade

ZERO = Decimal("0")


def order_from_request(trader, request: OrderRequest, *, purpose: str, bar_ts: int, signal=None,
                       position=None) -> Order:
    return Order.objects.create(
        trader=trader, signal=signal, position=position, client_order_id=request.client_order_id, mode=trader.mode,
        symbol=request.symbol, side=request.side.value, type=request.type.value, tif=request.tif.value,
        purpose=purpose, price=request.price, qty=request.qty, quote_amount=request.quote_amount, bar_ts=bar_ts,
    )


def state_of(order: Order) -> OrderState:
    """Rebuild the engine's view of a stored order (with its fills, so trade ids continue)."""
    fills = [
        EngineFill(order.client_order_id, f.symbol, Side(f.side), f.price, f.qty, f.fee, f.ts, Liquidity(f.liquidity), f.trade_id)
        for f in order.fills.order_by("id")
    ]
    return OrderState(
        client_order_id=order.client_order_id, symbol=order.symbol, side=Side(order.side), type=OrderType(order.type),
        status=OrderStatus(order.status), qty=order.qty, price=order.price, quote_amount=order.quote_amount,
        exchange_order_id=order.exchange_order_id, filled_qty=order.filled_qty, avg_price=order.avg_price,
        fee=order.fee, ts=order.bar_ts or 0, error=order.error, fills=fills, tif=TimeInForce(order.tif),
    )


class PaperBroker:
    def __init__(self, trader, view: MarketView, config: FillConfig | None = None) -> None:
        self.trader = trader
        self.view = view
        self.model = FillModel(config or FillConfig())

    def submit(self, order: Order, request: OrderRequest) -> list[EngineFill]:
        """Execute a new order against the current book; returns the fills it got."""
        state = self.model.submit(request, self.view.books[request.symbol], self.view.data_ts,
                                  self.view.markets[request.symbol])
        return self._sync(order, state, already=0)

    def advance(self, order: Order) -> list[EngineFill]:
        """Give a resting order the newest bar: it fills only if the market traded through it."""
        state = state_of(order)
        before = len(state.fills)
        i = self.view.candles.index(order.symbol)
        bar = Bar.from_candles(self.view.candles, i, -1, 60)
        self.model.on_bar(state, bar, self.view.books.get(order.symbol), self.view.markets[order.symbol])
        return self._sync(order, state, already=before)

    def cancel(self, order: Order, reason: str) -> None:
        if order.status in (Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED):
            order.status = Order.Status.CANCELLED
            order.error = reason[:300]
            order.save(update_fields=["status", "error", "updated_at"])

    def _sync(self, order: Order, state: OrderState, already: int) -> list[EngineFill]:
        new = state.fills[already:]
        for f in new:
            Fill.objects.create(order=order, trader=self.trader, trade_id=f.trade_id, symbol=f.symbol, side=f.side.value,
                                price=f.price, qty=f.qty, fee=f.fee, liquidity=f.liquidity.value, ts=f.ts)
        order.status = state.status.value
        order.filled_qty, order.avg_price, order.fee = state.filled_qty, state.avg_price, state.fee
        order.error = state.error[:300]
        order.save(update_fields=["status", "filled_qty", "avg_price", "fee", "error", "updated_at"])
        return list(new)


def book_of(position: Position) -> Book:
    return Book(qty=position.qty, cost=position.cost, entry_notional=position.avg_entry * position.qty,
                realised=position.realised_pnl, fees=position.fees, direction=position.direction)


def book_fill(trader, position: Position, fill: EngineFill, *, exit_reason: str = "") -> Trade | None:
    """Apply one fill to the position and the trader's cash; a reducing fill writes a Trade.

    The trader row must be locked by the caller. Returns the Trade for an exit fill.
    """
    result = apply_fill(book_of(position), fill)
    book = result.book
    position.qty, position.cost, position.fees = book.qty, book.cost, book.fees
    position.avg_entry = book.avg_entry if book.qty else position.avg_entry
    position.realised_pnl = book.realised
    trader.cash += result.cash_delta
    trader.fees_paid += fill.fee
    trade = None
    if fill.side is Side.SELL:
        trader.realised_pnl += result.realised
        trade = Trade.objects.create(
            trader=trader, position=position, symbol=position.symbol, direction=position.direction, mode=trader.mode,
            qty=fill.qty, entry_price=position.avg_entry, exit_price=fill.price, entry_ts=position.opened_ts,
            exit_ts=fill.ts, pnl=result.realised, fees=fill.fee + (result.cost_closed - position.avg_entry * fill.qty),
            exit_reason=exit_reason or "EXIT", strategy=position.strategy, regime=position.regime,
        )
        if book.qty == 0:
            position.status, position.closed_ts = Position.Status.CLOSED, fill.ts
    position.save()
    return trade
