"""Execution policies [EXE-1]: how an entry becomes venue orders, and what happens to a resting
order when its time is up. Pure: no Django, no I/O, no clock (``ts`` is passed in).

The same policy runs in PAPER (``execution.paper.PaperBroker`` against the fill model) and in
LIVE (``execution.live.LiveBroker`` against the venue), so both execute alike.

Entry (``plan_entry``)
    The tick asks for one LIMIT entry at its decision price (the touch it sized against). The
    policy turns it into ``split_legs`` child orders ("legs") on a price ladder:
    leg ``k`` is placed ``limit_offset_bps + k * leg_spacing_bps`` inside the far touch
    (a BUY at ``ask * (1 - offset)``, a SELL at ``bid * (1 + offset)``; offset 0 = at the touch,
    i.e. marketable). Prices go on the venue's tick grid without getting worse for us (BUY
    down, SELL up) and never beyond the decision price. With ``post_only`` (and a venue that
    has it) every leg is post-only and kept one tick inside the far touch so it cannot cross.
    Legs are split on the lot grid; a leg below the venue minimum merges into the others.

Timeout (``on_timeout``), for a resting leg at least ``timeout_seconds`` old
    1. ``REPLACE`` (cancel, then a new order for the remaining quantity) while fewer than
       ``max_replaces`` replaces were made; replace ``k`` of ``n`` uses the offset
       ``limit_offset_bps * (1 - k / n)``: more aggressive each time, the last one at the touch.
    2. then ``FALLBACK`` only when ``allow_market_fallback``: a marketable limit IOC at the
       decision price +/- ``max_slippage`` where the venue has IOC, else a market order
       (by quantity, or by quote amount on venues that buy only by quote, Upbit).
    3. else ``CANCEL`` (the remainder is given up; the tick closes an entry that got nothing).
    A re-price or fallback that would pay more than ``max_slippage`` beyond the decision price
    cancels instead (``CHASE_LIMIT``): the edge the signal saw is gone. A remainder below the
    venue minimum cannot be re-sent: ``CANCEL`` with ``REMAINDER_BELOW_MIN``.

Client order ids [EXE-2]
    ``qw{trader}-s{signal}-{leg}`` for entries (``leg_client_order_id``), and ``{id}r{n}`` for the
    n-th successor of an order (replace, fallback, resubmission: ``successor_client_order_id``),
    so every id is derived from (trader, signal, leg) and an attempt number, and a restarted
    worker derives the same ids again. ``check_client_order_id`` validates an id against a
    venue's rule (length, characters) before anything is sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from execution.engine.precision import market_tick, round_price_to_tick, round_qty, to_decimal
from execution.engine.types import MarketInfo, OrderBook, OrderRequest, OrderType, Side, TimeInForce

D = Decimal
BPS = D("0.0001")

#: Characters every venue we support accepts in a client order id (Binance allows a few more,
#: Bybit exactly these; OKX accepts letters and digits only, see ``VenueCapabilities``).
CLIENT_ID_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
ALNUM = re.compile(r"^[A-Za-z0-9]+$")
_SUCCESSOR = re.compile(r"r\d+$")
_LEG = re.compile(r"-\d+$")


class PolicyError(ValueError):
    """An execution policy with impossible parameters."""


@dataclass(frozen=True, slots=True)
class VenueCapabilities:
    """What a venue's order API offers; the policy only uses what is there.

    ``client_id_max_len``: Binance ``newClientOrderId`` and Bybit ``orderLinkId`` take 36
    characters, OKX ``clOrdId`` 32 letters/digits only (``client_id_alnum_only``); Upbit
    documents ``identifier`` as a string unique forever without a length, 36 is kept there too.
    """

    post_only: bool = False
    ioc: bool = False
    fok: bool = False
    market_buy_by_qty: bool = True
    market_buy_by_quote: bool = False
    stop_orders: bool = False
    client_id_max_len: int = 36
    client_id_alnum_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def check_client_order_id(client_order_id: str, caps: VenueCapabilities) -> str:
    """The reason ``client_order_id`` is not acceptable to the venue, or ``""``."""
    if not client_order_id:
        return "client_id_empty"
    if len(client_order_id) > caps.client_id_max_len:
        return f"client_id_too_long ({len(client_order_id)} > {caps.client_id_max_len})"
    pattern = ALNUM if caps.client_id_alnum_only else CLIENT_ID_CHARS
    if not pattern.match(client_order_id):
        return "client_id_characters"
    return ""


def root_client_order_id(client_order_id: str) -> str:
    """The id without its successor suffix: ``qw1-s2-0r3`` -> ``qw1-s2-0``."""
    return _SUCCESSOR.sub("", client_order_id)


def successor_client_order_id(client_order_id: str, n: int) -> str:
    """The id of the ``n``-th successor (n >= 1) of an order's chain: ``{root}r{n}``."""
    if n < 1:
        raise ValueError("a successor number starts at 1")
    return f"{root_client_order_id(client_order_id)}r{n}"


def leg_client_order_id(client_order_id: str, leg: int) -> str:
    """Leg ``leg`` of an entry whose first leg is ``client_order_id`` (``...-0`` -> ``...-{leg}``)."""
    if leg < 0:
        raise ValueError("leg must be >= 0")
    root = root_client_order_id(client_order_id)
    if not _LEG.search(root):
        raise ValueError(f"{client_order_id!r} does not end with a leg number")
    return _LEG.sub(f"-{leg}", root)


@dataclass(frozen=True, slots=True)
class ExecutionPolicy:
    """The [EXE-1] knobs of one profile (see the module docstring)."""

    limit_offset_bps: float = 5.0
    split_legs: int = 1
    leg_spacing_bps: float = 5.0
    post_only: bool = False
    timeout_seconds: int = 30
    max_replaces: int = 2
    allow_market_fallback: bool = True
    max_slippage: float = 0.005

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.limit_offset_bps <= 500:
            problems.append("limit_offset_bps must be in [0, 500]")
        if not 1 <= self.split_legs <= 10:
            problems.append("split_legs must be in [1, 10]")
        if not 0 <= self.leg_spacing_bps <= 500:
            problems.append("leg_spacing_bps must be in [0, 500]")
        if self.timeout_seconds < 1:
            problems.append("timeout_seconds must be >= 1")
        if not 0 <= self.max_replaces <= 10:
            problems.append("max_replaces must be in [0, 10]")
        if not 0 < self.max_slippage <= 0.1:
            problems.append("max_slippage must be in (0, 0.1]")
        if problems:
            raise PolicyError("; ".join(problems))

    @classmethod
    def from_profile(cls, profile: Any) -> ExecutionPolicy:
        """The policy of a ``RiskProfile`` (read by attribute; missing fields keep the defaults)."""
        names = {"limit_offset_bps": "limit_offset_bps", "split_legs": "split_legs",
                 "leg_spacing_bps": "leg_spacing_bps", "post_only": "post_only_entries",
                 "timeout_seconds": "order_timeout_seconds", "max_replaces": "max_replaces",
                 "allow_market_fallback": "allow_market_fallback", "max_slippage": "max_slippage"}
        values = {k: getattr(profile, attr) for k, attr in names.items() if hasattr(profile, attr)}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


def _touch(book: OrderBook, side: Side) -> Decimal | None:
    """The far touch for ``side`` (a BUY meets the ask), as Decimal; None on an empty side."""
    levels = book.asks if side is Side.BUY else book.bids
    if not len(levels):
        return None
    return to_decimal(float(levels[0, 0]))


def _near(book: OrderBook, side: Side) -> Decimal | None:
    levels = book.bids if side is Side.BUY else book.asks
    if not len(levels):
        return None
    return to_decimal(float(levels[0, 0]))


def limit_price(side: Side, book: OrderBook, market: MarketInfo, offset_bps: float, ts: int, *,
                post_only: bool = False, cap: Decimal | None = None) -> Decimal | None:
    """A limit price ``offset_bps`` inside the far touch, on the tick grid (never worse for us),
    never beyond ``cap``; with ``post_only`` strictly inside the far touch. None when the book
    has no far touch or no valid price exists."""
    far = _touch(book, side)
    if far is None:
        return None
    off = D(repr(float(offset_bps))) * BPS
    raw = far * (1 - off) if side is Side.BUY else far * (1 + off)
    if cap is not None:
        raw = min(raw, cap) if side is Side.BUY else max(raw, cap)
    if raw <= 0:
        return None
    tick = market_tick(market, raw, ts)
    price = round_price_to_tick(raw, tick, side)
    if post_only:
        tick_far = market_tick(market, far, ts)
        if side is Side.BUY and price >= far:
            price = round_price_to_tick(far - tick_far, market_tick(market, far - tick_far, ts), side)
        elif side is Side.SELL and price <= far:
            price = round_price_to_tick(far + tick_far, market_tick(market, far + tick_far, ts), side)
    return price if price > 0 else None


def split_qty(qty: Decimal, legs: int, price: Decimal, market: MarketInfo) -> list[Decimal]:
    """``qty`` in at most ``legs`` parts on the lot grid, each worth at least the venue minimum;
    the first parts are equal, the last takes the rounding remainder."""
    qty = to_decimal(qty)
    if qty <= 0:
        raise ValueError("qty must be positive")
    n = max(1, int(legs))
    while n > 1:
        each = round_qty(qty / n, market.qty_decimals, market.lot_size)
        last = qty - each * (n - 1)
        if each > 0 and min(each, last) * price >= market.min_notional:
            return [each] * (n - 1) + [last]
        n -= 1
    return [qty]


def plan_entry(request: OrderRequest, book: OrderBook, market: MarketInfo, policy: ExecutionPolicy,
               caps: VenueCapabilities, ts: int) -> list[OrderRequest]:
    """The child orders (legs) for one LIMIT entry request (see the module docstring). Leg 0
    keeps the request's client order id. A MARKET request, or a book without the far touch,
    passes through unchanged."""
    if request.type is not OrderType.LIMIT or request.qty is None or _touch(book, request.side) is None:
        return [request]
    post_only = policy.post_only and caps.post_only
    tif = TimeInForce.POST_ONLY if post_only else request.tif
    first = limit_price(request.side, book, market, policy.limit_offset_bps, ts, post_only=post_only,
                        cap=request.price)
    if first is None:
        return [request]
    parts = split_qty(request.qty, policy.split_legs, first, market)
    legs = []
    for k, part in enumerate(parts):
        offset = policy.limit_offset_bps + k * policy.leg_spacing_bps
        price = limit_price(request.side, book, market, offset, ts, post_only=post_only, cap=request.price) or first
        if part * price < market.min_notional:      # a deeper rung would fall below the minimum
            price = first
        legs.append(OrderRequest(leg_client_order_id(request.client_order_id, k) if k else request.client_order_id,
                                 request.symbol, request.side, OrderType.LIMIT, qty=part, price=price, tif=tif,
                                 reduce_only=request.reduce_only))
    return legs


class Step(StrEnum):
    WAIT = "wait"            # not timed out yet
    REPLACE = "replace"      # cancel, then re-price the remainder
    FALLBACK = "fallback"    # cancel, then the remainder at market (protected)
    CANCEL = "cancel"        # give the remainder up


@dataclass(frozen=True, slots=True)
class WorkingOrder:
    """The policy's view of one resting order (quantities and prices as stored)."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    filled_qty: Decimal
    price: Decimal | None
    age_seconds: float
    successors: int                  # replaces/fallbacks already made in this chain
    decision_price: Decimal          # the price the tick decided at (the chase reference)
    tif: TimeInForce = TimeInForce.GTC
    fallback: bool = False           # this order is already the chain's market fallback

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty


@dataclass(frozen=True, slots=True)
class Decision:
    step: Step
    reason: str
    request: OrderRequest | None = None


def chase_limit(side: Side, decision_price: Decimal, max_slippage: float) -> Decimal:
    """The worst price a chain may reach: the decision price +/- ``max_slippage``."""
    slip = D(repr(float(max_slippage)))
    return decision_price * (1 + slip) if side is Side.BUY else decision_price * (1 - slip)


def on_timeout(order: WorkingOrder, book: OrderBook, market: MarketInfo, policy: ExecutionPolicy,
               caps: VenueCapabilities, ts: int, *, min_age_seconds: float = 0.0) -> Decision:
    """What to do with a resting order now (see the module docstring). ``min_age_seconds``
    raises the timeout (a bar-driven venue can only act once per bar)."""
    if order.age_seconds < max(policy.timeout_seconds, min_age_seconds):
        return Decision(Step.WAIT, "")
    remaining = round_qty(order.remaining, market.qty_decimals, market.lot_size)
    if remaining <= 0 or order.fallback:
        return Decision(Step.CANCEL, "TIMEOUT")
    far = _touch(book, order.side)
    ref = far if far is not None else order.price or order.decision_price
    if remaining * ref < market.min_notional:
        return Decision(Step.CANCEL, "REMAINDER_BELOW_MIN")
    worst = chase_limit(order.side, order.decision_price, policy.max_slippage)
    n = order.successors + 1
    cid = successor_client_order_id(order.client_order_id, n)
    if order.successors < policy.max_replaces:
        if far is None:
            return Decision(Step.CANCEL, "NO_BOOK")
        offset = policy.limit_offset_bps * (1 - n / policy.max_replaces)
        post_only = policy.post_only and caps.post_only
        price = limit_price(order.side, book, market, offset, ts, post_only=post_only)
        if price is None:
            return Decision(Step.CANCEL, "NO_PRICE")
        if (order.side is Side.BUY and price > worst) or (order.side is Side.SELL and price < worst):
            return Decision(Step.CANCEL, "CHASE_LIMIT")
        tif = TimeInForce.POST_ONLY if post_only else TimeInForce.GTC
        return Decision(Step.REPLACE, f"REPLACE_{n}", OrderRequest(cid, order.symbol, order.side, OrderType.LIMIT,
                                                                    qty=remaining, price=price, tif=tif))
    if not policy.allow_market_fallback:
        return Decision(Step.CANCEL, "TIMEOUT")
    if far is not None and ((order.side is Side.BUY and far > worst) or (order.side is Side.SELL and far < worst)):
        return Decision(Step.CANCEL, "CHASE_LIMIT")
    if caps.ioc:
        price = round_price_to_tick(worst, market_tick(market, worst, ts), order.side)
        return Decision(Step.FALLBACK, "MARKET_FALLBACK", OrderRequest(
            cid, order.symbol, order.side, OrderType.LIMIT, qty=remaining, price=price, tif=TimeInForce.IOC))
    if order.side is Side.SELL or caps.market_buy_by_qty:
        return Decision(Step.FALLBACK, "MARKET_FALLBACK", OrderRequest(
            cid, order.symbol, order.side, OrderType.MARKET, qty=remaining))
    if caps.market_buy_by_quote and far is not None:
        quote = (remaining * far).quantize(D("1e-8"))
        return Decision(Step.FALLBACK, "MARKET_FALLBACK", OrderRequest(
            cid, order.symbol, order.side, OrderType.MARKET, quote_amount=quote))
    return Decision(Step.CANCEL, "NO_MARKET_ORDERS")


def stop_trigger_price(side: Side, stop: Decimal, market: MarketInfo, ts: int) -> Decimal:
    """A resting stop's trigger on the tick grid, never looser than the position's stop: a SELL
    stop (protecting a long) rounds up, a BUY stop (protecting a short) rounds down."""
    stop = to_decimal(stop)
    return round_price_to_tick(stop, market_tick(market, stop, ts), side)
