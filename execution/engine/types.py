"""Market-data and order types shared by every engine (no Django, no I/O).

Shapes are documented on each type. Candle arrays are ``[markets x bars]`` float64, the
timestamp vector is ``[bars]`` int64 epoch seconds of each bar's OPEN (UTC). Missing bars are
NaN in the price arrays (exchanges emit no candle when nothing traded); consumers that cannot
handle NaN must forward-fill explicitly, never silently.

Order-side types carry ``Decimal`` because exchange precision has been applied to them already
(ground rule 4); numeric work inside the engine uses numpy floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import numpy as np

TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
    # Timeframes found in replay files (freqtrade / Binance / Bittrex exports).
    "3m": 180,
    "30m": 1800,
    "2h": 7200,
    "6h": 21600,
    "8h": 28800,
    "12h": 43200,
    "1w": 604800,
    "1M": 2_592_000,  # nominal 30 days; a calendar month has no fixed grid, see CALENDAR_TIMEFRAMES
}

#: Timeframes whose bars do not sit on a fixed-seconds grid (no off-grid or gap checks apply).
CALENDAR_TIMEFRAMES: frozenset[str] = frozenset({"1M"})


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    LIMIT = "limit"
    MARKET = "market"


class TimeInForce(StrEnum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"
    POST_ONLY = "post_only"


class OrderStatus(StrEnum):
    NEW = "new"                  # saved locally, not yet acknowledged by the venue
    OPEN = "open"                # resting on the venue
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"      # may carry a partial fill
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"          # a create whose outcome is not known yet: looked up by client id

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class MarketDataError(ValueError):
    """Market data that must not reach a strategy (NaN, negative, out of order, misaligned)."""


@dataclass(frozen=True, slots=True)
class Candles:
    """Aligned OHLCV for many markets on one timeframe.

    ``ts``: int64 ``[bars]`` bar-open epoch seconds, strictly increasing.
    ``open/high/low/close/volume``: float64 ``[markets x bars]``; NaN marks a missing bar.
    ``volume`` is in base units; traded value is ``close * volume``.
    """

    symbols: tuple[str, ...]
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        n_mk, n_bars = len(self.symbols), len(self.ts)
        for name in ("open", "high", "low", "close", "volume"):
            arr = getattr(self, name)
            if arr.shape != (n_mk, n_bars):
                raise MarketDataError(f"{name} has shape {arr.shape}, expected {(n_mk, n_bars)}")
        if n_bars > 1 and not np.all(np.diff(self.ts) > 0):
            raise MarketDataError("candle timestamps must be strictly increasing")
        if self.timeframe not in TIMEFRAME_SECONDS:
            raise MarketDataError(f"unknown timeframe {self.timeframe!r}")

    @property
    def n_markets(self) -> int:
        return len(self.symbols)

    @property
    def n_bars(self) -> int:
        return len(self.ts)

    def index(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def tail(self, bars: int) -> Candles:
        """The last ``bars`` bars (views, no copy)."""
        s = slice(max(0, self.n_bars - bars), None)
        return Candles(self.symbols, self.timeframe, self.ts[s], self.open[:, s], self.high[:, s],
                       self.low[:, s], self.close[:, s], self.volume[:, s])

    def select(self, symbols: tuple[str, ...]) -> Candles:
        idx = [self.symbols.index(s) for s in symbols]
        return Candles(tuple(symbols), self.timeframe, self.ts, self.open[idx], self.high[idx],
                       self.low[idx], self.close[idx], self.volume[idx])


@dataclass(frozen=True, slots=True)
class OrderBook:
    """One market's book at ``ts``.

    ``bids``: float64 ``[levels x 2]`` (price, qty) best first (descending price).
    ``asks``: float64 ``[levels x 2]`` (price, qty) best first (ascending price).
    """

    symbol: str
    ts: int
    bids: np.ndarray
    asks: np.ndarray

    @property
    def best_bid(self) -> float:
        return float(self.bids[0, 0]) if len(self.bids) else float("nan")

    @property
    def best_ask(self) -> float:
        return float(self.asks[0, 0]) if len(self.asks) else float("nan")

    @property
    def mid(self) -> float:
        return (self.best_bid + self.best_ask) / 2.0

    @property
    def spread_pct(self) -> float:
        return (self.best_ask - self.best_bid) / self.mid * 100.0

    def depth_value(self, levels: int = 5) -> float:
        """Average quote value of the top ``levels`` on both sides (for the liquidity ratio)."""
        b = self.bids[:levels]
        a = self.asks[:levels]
        return float(((b[:, 0] * b[:, 1]).sum() + (a[:, 0] * a[:, 1]).sum()) / 2.0)


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    ts: int
    last: float
    bid: float
    ask: float
    value_24h: float        # traded value over 24 h in quote currency
    change_24h_pct: float


@dataclass(frozen=True, slots=True)
class MarketInfo:
    """Static trading rules of one market. ``tick_size`` may be None when the venue uses a
    price-dependent table (Upbit KRW), in which case the precision module decides."""

    symbol: str
    base: str
    quote: str
    min_notional: Decimal = Decimal("0")
    lot_size: Decimal = Decimal("0")          # 0 = any quantity precision (Upbit: 8 decimals)
    qty_decimals: int = 8
    tick_size: Decimal | None = None
    maker_fee: Decimal = Decimal("0.0005")
    taker_fee: Decimal = Decimal("0.0005")
    caution: bool = False                     # exchange warning / caution flag
    can_short: bool = False


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the venue will receive it: precision already applied.

    For a MARKET BUY on a venue that buys by quote amount (Upbit ``price`` type) set
    ``quote_amount`` and leave ``qty`` None.
    """

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: Decimal | None = None
    price: Decimal | None = None
    quote_amount: Decimal | None = None
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False

    def __post_init__(self) -> None:
        if not self.client_order_id:
            raise ValueError("client_order_id is required")
        if self.qty is not None and self.qty <= 0:
            raise ValueError("qty must be positive")
        if self.quote_amount is not None and self.quote_amount <= 0:
            raise ValueError("quote_amount must be positive")
        if self.qty is None and self.quote_amount is None:
            raise ValueError("qty or quote_amount is required")
        if self.type is OrderType.LIMIT and (self.price is None or self.price <= 0):
            raise ValueError("a limit order needs a positive price")


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution. ``fee`` is in quote currency and always >= 0."""

    client_order_id: str
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    fee: Decimal
    ts: int
    liquidity: Liquidity
    trade_id: str

    @property
    def notional(self) -> Decimal:
        return self.price * self.qty


@dataclass(slots=True)
class OrderState:
    """The venue's view of one order (mutable: it evolves as fills arrive)."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    status: OrderStatus
    qty: Decimal | None
    price: Decimal | None
    quote_amount: Decimal | None = None
    exchange_order_id: str = ""
    filled_qty: Decimal = Decimal("0")
    avg_price: Decimal | None = None
    fee: Decimal = Decimal("0")
    ts: int = 0
    error: str = ""
    fills: list[Fill] = field(default_factory=list)
    tif: TimeInForce = TimeInForce.GTC   # as requested; the fill model needs it for delayed activation
