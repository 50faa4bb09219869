"""The ``sim`` venue [EX-1], [EX-2]: the embedded simulator plus the shared fill model.

``SimulatedVenue`` is the account side shared with ``replay``: balances in ``Decimal`` (free and
locked per asset), orders by client order id, fills, cancels. Funds are locked when an order is
accepted (a buy locks its worst-case cost including the taker fee, a sell locks the quantity)
and released as it fills or ends. A duplicate client order id, an unknown market or an order
the fill model rejects raise ``InvalidOrderError``; missing funds raise
``InsufficientFundsError``. One venue instance is one account.

``SimExchange`` owns a ``SimMarket``; the clock only moves when the worker calls ``advance`` /
``advance_to`` (no wall clock inside). ``now`` is the end of the last produced bar; orders are
submitted at ``now`` against the current book, and resting orders are matched against each new
bar. Without open orders ``advance(n)`` generates the bars in one vectorised block (identical
to ``n`` single steps). ``get_state`` / ``from_state`` persist the whole venue as JSON-safe data.

Resting stop orders [RK-5] (``StopOrders``): a SELL stop locks its quantity like a sell order
and triggers on the first matched bar whose low trades at or below the stop; it then executes as
a market sell against the book (so a gap fills below the stop, as on a real venue).

``SnapshotSimVenue`` is the account of a LIVE trader on the ``sim`` exchange: the same account
logic over the market data the collector stored (rules, latest books, 1-minute bars), matched
bar by bar as new bars arrive; its state is persisted by ``execution.live``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import numpy as np

from execution.adapters.base import InsufficientFundsError, InvalidOrderError, OrderNotFoundError
from execution.engine.fillmodel import Bar, FillConfig, FillModel
from execution.engine.policy import VenueCapabilities
from execution.engine.resample import resample
from execution.engine.sim import SimConfig, SimHistory, SimMarket
from execution.engine.types import (
    TIMEFRAME_SECONDS,
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
    Ticker,
    TimeInForce,
)

ZERO = Decimal("0")
#: The fill model has every order type: post-only, IOC/FOK, market buys by quantity or by quote
#: amount; the simulated account adds resting stop orders.
SIM_CAPABILITIES = VenueCapabilities(post_only=True, ioc=True, fok=True, market_buy_by_qty=True,
                                     market_buy_by_quote=True, stop_orders=True, client_id_max_len=64)


# ------------------------------------------------------------------ JSON-safe (de)serialisation


def fill_to_dict(fill: Fill) -> dict[str, Any]:
    return {"client_order_id": fill.client_order_id, "symbol": fill.symbol, "side": fill.side.value,
            "price": str(fill.price), "qty": str(fill.qty), "fee": str(fill.fee), "ts": fill.ts,
            "liquidity": fill.liquidity.value, "trade_id": fill.trade_id}


def fill_from_dict(d: dict[str, Any]) -> Fill:
    return Fill(d["client_order_id"], d["symbol"], Side(d["side"]), Decimal(d["price"]), Decimal(d["qty"]),
                Decimal(d["fee"]), int(d["ts"]), Liquidity(d["liquidity"]), d["trade_id"])


def _opt(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _dec(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def order_to_dict(o: OrderState) -> dict[str, Any]:
    return {"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value, "type": o.type.value,
            "status": o.status.value, "qty": _opt(o.qty), "price": _opt(o.price),
            "quote_amount": _opt(o.quote_amount), "exchange_order_id": o.exchange_order_id,
            "filled_qty": str(o.filled_qty), "avg_price": _opt(o.avg_price), "fee": str(o.fee), "ts": o.ts,
            "error": o.error, "fills": [fill_to_dict(f) for f in o.fills], "tif": o.tif.value}


def order_from_dict(d: dict[str, Any]) -> OrderState:
    return OrderState(d["client_order_id"], d["symbol"], Side(d["side"]), OrderType(d["type"]),
                      OrderStatus(d["status"]), _dec(d["qty"]), _dec(d["price"]), _dec(d["quote_amount"]),
                      d["exchange_order_id"], Decimal(d["filled_qty"]), _dec(d["avg_price"]), Decimal(d["fee"]),
                      int(d["ts"]), d["error"], [fill_from_dict(f) for f in d["fills"]], TimeInForce(d["tif"]))


def _copy_order(o: OrderState) -> OrderState:
    return dataclasses.replace(o, fills=list(o.fills))


# ------------------------------------------------------------------ the account side


class SimulatedVenue:
    """Balances, orders and fills of one account on a simulated venue (sim, replay, paper)."""

    name = "simulated"
    can_trade = True

    def __init__(self, fill_config: FillConfig | None = None, balances: dict[str, Decimal] | None = None,
                 ) -> None:
        self.fill_model = FillModel(fill_config)
        start = {"KRW": Decimal("10000000")} if balances is None else balances
        self._free: dict[str, Decimal] = {k: Decimal(v) for k, v in start.items()}
        if any(v < 0 for v in self._free.values()):
            raise ValueError("balances must not be negative")
        self._locked: dict[str, Decimal] = {}
        self._orders: dict[str, OrderState] = {}
        self._order_lock: dict[str, Decimal] = {}
        self._trades: list[Fill] = []
        self._stops: dict[str, Decimal] = {}        # untriggered stop orders: client id -> stop price
        self._seq = 0

    def capabilities(self) -> VenueCapabilities:
        return SIM_CAPABILITIES

    # hooks the concrete venue provides ----------------------------------------------------
    @property
    def now(self) -> int:
        raise NotImplementedError

    def markets(self) -> list[MarketInfo]:
        raise NotImplementedError

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook:
        raise NotImplementedError

    # account ------------------------------------------------------------------------------
    def _market(self, symbol: str) -> MarketInfo:
        for m in self._market_infos():
            if m.symbol == symbol:
                return m
        raise InvalidOrderError(f"unknown market {symbol}")

    def _market_infos(self) -> list[MarketInfo]:
        cached = getattr(self, "_infos_cache", None)
        if cached is None:
            cached = self._infos_cache = self.markets()
        return cached

    def balances(self) -> dict[str, Decimal]:
        """Total (free + locked) per asset."""
        assets = set(self._free) | set(self._locked)
        out = {a: self._free.get(a, ZERO) + self._locked.get(a, ZERO) for a in sorted(assets)}
        return {a: v for a, v in out.items() if v != 0}

    def free_balances(self) -> dict[str, Decimal]:
        return {a: v for a, v in sorted(self._free.items()) if v != 0}

    def locked_balances(self) -> dict[str, Decimal]:
        return {a: v for a, v in sorted(self._locked.items()) if v != 0}

    def _lock_need(self, request: OrderRequest, market: MarketInfo, book: OrderBook) -> tuple[str, Decimal]:
        fee = max(market.maker_fee, market.taker_fee)
        if request.side is Side.SELL:
            if request.qty is None:
                raise InvalidOrderError(f"{request.client_order_id}: a sell is sized by qty")
            return market.base, request.qty
        if request.type is OrderType.LIMIT:
            assert request.price is not None and request.qty is not None
            return market.quote, request.price * request.qty * (1 + fee)
        if request.qty is None:
            assert request.quote_amount is not None
            return market.quote, request.quote_amount * (1 + fee)
        # market buy by quantity: walk the book for its cost; beyond the book, the last level again
        left, cost = request.qty, ZERO
        last = ZERO
        for price, qty in book.asks:
            p, q = Decimal(repr(float(price))), Decimal(repr(float(qty)))
            take = min(left, q)
            cost += p * take
            left -= take
            last = p
            if left <= 0:
                break
        cost += left * last
        return market.quote, cost * (1 + fee)

    def create_order(self, request: OrderRequest) -> OrderState:
        """Submit at ``now`` against the current book; taker fills settle immediately."""
        if request.client_order_id in self._orders:
            raise InvalidOrderError(f"duplicate client_order_id {request.client_order_id}")
        market = self._market(request.symbol)
        book = self.order_book(request.symbol)
        asset, need = self._lock_need(request, market, book)
        if self._free.get(asset, ZERO) < need:
            raise InsufficientFundsError(f"{asset}: need {need}, free {self._free.get(asset, ZERO)}")
        state = self.fill_model.submit(request, book, self.now, market)
        if state.status is OrderStatus.REJECTED:
            raise InvalidOrderError(f"{request.symbol} {request.client_order_id}: {state.error}")
        self._seq += 1
        state.exchange_order_id = f"{self.name}-{self._seq}"
        self._free[asset] = self._free.get(asset, ZERO) - need
        self._locked[asset] = self._locked.get(asset, ZERO) + need
        self._order_lock[request.client_order_id] = need
        self._orders[request.client_order_id] = state
        self._settle(state, state.fills, market)
        return _copy_order(state)

    def _settle(self, order: OrderState, fills: Iterable[Fill], market: MarketInfo) -> None:
        cid = order.client_order_id
        for f in fills:
            if f.side is Side.BUY:
                cost = f.price * f.qty + f.fee
                from_lock = min(self._order_lock[cid], cost)
                self._order_lock[cid] -= from_lock
                self._locked[market.quote] -= from_lock
                self._free[market.quote] = self._free.get(market.quote, ZERO) - (cost - from_lock)
                self._free[market.base] = self._free.get(market.base, ZERO) + f.qty
            else:
                self._order_lock[cid] -= f.qty
                self._locked[market.base] -= f.qty
                self._free[market.quote] = self._free.get(market.quote, ZERO) + f.price * f.qty - f.fee
            self._trades.append(f)
        if order.status.is_final and self._order_lock.get(cid, ZERO):
            asset = market.base if order.side is Side.SELL else market.quote
            rest = self._order_lock.pop(cid)
            self._locked[asset] -= rest
            self._free[asset] = self._free.get(asset, ZERO) + rest

    def cancel_order(self, symbol: str, client_order_id: str) -> OrderState:
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFoundError(f"no order {client_order_id} on {symbol}")
        self.fill_model.cancel(order, self.now)
        self._stops.pop(client_order_id, None)
        self._settle(order, (), self._market(symbol))
        return _copy_order(order)

    # resting stop orders (StopOrders) ---------------------------------------------------------
    def create_stop_order(self, request: OrderRequest, stop_price: Decimal) -> OrderState:
        """A SELL stop of ``request.qty`` at ``stop_price`` (spot: no buy stops); the quantity is
        locked until it triggers or is cancelled."""
        if request.client_order_id in self._orders:
            raise InvalidOrderError(f"duplicate client_order_id {request.client_order_id}")
        market = self._market(request.symbol)
        if request.side is not Side.SELL or request.qty is None:
            raise InvalidOrderError(f"{request.client_order_id}: only sell stops sized by qty (spot venue)")
        if stop_price is None or stop_price <= 0:
            raise InvalidOrderError(f"{request.client_order_id}: a stop needs a positive stop price")
        if self._free.get(market.base, ZERO) < request.qty:
            raise InsufficientFundsError(f"{market.base}: need {request.qty}, free {self._free.get(market.base, ZERO)}")
        self._seq += 1
        state = OrderState(client_order_id=request.client_order_id, symbol=request.symbol, side=Side.SELL,
                           type=OrderType.MARKET, status=OrderStatus.OPEN, qty=request.qty, price=None,
                           exchange_order_id=f"{self.name}-{self._seq}", ts=self.now)
        self._free[market.base] -= request.qty
        self._locked[market.base] = self._locked.get(market.base, ZERO) + request.qty
        self._order_lock[request.client_order_id] = request.qty
        self._orders[request.client_order_id] = state
        self._stops[request.client_order_id] = Decimal(stop_price)
        return _copy_order(state)

    def fetch_stop_order(self, symbol: str, client_order_id: str) -> OrderState:
        return self.fetch_order(symbol, client_order_id)

    def cancel_stop_order(self, symbol: str, client_order_id: str) -> OrderState:
        return self.cancel_order(symbol, client_order_id)

    def stop_price(self, client_order_id: str) -> Decimal | None:
        """The trigger of an untriggered stop (None once triggered or unknown)."""
        return self._stops.get(client_order_id)

    def _trigger_stop(self, order: OrderState, bar: Bar, book: OrderBook, market: MarketInfo) -> list[Fill]:
        """Execute a triggered stop as a market sell against ``book`` at the bar's close."""
        cid = order.client_order_id
        del self._stops[cid]
        request = OrderRequest(cid, order.symbol, Side.SELL, OrderType.MARKET, qty=order.qty)
        state = self.fill_model.submit(request, book, bar.ts + bar.seconds, market)
        state.exchange_order_id = order.exchange_order_id
        self._orders[cid] = state
        self._settle(state, state.fills, market)
        return list(state.fills)

    def fetch_order(self, symbol: str, client_order_id: str) -> OrderState:
        order = self._orders.get(client_order_id)
        if order is None or order.symbol != symbol:
            raise OrderNotFoundError(f"no order {client_order_id} on {symbol}")
        return _copy_order(order)

    def open_orders(self, symbol: str | None = None) -> list[OrderState]:
        return [_copy_order(o) for o in self._orders.values()
                if not o.status.is_final and (symbol is None or o.symbol == symbol)]

    def my_trades(self, symbol: str, since: int | None = None) -> list[Fill]:
        return [f for f in self._trades if f.symbol == symbol and (since is None or f.ts >= since)]

    def _match_bar(self, symbol: str, bar: Bar, book_fn: Any) -> list[Fill]:
        """Run every open order of ``symbol`` through one completed bar."""
        active = [o for o in self._orders.values() if o.symbol == symbol and not o.status.is_final]
        if not active:
            return []
        market = self._market(symbol)
        book = book_fn()
        fills: list[Fill] = []
        for order in active:
            stop = self._stops.get(order.client_order_id)
            if stop is not None:
                if not bar.is_missing and Decimal(repr(bar.low)) <= stop:
                    fills.extend(self._trigger_stop(order, bar, book, market))
                continue
            new = self.fill_model.on_bar(order, bar, book, market)
            self._settle(order, new, market)
            fills.extend(new)
        return fills

    def _account_state(self) -> dict[str, Any]:
        return {"free": {k: str(v) for k, v in self._free.items()},
                "locked": {k: str(v) for k, v in self._locked.items()},
                "orders": [order_to_dict(o) for o in self._orders.values()],
                "order_lock": {k: str(v) for k, v in self._order_lock.items()},
                "trades": [fill_to_dict(f) for f in self._trades], "seq": self._seq,
                "stops": {k: str(v) for k, v in self._stops.items()}}

    def _restore_account(self, state: dict[str, Any]) -> None:
        self._free = {k: Decimal(v) for k, v in state["free"].items()}
        self._locked = {k: Decimal(v) for k, v in state["locked"].items()}
        orders = [order_from_dict(d) for d in state["orders"]]
        self._orders = {o.client_order_id: o for o in orders}
        self._order_lock = {k: Decimal(v) for k, v in state["order_lock"].items()}
        self._trades = [fill_from_dict(d) for d in state["trades"]]
        self._seq = int(state["seq"])
        self._stops = {k: Decimal(v) for k, v in state.get("stops", {}).items()}


def fill_config_to_dict(c: FillConfig) -> dict[str, Any]:
    return {"latency_ms": c.latency_ms, "participation": c.participation, "fee_quantum": str(c.fee_quantum)}


def fill_config_from_dict(d: dict[str, Any]) -> FillConfig:
    return FillConfig(int(d["latency_ms"]), float(d["participation"]), Decimal(d["fee_quantum"]))


def select_candles(candles: Candles, timeframe: str, since: int | None, limit: int, now: int) -> Candles:
    """Complete bars of ``timeframe`` (resampled when coarser) ending at or before ``now``."""
    if timeframe != candles.timeframe:
        candles = resample(candles, timeframe)
    tf = TIMEFRAME_SECONDS[timeframe]
    done = candles.ts + tf <= now
    idx = np.flatnonzero(done if since is None else done & (candles.ts >= since))
    idx = idx[:limit] if since is not None else idx[-limit:] if limit > 0 else idx[:0]
    s = slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)
    return Candles(candles.symbols, timeframe, candles.ts[s], candles.open[:, s], candles.high[:, s],
                   candles.low[:, s], candles.close[:, s], candles.volume[:, s])


# ------------------------------------------------------------------ the sim venue


class SimExchange(SimulatedVenue):
    """The ``sim`` venue: a ``SimMarket`` plus one account (see the module docstring)."""

    name = "sim"
    can_trade = True

    def __init__(self, config: SimConfig | None = None, *, fill_config: FillConfig | None = None,
                 balances: dict[str, Decimal] | None = None, warmup_bars: int = 0,
                 history_bars: int = 20_000, market: SimMarket | None = None) -> None:
        super().__init__(fill_config, balances)
        self.market = market or SimMarket(config)
        self.history_bars = int(history_bars)
        self._history: Candles | None = None
        self._regimes: np.ndarray = np.empty(0, dtype="<U17")
        if warmup_bars > 0:
            self._remember(self.market.generate(warmup_bars))

    @property
    def now(self) -> int:
        return self.market.now

    @property
    def true_regime(self) -> str:
        return self.market.true_regime

    def _remember(self, hist: SimHistory) -> None:
        c = hist.candles
        if self._history is not None:
            h = self._history
            c = Candles(c.symbols, c.timeframe, np.concatenate([h.ts, c.ts]),
                        *(np.concatenate([getattr(h, f), getattr(c, f)], axis=1)
                          for f in ("open", "high", "low", "close", "volume")))
            regimes = np.concatenate([self._regimes, hist.true_regime])
        else:
            regimes = hist.true_regime
        if c.n_bars > self.history_bars:
            c = c.tail(self.history_bars)
            regimes = regimes[-self.history_bars:]
        self._history, self._regimes = c, regimes

    def history(self) -> SimHistory:
        """All remembered bars (at most ``history_bars``) and their true regimes."""
        if self._history is None:
            raise MarketDataError("no bars produced yet")
        return SimHistory(self._history, self._regimes)

    def advance(self, n_bars: int = 1) -> list[Fill]:
        """Produce ``n_bars`` bars and match open orders against each; returns the new fills."""
        fills: list[Fill] = []
        left = int(n_bars)
        while left > 0:
            if not any(not o.status.is_final for o in self._orders.values()):
                self._remember(self.market.generate(left))
                break
            hist = self.market.step()
            self._remember(hist)
            bar_s = self.market.config.bar_seconds
            for symbol in sorted({o.symbol for o in self._orders.values() if not o.status.is_final}):
                i = self.market.symbols.index(symbol)
                bar = Bar.from_candles(hist.candles, i, 0, bar_s)
                fills.extend(self._match_bar(symbol, bar, lambda i=i: self.market.order_book(i)))
            left -= 1
        return fills

    def advance_to(self, ts: int) -> list[Fill]:
        """Advance until ``now >= ts`` (whole bars)."""
        bar_s = self.market.config.bar_seconds
        n = -(-(int(ts) - self.now) // bar_s)
        return self.advance(n) if n > 0 else []

    # Exchange protocol (market data) --------------------------------------------------------
    def markets(self) -> list[MarketInfo]:
        return self.market.market_info()

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        out = self.market.tickers()
        return out if symbols is None else [t for t in out if t.symbol in set(symbols)]

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        if self._history is None:
            raise MarketDataError("no bars produced yet")
        if symbol not in self.market.symbols:
            raise InvalidOrderError(f"unknown market {symbol}")
        return select_candles(self._history.select((symbol,)), timeframe, since, limit, self.now)

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook:
        if symbol not in self.market.symbols:
            raise InvalidOrderError(f"unknown market {symbol}")
        return self.market.order_book(symbol, depth)

    # persistence ----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """JSON-safe: simulator state, account, fill config (candle history is not included)."""
        return {"version": 1, "market": self.market.get_state(), "account": self._account_state(),
                "fill_config": fill_config_to_dict(self.fill_model.config), "history_bars": self.history_bars}

    @classmethod
    def from_state(cls, state: dict[str, Any], *, rebuild_history: bool = False) -> SimExchange:
        """Resume a persisted venue. With ``rebuild_history`` the remembered bars are regenerated
        from the seed (deterministic, so identical to the bars produced before)."""
        if state.get("version") != 1:
            raise ValueError("unsupported sim exchange state version")
        market = SimMarket.from_state(state["market"])
        ex = cls(market=market, fill_config=fill_config_from_dict(state["fill_config"]), balances={},
                 history_bars=int(state["history_bars"]))
        ex._restore_account(state["account"])
        if rebuild_history and market.bar_index:
            replay = SimMarket(market.config)
            keep = min(market.bar_index, ex.history_bars)
            skip = market.bar_index - keep
            while skip > 0:                     # in chunks: bounded memory
                chunk = min(skip, 10_000)
                replay.generate(chunk)
                skip -= chunk
            ex._remember(replay.generate(keep))
        return ex


# ------------------------------------------------------------------ a LIVE account on the sim exchange


class SnapshotSimVenue(SimulatedVenue):
    """One simulated account over the collected market data (see the module docstring).

    ``markets`` and ``books`` are the collector's latest rules and books; ``now`` the end of the
    last collected bar. ``match(candles, after_ts)`` runs resting orders and stops through every
    1-minute bar that opened after ``after_ts`` (the books of those bars are not stored, so a
    triggered or delayed order meets the latest book). ``state`` resumes a persisted account
    (``get_state``); without it the account starts with ``balances``.
    """

    name = "sim"
    can_trade = True

    def __init__(self, markets: dict[str, MarketInfo], books: dict[str, OrderBook], now: int, *,
                 state: dict[str, Any] | None = None, balances: dict[str, Decimal] | None = None,
                 fill_config: FillConfig | None = None) -> None:
        super().__init__(fill_config, balances if state is None else {})
        self._market_map = dict(markets)
        self._books = dict(books)
        self._now = int(now)
        if state is not None:
            if state.get("version") != 1:
                raise ValueError("unsupported sim account state version")
            self._restore_account(state["account"])

    @property
    def now(self) -> int:
        return self._now

    def markets(self) -> list[MarketInfo]:
        return list(self._market_map.values())

    def order_book(self, symbol: str, depth: int = 15) -> OrderBook:
        if symbol not in self._books:
            raise InvalidOrderError(f"unknown market {symbol}")
        book = self._books[symbol]
        return OrderBook(book.symbol, book.ts, book.bids[:depth], book.asks[:depth])

    def tickers(self, symbols: list[str] | None = None) -> list[Ticker]:
        wanted = set(symbols) if symbols is not None else None
        return [Ticker(s, b.ts, b.mid, b.best_bid, b.best_ask, float("nan"), float("nan"))
                for s, b in self._books.items() if wanted is None or s in wanted]

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int = 200) -> Candles:
        raise MarketDataError("the sim account reads bars from the collector, not from the venue")

    def match(self, candles: Candles, after_ts: int, bar_seconds: int = 60) -> list[Fill]:
        """Run open orders through the bars of ``candles`` that opened after ``after_ts``."""
        fills: list[Fill] = []
        for j in np.flatnonzero(candles.ts > after_ts):
            symbols = sorted({o.symbol for o in self._orders.values() if not o.status.is_final})
            for symbol in symbols:
                if symbol not in candles.symbols:
                    continue
                bar = Bar.from_candles(candles, candles.index(symbol), int(j), bar_seconds)
                fills.extend(self._match_bar(symbol, bar, lambda symbol=symbol: self.order_book(symbol)))
        return fills

    def get_state(self, keep_final_orders: int = 2000, keep_trades: int = 5000) -> dict[str, Any]:
        """JSON-safe account; bounded: every working order, the newest ``keep_final_orders``
        finished ones and the newest ``keep_trades`` fills (older ones are in our own books)."""
        final = [cid for cid, o in self._orders.items() if o.status.is_final]
        for cid in final[:max(0, len(final) - keep_final_orders)]:
            del self._orders[cid]
            self._order_lock.pop(cid, None)
        self._trades = self._trades[-keep_trades:]
        return {"version": 1, "account": self._account_state()}
