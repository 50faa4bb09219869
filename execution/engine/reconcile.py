"""Order reconciliation with a venue [EXE-2], [EXE-3]: which fills of an order are not on our
books yet. Pure: the stored fills and the venue's view of the order are passed in.

Exactly once: a fill is identified by its venue trade id, and the Django layer stores at most
one ``Fill`` row per (order, trade id) (a unique constraint) in the same transaction that books
it. ``missing_fills`` therefore only has to tell which of the venue's fills are new.

Venues that report an order's cumulative totals but not its trades (many ccxt exchanges in
``fetch_order``) get one synthetic fill per observed increase of the filled quantity, with the
trade id ``cum:{filled_qty}``: the same observation always yields the same id, so repeating a
lookup can never book it twice. Once an order is booked that way it stays that way (mixing the
two would count the same quantity twice). Trade-level fills that do not add up to the venue's
final filled quantity get the rest as one synthetic fill when the order is final.

The books may never hold more than the venue says was filled: that raises
``ReconcileError`` for an operator to look at, it is never "fixed" silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from execution.engine.types import Fill, Liquidity, OrderState, OrderType

D = Decimal
PRICE_QUANTUM = D("1e-10")
CUMULATIVE_PREFIX = "cum:"


class ReconcileError(ValueError):
    """Our books and the venue disagree in a way that must not be repaired automatically."""


def _qty(fills: Sequence[Fill]) -> Decimal:
    return sum((f.qty for f in fills), D(0))


def _value(fills: Sequence[Fill]) -> Decimal:
    return sum((f.price * f.qty for f in fills), D(0))


def _fee(fills: Sequence[Fill]) -> Decimal:
    return sum((f.fee for f in fills), D(0))


def _synthetic(stored: Sequence[Fill], venue: OrderState, ts: int) -> Fill | None:
    """One fill for the part of ``venue.filled_qty`` that ``stored`` does not cover."""
    have = _qty(stored)
    delta = venue.filled_qty - have
    if delta <= 0:
        return None
    if venue.avg_price is None or venue.avg_price <= 0:
        raise ReconcileError(f"{venue.client_order_id}: the venue reports {venue.filled_qty} filled without a price")
    price = ((venue.avg_price * venue.filled_qty - _value(stored)) / delta).quantize(PRICE_QUANTUM)
    if price <= 0:
        raise ReconcileError(f"{venue.client_order_id}: the venue's average price {venue.avg_price} is below the "
                             "fills already booked")
    fee = max(venue.fee - _fee(stored), D(0))
    liquidity = Liquidity.TAKER if venue.type is OrderType.MARKET else Liquidity.MAKER
    return Fill(venue.client_order_id, venue.symbol, venue.side, price, delta, fee, int(ts), liquidity,
                f"{CUMULATIVE_PREFIX}{format(venue.filled_qty.normalize(), 'f')}")


def missing_fills(stored: Sequence[Fill], venue: OrderState, *, now_ts: int) -> list[Fill]:
    """The venue's fills of one order that ``stored`` (our fills of it) does not have yet, oldest
    first. ``now_ts`` stamps synthetic fills (the venue gave no trade time)."""
    have = _qty(stored)
    if have > venue.filled_qty:
        raise ReconcileError(f"{venue.client_order_id}: books hold {have} filled, the venue says "
                             f"{venue.filled_qty}")
    cumulative = any(f.trade_id.startswith(CUMULATIVE_PREFIX) for f in stored)
    if not cumulative and venue.fills:
        known = {f.trade_id for f in stored}
        new = [f for f in venue.fills if f.trade_id not in known]
        if have + _qty(new) > venue.filled_qty:
            raise ReconcileError(f"{venue.client_order_id}: the venue's trades add up to more than its filled "
                                 f"quantity {venue.filled_qty}")
        if venue.status.is_final:
            rest = _synthetic(list(stored) + new, venue, now_ts)
            if rest is not None:
                new.append(rest)
        return new
    rest = _synthetic(stored, venue, now_ts)
    return [rest] if rest is not None else []
