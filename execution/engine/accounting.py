"""Per-trader position accounting in exact Decimal (no floats anywhere) [DM-3], [issue 6 #6].

A position's cost basis includes its entry fees, so a round trip's realised PnL is
``proceeds - exit fees - cost of the quantity sold``: the sum of realised PnL over a position's
life equals the sum of cash it moved, to the last unit. Long positions only here (spot); a short
on a perpetual venue books the mirror image with ``direction = -1``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from execution.engine.types import Fill, Side

ZERO = Decimal("0")
#: Money precision of the books (matches the database columns: 10 decimal places). The cost
#: share of a partial exit is rounded to it, so every realised figure is exactly representable
#: and stored values add up to the running totals to the last digit.
MONEY_QUANTUM = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class Book:
    """One position's numbers. ``cost`` is the quote paid for the open quantity incl. fees."""

    qty: Decimal = ZERO
    cost: Decimal = ZERO
    entry_notional: Decimal = ZERO   # price * qty of the open quantity (no fees): avg entry price
    realised: Decimal = ZERO
    fees: Decimal = ZERO
    direction: int = 1

    @property
    def avg_entry(self) -> Decimal:
        return self.entry_notional / self.qty if self.qty else ZERO

    def market_value(self, price: Decimal) -> Decimal:
        """What the open quantity is worth at ``price`` (long: qty * price)."""
        return self.qty * price


@dataclass(frozen=True, slots=True)
class FillResult:
    book: Book
    cash_delta: Decimal          # change of the trader's cash (negative for a buy)
    realised: Decimal            # realised PnL of this fill (0 for an opening fill)
    closed_qty: Decimal
    cost_closed: Decimal


def apply_fill(book: Book, fill: Fill, quantum: Decimal = MONEY_QUANTUM) -> FillResult:
    """Book one fill against a long position. Raises on overselling (never silently clamps).

    Fill prices, quantities and fees are on the venue's grids already; only the pro-rata cost
    of a partial exit needs rounding (to ``quantum``, half-even). A final exit takes the whole
    remaining cost, so nothing is lost to rounding over a position's life."""
    if fill.qty <= 0 or fill.price <= 0 or fill.fee < 0:
        raise ValueError(f"invalid fill {fill.trade_id}: qty and price must be positive, fee >= 0")
    notional = fill.price * fill.qty
    if fill.side is Side.BUY:
        new = replace(book, qty=book.qty + fill.qty, cost=book.cost + notional + fill.fee,
                      entry_notional=book.entry_notional + notional, fees=book.fees + fill.fee)
        return FillResult(new, -(notional + fill.fee), ZERO, ZERO, ZERO)
    if fill.qty > book.qty:
        raise ValueError(f"fill {fill.trade_id} sells {fill.qty} but only {book.qty} is held")
    share = fill.qty / book.qty
    cost_closed = book.cost if fill.qty == book.qty else (book.cost * share).quantize(quantum)
    notional_closed = book.entry_notional if fill.qty == book.qty else (book.entry_notional * share).quantize(quantum)
    proceeds = notional - fill.fee
    realised = proceeds - cost_closed
    new = replace(book, qty=book.qty - fill.qty, cost=book.cost - cost_closed,
                  entry_notional=book.entry_notional - notional_closed, realised=book.realised + realised,
                  fees=book.fees + fill.fee)
    return FillResult(new, proceeds, realised, fill.qty, cost_closed)
