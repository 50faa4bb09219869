"""Exchange precision: tick sizes, quantity steps and minimum order value [DM-3].

Pure functions on ``Decimal`` (no floats, no I/O, no clock: the timestamp that selects a tick
table is passed in). Used by the fill model (sim, replay, paper) and by every adapter before an
order leaves the process, so a price that is valid in a backtest is valid on the venue.

Upbit KRW tick tables
---------------------
Upbit's KRW market uses a price-dependent tick ("주문 가격 단위"). Bands are *lower bound
inclusive, upper bound exclusive*. Three tables have been in force:

* ``KRW_TICKS_2025`` from 2025-07-31 (the default). Source: Upbit developer centre, "원화(KRW)
  마켓 주문 가격 단위 / 최소 주문 가능 금액" (docs.upbit.com/kr/docs/krw-market-info, page
  updated 2026-05-04) and the change notice ``krw_tick_unit_change_250731``. The bands from
  100 KRW upwards were read from that page directly; the bands below 100 KRW agree with two
  independent transcriptions of the same page. The venue is the final authority: the Upbit
  adapter also reads the per-pair tick from ``GET /v1/orderbook/instruments`` and rounds to a
  grid that satisfies both (see ``lcm_tick``).
* ``KRW_TICKS_2024`` from 2024-01-29 to 2025-07-31 (the table pyupbit's ``get_tick_size`` still
  carries; docs.upbit.com v1.4.5). Upbit made two per-asset exceptions during that period that
  this table does not model (16 assets used 1 KRW instead of 0.1 between 100 and 1,000 KRW from
  2024-10; USDT/USDC used 0.5 between 1,000 and 10,000 KRW from 2025-03-21).
* ``KRW_TICKS_LEGACY`` before 2024-01-29 (docs.upbit.com v1.4.1), for replaying older data.

The cut-over instants are taken as midnight KST of the announced day; Upbit switched during a
maintenance window, so a replay within a few hours of a cut-over may see either table.

Rounding convention
-------------------
A limit price is rounded so that it is never *worse* for the caller than the price asked:
BUY rounds down (pay at most the asked price), SELL rounds up (receive at least the asked
price). The order may therefore be slightly less aggressive than requested, never more costly.
Quantities always round down (never spend or sell more than asked). The minimum order value is
checked after rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from execution.engine.types import MarketInfo, OrderRequest, OrderType, Side, TimeInForce

D = Decimal

#: Upbit's minimum order value on KRW markets (buy and sell), in KRW.
UPBIT_KRW_MIN_ORDER = D("5000")

#: 2025-07-31T00:00:00+09:00 (KST) as epoch seconds: first instant of ``KRW_TICKS_2025``.
KRW_TICKS_2025_FROM_TS = 1_753_887_600
#: 2024-01-29T00:00:00+09:00 (KST) as epoch seconds: first instant of ``KRW_TICKS_2024``.
KRW_TICKS_2024_FROM_TS = 1_706_454_000

# (lower bound inclusive, tick), highest band first; the last band starts at 0.
KRW_TICKS_2025: tuple[tuple[Decimal, Decimal], ...] = (
    (D("2000000"), D("1000")),
    (D("1000000"), D("1000")),
    (D("500000"), D("500")),
    (D("100000"), D("100")),
    (D("50000"), D("50")),
    (D("10000"), D("10")),
    (D("5000"), D("5")),
    (D("1000"), D("1")),
    (D("100"), D("1")),
    (D("10"), D("0.1")),
    (D("1"), D("0.01")),
    (D("0.1"), D("0.001")),
    (D("0.01"), D("0.0001")),
    (D("0.001"), D("0.00001")),
    (D("0.0001"), D("0.000001")),
    (D("0.00001"), D("0.0000001")),
    (D("0"), D("0.00000001")),
)

KRW_TICKS_2024: tuple[tuple[Decimal, Decimal], ...] = (
    (D("2000000"), D("1000")),
    (D("1000000"), D("500")),
    (D("500000"), D("100")),
    (D("100000"), D("50")),
    (D("10000"), D("10")),
    (D("1000"), D("1")),
    (D("100"), D("0.1")),
    (D("10"), D("0.01")),
    (D("1"), D("0.001")),
    (D("0.1"), D("0.0001")),
    (D("0.01"), D("0.00001")),
    (D("0.001"), D("0.000001")),
    (D("0.0001"), D("0.0000001")),
    (D("0"), D("0.00000001")),
)

KRW_TICKS_LEGACY: tuple[tuple[Decimal, Decimal], ...] = (
    (D("2000000"), D("1000")),
    (D("1000000"), D("500")),
    (D("500000"), D("100")),
    (D("100000"), D("50")),
    (D("10000"), D("10")),
    (D("1000"), D("5")),
    (D("100"), D("1")),
    (D("10"), D("0.1")),
    (D("1"), D("0.01")),
    (D("0.1"), D("0.001")),
    (D("0"), D("0.0001")),
)


class OrderPrecisionError(ValueError):
    """An order that cannot be made valid for the venue (too small, no tick, bad number).

    A ``ValueError`` so engine code needs no adapter import; adapters re-raise it as
    ``InvalidOrderError``.
    """


def to_decimal(value: Any, name: str = "value") -> Decimal:
    """``Decimal`` from Decimal/int/str, or from a float via its shortest repr (never binary)."""
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise OrderPrecisionError(f"{name} must be a number, got a bool")
    elif isinstance(value, int | str):
        try:
            result = D(value)
        except InvalidOperation as exc:
            raise OrderPrecisionError(f"{name} is not a number: {value!r}") from exc
    elif isinstance(value, float):
        result = D(repr(value))
    else:
        raise OrderPrecisionError(f"{name} must be a number, got {type(value).__name__}")
    if not result.is_finite():
        raise OrderPrecisionError(f"{name} must be finite, got {value!r}")
    return result


def krw_tick_table(at_ts: int | None = None) -> tuple[tuple[Decimal, Decimal], ...]:
    """The Upbit KRW tick table in force at ``at_ts`` (epoch seconds); the current one if None."""
    if at_ts is None or at_ts >= KRW_TICKS_2025_FROM_TS:
        return KRW_TICKS_2025
    if at_ts >= KRW_TICKS_2024_FROM_TS:
        return KRW_TICKS_2024
    return KRW_TICKS_LEGACY


def krw_tick_size(price: Decimal, at_ts: int | None = None) -> Decimal:
    """Upbit KRW tick size for ``price`` under the table in force at ``at_ts``."""
    price = to_decimal(price, "price")
    if price <= 0:
        raise OrderPrecisionError(f"price must be positive, got {price}")
    for lower, tick in krw_tick_table(at_ts):
        if price >= lower:
            return tick
    raise AssertionError("unreachable: the last band starts at 0")  # pragma: no cover


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Largest multiple of ``step`` that is <= ``value``."""
    if step <= 0:
        raise OrderPrecisionError(f"step must be positive, got {step}")
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Smallest multiple of ``step`` that is >= ``value``."""
    if step <= 0:
        raise OrderPrecisionError(f"step must be positive, got {step}")
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def is_on_grid(value: Decimal, step: Decimal) -> bool:
    return step > 0 and value % step == 0


def round_price_to_tick(price: Decimal, tick: Decimal, side: Side) -> Decimal:
    """Put ``price`` on the ``tick`` grid without making it worse: BUY down, SELL up."""
    price = to_decimal(price, "price")
    tick = to_decimal(tick, "tick")
    if price <= 0:
        raise OrderPrecisionError(f"price must be positive, got {price}")
    rounded = floor_to_step(price, tick) if Side(side) is Side.BUY else ceil_to_step(price, tick)
    if rounded <= 0:
        raise OrderPrecisionError(f"price {price} rounds to {rounded} on tick {tick}")
    return _plain(rounded, tick)


def round_krw_price(price: Decimal, side: Side, at_ts: int | None = None) -> Decimal:
    """Round a KRW price onto Upbit's price-dependent grid (BUY down, SELL up).

    Band bounds are multiples of every tick below them, so rounding inside a band never lands
    off the grid of the neighbouring band.
    """
    price = to_decimal(price, "price")
    return round_price_to_tick(price, krw_tick_size(price, at_ts), side)


def lcm_tick(a: Decimal, b: Decimal) -> Decimal:
    """Least common multiple of two ticks: a price on it is valid under both grids."""
    a, b = to_decimal(a, "tick"), to_decimal(b, "tick")
    if a <= 0 or b <= 0:
        raise OrderPrecisionError("ticks must be positive")
    scale = max(-a.as_tuple().exponent, -b.as_tuple().exponent, 0)
    factor = D(10) ** scale
    ia, ib = int(a * factor), int(b * factor)
    x, y = ia, ib
    while y:
        x, y = y, x % y
    return (D(ia // x * ib) / factor).normalize()


def round_qty(qty: Decimal, decimals: int = 8, lot: Decimal = D("0")) -> Decimal:
    """Round a quantity down to ``decimals`` places and, when ``lot`` > 0, to a lot multiple."""
    qty = to_decimal(qty, "qty")
    lot = to_decimal(lot, "lot")
    if qty < 0:
        raise OrderPrecisionError(f"qty must not be negative, got {qty}")
    if decimals < 0:
        raise OrderPrecisionError(f"decimals must be >= 0, got {decimals}")
    rounded = qty.quantize(D(1).scaleb(-decimals), rounding=ROUND_DOWN)
    if lot > 0:
        rounded = floor_to_step(rounded, lot)
    return rounded


def check_min_notional(notional: Decimal, min_notional: Decimal, symbol: str = "") -> None:
    """Raise ``OrderPrecisionError`` when an order's value is below the venue minimum."""
    notional = to_decimal(notional, "notional")
    min_notional = to_decimal(min_notional, "min_notional")
    if notional < min_notional:
        where = f" on {symbol}" if symbol else ""
        raise OrderPrecisionError(
            f"order value {_fmt(notional)} is below the minimum {_fmt(min_notional)}{where}"
        )


def market_tick(market: MarketInfo, price: Decimal, at_ts: int | None = None) -> Decimal:
    """The tick that applies to ``price`` on ``market``: its fixed tick, else Upbit's KRW table."""
    if market.tick_size is not None:
        return market.tick_size
    if market.quote == "KRW":
        return krw_tick_size(price, at_ts)
    raise OrderPrecisionError(f"no tick size known for {market.symbol}")


_REQUEST_FIELDS = ("client_order_id", "symbol", "side", "type", "qty", "price", "quote_amount", "tif",
                   "reduce_only")


@dataclass(frozen=True, slots=True)
class _Fields:
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: Decimal | None
    price: Decimal | None
    quote_amount: Decimal | None
    tif: TimeInForce
    reduce_only: bool


def _read_request(request_like: Any) -> _Fields:
    if isinstance(request_like, Mapping):
        get = request_like.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(request_like, name, default)
    values = {name: get(name) for name in _REQUEST_FIELDS}
    if not values["client_order_id"] or not values["symbol"]:
        raise OrderPrecisionError("client_order_id and symbol are required")
    try:
        side = Side(values["side"])
        order_type = OrderType(values["type"])
        tif = TimeInForce(values["tif"] or TimeInForce.GTC)
    except ValueError as exc:
        raise OrderPrecisionError(str(exc)) from exc

    def num(name: str) -> Decimal | None:
        v = values[name]
        return None if v is None else to_decimal(v, name)

    return _Fields(str(values["client_order_id"]), str(values["symbol"]), side, order_type, num("qty"),
                   num("price"), num("quote_amount"), tif, bool(values["reduce_only"]))


def apply_precision(
    request_like: Any,
    market: MarketInfo,
    *,
    at_ts: int | None = None,
    reference_price: Decimal | None = None,
    tick: Decimal | None = None,
) -> OrderRequest:
    """A venue-valid ``OrderRequest`` from an order intent, or ``OrderPrecisionError``.

    ``request_like`` is an ``OrderRequest`` or any object/mapping with its field names (numbers
    may be Decimal, int, str or float). ``tick`` overrides the market's tick (an adapter that
    knows the venue's live tick passes it). ``reference_price`` (e.g. the best bid for a market
    sell) lets a quantity-based market order be checked against the minimum value; without it
    that check is left to the venue.
    """
    f = _read_request(request_like)
    if f.symbol != market.symbol:
        raise OrderPrecisionError(f"order is for {f.symbol} but market info is for {market.symbol}")
    if f.reduce_only and not market.can_short:
        raise OrderPrecisionError(f"reduce_only is not supported on {market.symbol}")
    if f.qty is not None and f.qty <= 0:
        raise OrderPrecisionError(f"qty must be positive, got {f.qty}")

    qty = price = quote_amount = None
    if f.type is OrderType.LIMIT:
        if f.price is None or f.price <= 0:
            raise OrderPrecisionError("a limit order needs a positive price")
        if f.qty is None:
            raise OrderPrecisionError("a limit order needs a quantity")
        price_tick = tick if tick is not None else market_tick(market, f.price, at_ts)
        price = round_price_to_tick(f.price, price_tick, f.side)
        qty = _round_positive_qty(f.qty, market)
        check_min_notional(price * qty, market.min_notional, market.symbol)
    else:
        if f.tif is TimeInForce.POST_ONLY:
            raise OrderPrecisionError("post_only applies to limit orders only")
        if f.quote_amount is not None and f.qty is None:
            if f.side is not Side.BUY:
                raise OrderPrecisionError("a market sell is sized by qty, not by quote_amount")
            quote_amount = f.quote_amount.quantize(D("1e-8"), rounding=ROUND_DOWN)
            if quote_amount <= 0:
                raise OrderPrecisionError(f"quote_amount {f.quote_amount} rounds to zero")
            check_min_notional(quote_amount, market.min_notional, market.symbol)
        elif f.qty is not None:
            qty = _round_positive_qty(f.qty, market)
            if reference_price is not None:
                check_min_notional(to_decimal(reference_price, "reference_price") * qty,
                                   market.min_notional, market.symbol)
        else:
            raise OrderPrecisionError("a market order needs qty or quote_amount")

    return OrderRequest(client_order_id=f.client_order_id, symbol=f.symbol, side=f.side, type=f.type,
                        qty=qty, price=price, quote_amount=quote_amount, tif=f.tif,
                        reduce_only=f.reduce_only)


def _round_positive_qty(qty: Decimal, market: MarketInfo) -> Decimal:
    rounded = round_qty(qty, market.qty_decimals, market.lot_size)
    if rounded <= 0:
        raise OrderPrecisionError(
            f"qty {_fmt(qty)} rounds to zero on {market.symbol} "
            f"(decimals {market.qty_decimals}, lot {_fmt(market.lot_size)})"
        )
    return rounded


def _plain(value: Decimal, step: Decimal) -> Decimal:
    """Express ``value`` with the exponent of ``step`` (no scientific notation downstream)."""
    exponent = min(step.normalize().as_tuple().exponent, 0)
    return value.quantize(D(1).scaleb(exponent))


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


def format_decimal(value: Decimal) -> str:
    """A plain decimal string for an API (``1E+3`` -> ``1000``, ``0.50`` -> ``0.5``)."""
    return _fmt(to_decimal(value))
