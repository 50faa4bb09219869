"""Market data, orders, fills, positions and trades. Money and quantities are Decimal [DM-3]."""

from __future__ import annotations

from django.db import models

from quantweb.db import ZERO, money_field


class Candle(models.Model):
    """OHLCV per exchange, market, timeframe and bar-open time (epoch seconds, UTC) [EX-6]."""

    exchange = models.CharField(max_length=16)
    symbol = models.CharField(max_length=32)
    timeframe = models.CharField(max_length=4)
    ts = models.BigIntegerField()
    open = money_field()
    high = money_field()
    low = money_field()
    close = money_field()
    volume = money_field()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["exchange", "symbol", "timeframe", "ts"], name="candle_unique_bar")
        ]
        indexes = [models.Index(fields=["exchange", "timeframe", "ts"])]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} {self.timeframe} @ {self.ts}"


class SimMarketState(models.Model):
    """The embedded simulator's resumable state, so restarts continue the same market."""

    name = models.CharField(max_length=32, unique=True)
    config = models.JSONField()
    state = models.JSONField()
    last_bar_ts = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sim {self.name} @ {self.last_bar_ts}"


class Order(models.Model):
    """One order leg. The client order id is derived from (trader, signal, leg) and saved before
    the venue is called [EXE-2]."""

    class Status(models.TextChoices):
        NEW = "new"
        OPEN = "open"
        PARTIALLY_FILLED = "partially_filled"
        FILLED = "filled"
        CANCELLED = "cancelled"
        REJECTED = "rejected"
        EXPIRED = "expired"
        # LIVE: the create's outcome is not known (timeout, reset, 5xx, unreadable answer, a venue
        # "status unknown" code): maybe on the venue. Looked up by client id until resolved; its
        # position is never closed meanwhile (docs/execution.md section 7).
        UNKNOWN = "unknown"

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="orders")
    signal = models.ForeignKey("strategies.Signal", null=True, blank=True, on_delete=models.SET_NULL, related_name="orders")
    position = models.ForeignKey("Position", null=True, blank=True, on_delete=models.SET_NULL, related_name="orders")
    client_order_id = models.CharField(max_length=64, unique=True)
    exchange_order_id = models.CharField(max_length=64, blank=True)
    mode = models.CharField(max_length=8)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    type = models.CharField(max_length=8)
    tif = models.CharField(max_length=10, default="gtc")
    purpose = models.CharField(max_length=16, default="entry", help_text="entry, exit, stop (resting venue stop), take_profit, liquidate")
    price = money_field(null=True, blank=True)
    qty = money_field(null=True, blank=True)
    quote_amount = money_field(null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW)
    filled_qty = money_field(default=ZERO)
    avg_price = money_field(null=True, blank=True)
    fee = money_field(default=ZERO)
    error = models.CharField(max_length=300, blank=True)
    bar_ts = models.BigIntegerField(null=True, blank=True)
    # LIVE outbox [EXE-2]: the row is committed with status NEW before the venue is called;
    # ``submitted_at`` is committed just before the call, so NEW without it was never sent and
    # NEW with it may or may not have reached the venue (reconcile looks it up by client id).
    submitted_at = models.DateTimeField(null=True, blank=True, help_text="LIVE: the venue call started")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="successors",
                               help_text="the order this one replaces or continues (policy chain)")
    execution = models.JSONField(default=dict, blank=True,
                                 help_text="policy state: leg, successors, decision price, pending step")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "status"])]

    def __str__(self) -> str:
        return f"{self.side} {self.symbol} {self.qty or self.quote_amount} ({self.status})"


class Fill(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="fills")
    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="fills")
    trade_id = models.CharField(max_length=64)
    symbol = models.CharField(max_length=32)
    side = models.CharField(max_length=4)
    price = money_field()
    qty = money_field()
    fee = money_field()
    liquidity = models.CharField(max_length=6)
    ts = models.BigIntegerField(help_text="epoch seconds")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["order", "trade_id"], name="fill_unique_trade")]

    def __str__(self) -> str:
        return f"{self.side} {self.qty} {self.symbol} @ {self.price}"

    @property
    def notional(self):
        return self.price * self.qty


class Position(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="positions")
    symbol = models.CharField(max_length=32)
    direction = models.SmallIntegerField(default=1, help_text="1 long, -1 short")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    qty = money_field(default=ZERO)
    avg_entry = money_field(default=ZERO)
    cost = money_field(default=ZERO, help_text="quote spent on the open quantity incl. entry fees")
    stop_price = money_field(null=True, blank=True)
    initial_stop = money_field(null=True, blank=True)
    highest_price = money_field(null=True, blank=True)
    last_price = money_field(null=True, blank=True)
    realised_pnl = money_field(default=ZERO)
    fees = money_field(default=ZERO)
    plan = models.JSONField(default=dict, blank=True, help_text="position-manager state (scale-outs done, atr...)")
    strategy = models.CharField(max_length=20, blank=True, help_text="module that contributed most at entry")
    regime = models.CharField(max_length=20, blank=True)
    # AI MODE [AI-5], [AI-6]: the model version the entry's scan ran under (NULL for the other
    # profiles and when no model was deployed), so drift attributes trades by record, not by
    # replaying the lifecycle history.
    model_version = models.ForeignKey("strategies.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", db_index=True, help_text="AI MODE: model at entry")
    opened_ts = models.BigIntegerField()
    closed_ts = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["trader", "symbol"], condition=models.Q(status="open"), name="position_one_open_per_market"
            )
        ]

    def __str__(self) -> str:
        return f"{self.symbol} {self.qty} @ {self.avg_entry} ({self.status})"

    @property
    def unrealised_pnl(self):
        if self.last_price is None or self.status != self.Status.OPEN:
            return ZERO
        return (self.last_price - self.avg_entry) * self.qty * self.direction


class Trade(models.Model):
    """A closed round trip (or a partial exit of one) with its realised PnL net of fees."""

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="trades")
    position = models.ForeignKey(Position, on_delete=models.CASCADE, related_name="trades")
    symbol = models.CharField(max_length=32)
    direction = models.SmallIntegerField(default=1)
    mode = models.CharField(max_length=8)
    qty = money_field()
    entry_price = money_field()
    exit_price = money_field()
    entry_ts = models.BigIntegerField()
    exit_ts = models.BigIntegerField()
    pnl = money_field(help_text="net of entry and exit fees")
    fees = money_field()
    exit_reason = models.CharField(max_length=40)
    strategy = models.CharField(max_length=20, blank=True)
    regime = models.CharField(max_length=20, blank=True)
    model_version = models.ForeignKey("strategies.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="+", db_index=True, help_text="AI MODE: the position's model at entry")

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.pnl:+} ({self.exit_reason})"


class MarketSnapshot(models.Model):
    """The collector's latest view of one market: book, ticker and trading rules. Every trader
    of the exchange reads these instead of calling the venue itself [issue 3 #9]."""

    exchange = models.CharField(max_length=16)
    symbol = models.CharField(max_length=32)
    ts = models.BigIntegerField(help_text="epoch seconds the snapshot describes")
    book = models.JSONField(help_text='{"bids": [[price, qty], ...], "asks": [...]}')
    ticker = models.JSONField(default=dict)
    market = models.JSONField(default=dict, help_text="MarketInfo: tick, lot, minimum, fees, caution")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["exchange", "symbol"], name="snapshot_unique_market")]

    def __str__(self) -> str:
        return f"{self.exchange}:{self.symbol} @ {self.ts}"


class ExecutionFailure(models.Model):
    """One failed order of a trader on one market [EXE-3]: the input of the market blacklist
    (``execution.engine.blacklist``) and the failed-order rate. Append-only."""

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="execution_failures")
    order = models.ForeignKey(Order, null=True, blank=True, on_delete=models.SET_NULL, related_name="failures")
    symbol = models.CharField(max_length=32)
    mode = models.CharField(max_length=8)
    ts = models.BigIntegerField(help_text="epoch seconds")
    code = models.CharField(max_length=40, help_text="reason code: VENUE_REJECTED, ORDER_ERROR, NOT_PLACED...")
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["trader", "symbol", "ts"])]

    def __str__(self) -> str:
        return f"{self.symbol} {self.code} @ {self.ts}"


class MarketBlacklist(models.Model):
    """A market a trader may not enter until ``until`` (three failures in a window) [EXE-3].
    One row per (trader, market), updated when a new ban starts; history is in the events."""

    trader = models.ForeignKey("traders.Trader", on_delete=models.CASCADE, related_name="market_blacklist")
    symbol = models.CharField(max_length=32)
    until = models.BigIntegerField(help_text="epoch seconds the ban ends")
    reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trader", "symbol"], name="blacklist_unique_market")]

    def __str__(self) -> str:
        return f"{self.trader_id}:{self.symbol} until {self.until}"


class SimAccount(models.Model):
    """The simulated venue account of a LIVE trader on the ``sim`` exchange: balances, orders and
    fills of ``execution.adapters.sim.SnapshotSimVenue``, matched against the collected bars.
    It plays the exchange, so it is written in its own transactions like a real venue."""

    trader = models.OneToOneField("traders.Trader", on_delete=models.CASCADE, related_name="sim_account")
    state = models.JSONField()
    last_bar_ts = models.BigIntegerField(help_text="bar-open epoch seconds of the last bar matched")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"sim account of {self.trader_id} @ {self.last_bar_ts}"

from execution.models_quality import *  # noqa: E402,F401,F403
