"""The multi-market pipeline backtest [BT-1], [BT-2], [BT-3]: the live tick on history.

One global clock over every market: at each 1-minute bar close the backtester builds the same
view of the market a live trader gets (the last ``window_bars`` 1-minute candles of every market,
the leader's longer history, tickers, rules), and calls the live tick's decision core
(``traders.engine.tick.run_core``): resting orders, scan (screener, regime, the eight modules,
aggregator), runtime guard, position manager, pre-trade checklist, Monte Carlo (when the
profile asks), sizing, and the fill model (``execution.engine.fillmodel``: fees, spread, depth
slippage, latency, partial fills, resting limit orders) with Decimal books
(``execution.engine.accounting``). Nothing here decides anything a trader decides.

Two ways to produce the scan, with the same result (``tests/engine/test_backtest_pipeline.py``
proves equal trades and final equity on simulated and on real data):

* ``mode="bar"``: ``strategies.engine.pipeline.scan`` on every bar's window, as live;
* ``mode="vector"`` (default): the window-only part of every bar's scan (regime inputs,
  screener metrics, module outputs, ATR and returns) is computed for blocks of bars at once
  (``strategies.engine.backtest.precompute``), and only the stateful aggregation (score EMA,
  held markets) runs per bar through ``strategies.engine.aggregator.aggregate``.

Market data model (candles carry no order book): every market's book at a bar close is a
ladder on its tick grid around the last close (``spread_bps``; each level holds
``depth_fraction`` of the median traded value per bar over the last hour, +15 % per level),
built only for the markets an order or a check needs; the scan gets tickers whose bid/ask are
that ladder's touch and whose 24 h value is the traded value of the last 1,440 bars. Pure: no
Django, no I/O, no clock; the runner (``strategies.backtests``) reads the files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np

from execution.engine.accounting import Book, apply_fill
from execution.engine.fillmodel import Bar, FillConfig, FillModel
from execution.engine.policy import (
    ExecutionPolicy,
    Step,
    VenueCapabilities,
    WorkingOrder,
    on_timeout,
    plan_entry,
)
from execution.engine.precision import to_decimal
from execution.engine.sim import PriceGrid, build_ladder_book
from execution.engine.types import (
    TIMEFRAME_SECONDS,
    Candles,
    Fill,
    MarketInfo,
    OrderBook,
    OrderRequest,
    OrderState,
    OrderStatus,
    Side,
    Ticker,
)
from regime.engine.classifier import RegimeThresholds
from regime.engine.features import FeatureConfig
from risk.engine.guard import GuardState, period_starts
from risk.engine.positions import PositionState
from risk.engine.profiles import RiskProfile
from strategies.engine.aggregator import Aggregate, aggregate
from strategies.engine.pipeline import ScanParams, ScanResult, reaggregate, scan
from strategies.engine.types import Action, Direction, MarketSignal
from traders.engine.tick import (
    Derived,
    EntryDecision,
    ExitRecord,
    GuardContext,
    GuardFeedState,
    GuardOutcome,
    HeldPosition,
    MarketFrame,
    OrderOutcome,
    SecondOpinion,
    TickOutcome,
    run_core,
    scan_params,
)

ZERO = Decimal("0")
#: What the fill model offers the execution policy (``execution.paper.FILL_MODEL_CAPABILITIES``).
FILL_MODEL_CAPABILITIES = VenueCapabilities(post_only=True, ioc=True, fok=True, market_buy_by_qty=True,
                                            market_buy_by_quote=True, stop_orders=False, client_id_max_len=64)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class BacktestConfig:
    """How to run. ``start_index``: the first bar ticked (default: as soon as a full window
    exists); ``end_index``: one past the last. ``mode``: "vector" or "bar" (module docstring)."""

    profile: RiskProfile
    cash: Decimal = Decimal("10000000")
    window_bars: int = 1000                                  # execution.marketdata.WINDOW_BARS
    leader_bars: int = FeatureConfig().leader_bars_needed
    fill: FillConfig = field(default_factory=FillConfig)
    spread_bps: float = 5.0
    depth_fraction: float = 0.25
    book_depth: int = 15
    start_index: int | None = None
    end_index: int | None = None
    mode: str = "vector"
    seed: int = 0                                            # Monte Carlo streams
    block_bars: int = 256                                    # bars per precomputed block (vector mode)
    workers: int = 1                                         # processes precomputing blocks (vector mode)
    execution_policy: bool = True                            # the profile's [EXE-1] policy, as PaperBroker
    equity_points: int = 2000
    #: a second signal source compared with the trader's own for the guard's model disagreement
    #: [RK-4] (an AI MODE model backtested beside the deterministic profile it may disagree with)
    second_params: ScanParams | None = None
    #: the regime thresholds in force (stored versions, ``regime.thresholds``); None: code defaults
    regime_thresholds: RegimeThresholds | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("vector", "bar"):
            raise ValueError(f"mode must be 'vector' or 'bar', got {self.mode!r}")
        if self.window_bars < 2:
            raise ValueError("window_bars must be at least 2")
        if not (self.cash > 0):
            raise ValueError("cash must be positive")
        if not (self.spread_bps > 0 and self.depth_fraction > 0 and self.book_depth >= 1):
            raise ValueError("spread_bps, depth_fraction and book_depth must be positive")


# --------------------------------------------------------------------------- market data


class MarketData:
    """Every market's candles over the whole period (``[markets x bars]``, NaN where a market has
    no bar) with their rules, and the synthetic books / tickers derived from them.

    1-minute candles are what ``run_backtest`` ticks (the live scan needs them). Longer bars
    serve the tuner (``strategies.engine.learning.tick_evaluator``, which brings its own scan):
    the books then hold ``depth_fraction`` of the median traded value *per minute* (a bar's
    value over its minutes), so a longer bar does not make the book deeper."""

    def __init__(self, candles: Candles, markets: Mapping[str, MarketInfo], *, spread_bps: float = 5.0,
                 depth_fraction: float = 0.25, book_depth: int = 15) -> None:
        if candles.timeframe not in TIMEFRAME_SECONDS:
            raise ValueError(f"unknown timeframe {candles.timeframe!r}")
        self.bar_seconds = TIMEFRAME_SECONDS[candles.timeframe]
        self.day_bars = max(1, 86_400 // self.bar_seconds)
        missing = [s for s in candles.symbols if s not in markets]
        if missing:
            raise ValueError(f"no market rules for {', '.join(missing)}")
        self.candles = candles
        self.markets = dict(markets)
        self.symbols = candles.symbols
        self.spread_frac = spread_bps * 1e-4
        self.depth_fraction = depth_fraction
        self.book_depth = book_depth
        self.grids = [PriceGrid.krw() if self.markets[s].tick_size is None and self.markets[s].quote == "KRW"
                      else PriceGrid.fixed([self.markets[s].tick_size or Decimal("1e-8")]) for s in self.symbols]
        c = candles.close
        n_mk, n = c.shape
        # last finite close at or before each bar (the book's mid), and the hour's median value
        finite = np.isfinite(c)
        idx = np.where(finite, np.arange(n)[None, :], -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        self._last_idx = idx
        value = c * candles.volume / (self.bar_seconds / 60)          # per minute
        self._value = np.where(np.isfinite(value) & (value > 0), value, np.nan)
        v0 = np.nan_to_num(c * candles.volume)
        csum = np.zeros((n_mk, n + 1))
        np.cumsum(v0, axis=1, out=csum[:, 1:])
        lo = np.maximum(np.arange(1, n + 1) - self.day_bars, 0)
        self.value_24h = csum[:, 1:] - csum[:, lo]
        self._touch = self._touch_prices()
        self._tickers_at: tuple[int, dict[str, Ticker]] | None = None

    @property
    def n_bars(self) -> int:
        return self.candles.n_bars

    def mid(self, i: int, t: int) -> float:
        j = self._last_idx[i, t]
        return float(self.candles.close[i, j]) if j >= 0 else float("nan")

    def level_value(self, i: int, t: int, mid: float) -> float:
        """Quote value per book level: ``depth_fraction`` of the median traded value per minute
        over the last 60 bars (per bar on 1-minute data, as the replay venue), at least
        ``mid * 1e-6``."""
        v = self._value[i, max(0, t - 59): t + 1]
        v = v[np.isfinite(v)]
        base = float(np.median(v)) if len(v) else 0.0
        return max(base * self.depth_fraction, mid * 1e-6)

    def book(self, i: int, t: int) -> OrderBook | None:
        mid = self.mid(i, t)
        if not (math.isfinite(mid) and mid > 0):
            return None
        levels = self.level_value(i, t, mid) * (1.0 + 0.15 * np.arange(self.book_depth))
        ts = int(self.candles.ts[t]) + self.bar_seconds
        return build_ladder_book(self.symbols[i], ts, mid, self.spread_frac, levels, self.grids[i])

    def _touch_prices(self) -> tuple[np.ndarray, np.ndarray]:
        """Best bid / ask of every market's ladder at every bar (the tickers' bid / ask)."""
        c = self.candles
        n_mk, n = c.close.shape
        bid = np.full((n_mk, n), np.nan)
        ask = np.full((n_mk, n), np.nan)
        mids = np.take_along_axis(c.close, np.maximum(self._last_idx, 0), axis=1)
        mids = np.where(self._last_idx >= 0, mids, np.nan)
        ts_close = c.ts + self.bar_seconds
        for i, grid in enumerate(self.grids):
            ok = np.isfinite(mids[i]) & (mids[i] > 0)
            if not ok.any():
                continue
            cols = np.flatnonzero(ok)
            # the KRW table depends on the time: split where it changes
            for s, e in _era_runs(grid, ts_close[cols]):
                sel = cols[s:e]
                at = int(ts_close[sel[0]])
                m = mids[i, sel]
                t = grid.ticks(m, at, np.zeros(len(m), dtype=np.int64))
                tick_f = t[..., 0] / t[..., 1]
                spread_ticks = np.maximum(1, np.round(self.spread_frac * m / tick_f))
                b0 = grid.snap(m - (spread_ticks // 2) * tick_f, at, "down", np.zeros(len(m), dtype=np.int64))
                a0 = grid.snap(b0 + spread_ticks * tick_f, at, "up", np.zeros(len(m), dtype=np.int64))
                bid[i, sel], ask[i, sel] = b0, a0
        return bid, ask

    def tickers(self, t: int) -> dict[str, Ticker]:
        """Every market's ticker at the close of bar ``t`` (the last one is cached)."""
        if self._tickers_at is not None and self._tickers_at[0] == t:
            return self._tickers_at[1]
        out = self._tickers(t)
        self._tickers_at = (t, out)
        return out

    def _tickers(self, t: int) -> dict[str, Ticker]:
        bid, ask = self._touch
        ts = int(self.candles.ts[t]) + self.bar_seconds
        close = self.candles.close
        rows = np.arange(len(self.symbols))
        j = self._last_idx[:, t]
        j_day = self._last_idx[:, max(0, t - self.day_bars + 1)]
        j0 = np.where(j_day >= 0, j_day, j)
        last = close[rows, np.maximum(j, 0)]
        first = close[rows, np.maximum(j0, 0)]
        change = (last / first - 1.0) * 100.0
        cols = zip(self.symbols, (j >= 0).tolist(), last.tolist(), bid[:, t].tolist(), ask[:, t].tolist(),
                   self.value_24h[:, t].tolist(), change.tolist(), strict=True)
        return {s: Ticker(s, ts, la, b, a, v, ch) for s, ok, la, b, a, v, ch in cols if ok}


def _era_runs(grid: PriceGrid, ts: np.ndarray) -> list[tuple[int, int]]:
    if not len(ts):
        return []
    ids = np.array([grid.table_id(int(x)) for x in np.unique(ts)])
    if len(set(ids.tolist())) == 1:
        return [(0, len(ts))]
    out, start = [], 0
    cur = grid.table_id(int(ts[0]))
    for k in range(1, len(ts)):
        nid = grid.table_id(int(ts[k]))
        if nid != cur:
            out.append((start, k))
            start, cur = k, nid
    out.append((start, len(ts)))
    return out


class LazyBooks(Mapping[str, OrderBook]):
    """Books at one bar, built on first access."""

    def __init__(self, data: MarketData, t: int) -> None:
        self._data, self._t = data, t
        self._built: dict[str, OrderBook | None] = {}
        self._index = {s: i for i, s in enumerate(data.symbols)}

    def __getitem__(self, symbol: str) -> OrderBook:
        if symbol not in self._built:
            self._built[symbol] = self._data.book(self._index[symbol], self._t)
        book = self._built[symbol]
        if book is None:
            raise KeyError(symbol)
        return book

    def __iter__(self) -> Iterator[str]:
        return iter(self._data.symbols)

    def __len__(self) -> int:
        return len(self._data.symbols)


# --------------------------------------------------------------------------- books and trades


@dataclass
class SimPosition:
    """One position in memory (the twin of ``execution.models.Position``)."""

    symbol: str
    direction: int
    book: Book
    state: dict[str, Any]
    opened_ts: int
    strategy: str
    regime: str
    entry_score: float
    dust: bool = False
    first_fill_ts: int | None = None
    bought: Decimal = ZERO          # notional bought (price x qty, no fee)
    qty_bought: Decimal = ZERO
    sold: Decimal = ZERO
    buy_fees: Decimal = ZERO
    sell_fees: Decimal = ZERO
    exit_reasons: list[str] = field(default_factory=list)
    last_exit_ts: int | None = None


@dataclass
class SimOrder:
    state: OrderState
    purpose: str
    bar_ts: int
    symbol: str
    reason: str
    decision_price: Decimal | None = None     # the price the tick decided at (the policy's chase reference)
    successors: int = 0
    fallback: bool = False


@dataclass(frozen=True)
class TradeRecord:
    """One position's round trip (closed, or open at the end and marked at the last close).
    ``pnl`` is net of every fee; ``return_`` is ``pnl`` over the cash spent buying."""

    symbol: str
    strategy: str
    regime: str
    entry_ts: int
    exit_ts: int
    qty: Decimal
    entry_price: Decimal
    exit_price: Decimal
    entry_value: float
    exit_value: float
    fees: Decimal
    pnl: Decimal
    return_: float
    is_open: bool
    exit_reason: str
    entry_score: float

    def to_dict(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        def iso(ts: int) -> str:
            return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {"symbol": self.symbol, "strategy": self.strategy, "regime": self.regime,
                "entry_time": iso(self.entry_ts), "exit_time": iso(self.exit_ts),
                "qty": str(self.qty), "entry_price": str(self.entry_price), "exit_price": str(self.exit_price),
                "fees": str(self.fees), "pnl": str(self.pnl), "return": self.return_, "is_open": self.is_open,
                "exit_reason": self.exit_reason, "entry_score": round(self.entry_score, 4)}


class BacktestPort:
    """``TickPort`` over in-memory books: the fill model executes, ``accounting`` books."""

    def __init__(self, data: MarketData, config: BacktestConfig, scanner: Scanner) -> None:
        self.data, self.config, self.profile = data, config, config.profile
        self.model = FillModel(config.fill)
        self.policy = ExecutionPolicy.from_profile(config.profile) if config.execution_policy else None
        self.balance = config.cash
        self.seed_money = config.cash
        self.positions: dict[str, SimPosition] = {}
        self.orders: list[SimOrder] = []
        self.trades: list[TradeRecord] = []
        self.exit_pnls: list[Decimal] = []           # one per exit fill (live: one Trade row each)
        self.fees_paid = ZERO
        self.traded_value = ZERO
        self.fills = 0
        self.guard_state = GuardState()
        self.snap_ts: list[int] = []
        self.snap_equity: list[Decimal] = []
        self.scanner = scanner
        self.ema: dict[str, float] | None = None
        self.ema_second: dict[str, float] | None = None
        self.ema_before: dict[str, float] | None = None
        self.t = 0
        self.frame: MarketFrame | None = None
        self.order_seq = 0
        self.reason_counts: dict[str, int] = {}
        self.guard_trips: dict[str, int] = {}
        self.entries = 0
        self.exits = 0
        self.orders_sent = 0

    # -- the bar
    def at(self, t: int, frame: MarketFrame) -> None:
        self.t, self.frame = t, frame

    # -- resting orders
    def resting_orders(self) -> list[SimOrder]:
        live = [o for o in self.orders if not o.state.status.is_final]
        self.orders = live
        return list(live)

    def advance(self, order: SimOrder) -> int:
        t, data = self.t, self.data
        i = data.candles.index(order.symbol)
        state = order.state
        before = len(state.fills)
        bar = Bar.from_candles(data.candles, i, t, data.bar_seconds)
        book = self.frame.books.get(order.symbol) if state.status is OrderStatus.NEW else None
        self.model.on_bar(state, bar, book, data.markets[order.symbol])
        n = self._book(order, state.fills[before:])
        return n + self._policy_step(order)

    def _policy_step(self, order: SimOrder) -> int:
        """[EXE-1] once a resting entry timed out: the policy's re-price or market fallback (a
        successor order, executed now), as ``PaperBroker.advance_one``."""
        state = order.state
        if (self.policy is None or order.purpose != "entry" or state.qty is None
                or state.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)):
            return 0
        book = self.frame.books.get(order.symbol)
        if book is None:
            return 0
        now_ts = self.frame.bar_ts + self.data.bar_seconds
        working = WorkingOrder(state.client_order_id, order.symbol, state.side, state.qty, state.filled_qty,
                               state.price, now_ts - order.bar_ts, order.successors,
                               order.decision_price or state.price or ZERO, state.tif, order.fallback)
        decision = on_timeout(working, book, self.data.markets[order.symbol], self.policy, FILL_MODEL_CAPABILITIES,
                              self.frame.data_ts, min_age_seconds=self.data.bar_seconds)
        if decision.step not in (Step.REPLACE, Step.FALLBACK):
            return 0
        self.model.cancel(state, now_ts)
        state.error = f"{decision.reason}: continued by {decision.request.client_order_id}"
        child = self._submit(decision.request, "entry", order.reason, decision_price=order.decision_price,
                             successors=order.successors + 1, fallback=decision.step is Step.FALLBACK)
        return child.fills

    def order_open(self, order: SimOrder) -> bool:
        return order.state.status in (OrderStatus.NEW, OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)

    def order_bar_ts(self, order: SimOrder) -> int | None:
        return order.bar_ts

    def cancel(self, order: SimOrder, reason: str) -> None:
        self.model.cancel(order.state, self.frame.bar_ts + self.data.bar_seconds)
        order.state.error = reason
        self._close_if_unfilled(order)

    # -- books
    def held(self) -> dict[str, HeldPosition]:
        out = {}
        for s, p in self.positions.items():
            st = PositionState.from_dict({**p.state, "qty": float(p.book.qty)}) if p.state else None
            out[s] = HeldPosition(s, Direction(p.direction), p.book.qty, st, p.dust)
        return out

    def cash(self) -> Decimal:
        return self.balance

    def equity(self) -> Decimal:
        value = ZERO
        frame = self.frame
        for s, p in self.positions.items():
            price = frame.last_price(s)
            mark = to_decimal(price) if math.isfinite(price) else (p.book.avg_entry or ZERO)
            value += p.book.qty * mark
        return self.balance + value

    # -- scan
    def scan(self, held: dict[str, Direction]) -> ScanResult:
        self.ema_before = self.ema
        result = self.scanner.scan(self.t, self.frame, held, self.ema)
        self.ema = result.ema_state
        return result

    # -- guard
    def guard_context(self, now_ts: int) -> GuardContext:
        starts = period_starts(now_ts)
        consecutive = 0
        for pnl in reversed(self.exit_pnls[-50:]):
            if pnl < 0:
                consecutive += 1
            else:
                break
        return GuardContext(self._equity_before(starts["day"]), self._equity_before(starts["week"]),
                            self._equity_before(starts["month"]), consecutive, False, False, self.guard_state)

    def _equity_before(self, ts: int) -> Decimal:
        import bisect

        k = bisect.bisect_left(self.snap_ts, ts)
        return self.snap_equity[k - 1] if k > 0 else self.seed_money

    def store_guard(self, outcome: GuardOutcome) -> None:
        self.guard_state = outcome.decision.state
        for trip in outcome.decision.new_trips:
            self.guard_trips[trip.code] = self.guard_trips.get(trip.code, 0) + 1

    def api_stats(self) -> tuple[int, int] | None:
        return None

    def second_opinion(self, scan: ScanResult, held: dict[str, Direction]) -> SecondOpinion | None:
        second = self.config.second_params
        if second is None:
            return None
        ema = self.ema_second if self.ema_second is not None else self.ema_before   # starts from the own EMA
        agg = reaggregate(scan, second, ema_state=ema, held=held, markets=self.data.markets)
        self.ema_second = agg.ema_state
        return SecondOpinion(agg, self.scanner.params.aggregator, second.aggregator)

    # -- exits
    def set_position_state(self, symbol: str, state: PositionState) -> None:
        self.positions[symbol].state = state.to_dict()

    def blacklist(self, now_ts: int) -> dict[str, int]:
        # The fill model never fails an order the way a venue does (no errors, no rejections
        # beyond the minimum-order check), so a backtest has no failure blacklist [EXE-3].
        return {}

    def exit_order_id(self, symbol: str, n: int) -> str:
        self.order_seq += 1
        return f"bt-x{self.order_seq}-{n}"

    def submit_exit(self, symbol: str, request: OrderRequest, reason: str) -> OrderOutcome:
        return self._submit(request, "exit", reason)

    def after_exit(self, record: ExitRecord, request: OrderRequest) -> None:
        p = self.positions.get(record.symbol)
        if p is None:
            return
        if record.followup == "DUST":
            p.dust = True
        elif record.followup == "RETRY":
            p.state = {**p.state, "closing": False, "qty": float(p.book.qty)}

    def liquidation_done(self) -> None:
        pass

    # -- entries
    def record_entry(self, decision: EntryDecision) -> None:
        for code in decision.reason_codes:
            self.reason_counts[code] = self.reason_counts.get(code, 0) + 1

    def entry_order_id(self, signal: MarketSignal) -> str:
        self.order_seq += 1
        return f"bt-e{self.order_seq}-0"

    def submit_entry(self, decision: EntryDecision, request: OrderRequest, result: ScanResult) -> OrderOutcome:
        sig, sizing = decision.signal, decision.sizing
        top = max(sig.module_scores.items(), key=lambda kv: kv[1])[0] if sig.module_scores else ""
        now_ts = self.frame.bar_ts + self.data.bar_seconds
        state = PositionState.open(sig.symbol, Direction.LONG, float(sizing.entry_price), float(sizing.qty),
                                   float(sizing.stop_price), now_ts)
        self.positions[sig.symbol] = SimPosition(sig.symbol, 1, Book(), state.to_dict(), now_ts, top,
                                                 result.regime.label.value, sig.final_score)
        book = self.frame.books.get(request.symbol)
        legs = [request]
        if self.policy is not None and book is not None:
            legs = plan_entry(request, book, self.data.markets[request.symbol], self.policy, FILL_MODEL_CAPABILITIES,
                              self.frame.data_ts)
        outcomes = [self._submit(leg, "entry", "ENTRY", decision_price=request.price) for leg in legs]
        if len(outcomes) == 1:
            return outcomes[0]
        filled = sum((o.filled_qty for o in outcomes), ZERO)
        value = sum((o.filled_qty * o.avg_price for o in outcomes if o.avg_price is not None), ZERO)
        statuses = {o.status for o in outcomes}
        status = outcomes[0].status if len(statuses) == 1 else OrderStatus.PARTIALLY_FILLED.value
        return OrderOutcome(status, filled, value / filled if filled else None,
                            "; ".join(o.error for o in outcomes if o.error), sum(o.fills for o in outcomes))

    # -- execution and booking
    def _submit(self, request: OrderRequest, purpose: str, reason: str, *, decision_price: Decimal | None = None,
                successors: int = 0, fallback: bool = False) -> OrderOutcome:
        frame = self.frame
        book = frame.books.get(request.symbol)
        order = SimOrder(OrderState(request.client_order_id, request.symbol, request.side, request.type,
                                    OrderStatus.REJECTED, request.qty, request.price, error="no_order_book"),
                         purpose, frame.bar_ts, request.symbol, reason, decision_price or request.price, successors,
                         fallback)
        if book is not None:
            order.state = self.model.submit(request, book, frame.data_ts, self.data.markets[request.symbol])
        self.orders.append(order)
        self.orders_sent += 1
        n = self._book(order, list(order.state.fills))
        if purpose == "entry":
            self._close_if_unfilled(order)
        s = order.state
        return OrderOutcome(s.status.value, s.filled_qty, s.avg_price, s.error, n)

    def _book(self, order: SimOrder, fills: list[Fill]) -> int:
        for fill in fills:
            p = self.positions.get(order.symbol)
            if p is None:
                raise RuntimeError(f"fill {fill.trade_id} has no position to book against")
            res = apply_fill(p.book, fill)
            p.book = res.book
            self.balance += res.cash_delta
            self.fees_paid += fill.fee
            self.traded_value += fill.notional
            self.fills += 1
            if fill.side is Side.BUY:
                p.bought += fill.notional
                p.qty_bought += fill.qty
                p.buy_fees += fill.fee
                if p.first_fill_ts is None:
                    p.first_fill_ts = fill.ts
            else:
                p.sold += fill.notional
                p.sell_fees += fill.fee
                p.exit_reasons.append(order.reason)
                p.last_exit_ts = fill.ts
                self.exit_pnls.append(res.realised)
                if p.book.qty == 0:
                    self._close(p, fill)
        return len(fills)

    def _close(self, p: SimPosition, fill: Fill) -> None:
        self.positions.pop(p.symbol, None)
        self.trades.append(self.record_trade(p, int(fill.ts), fill.price, False))
        # An entry leg or re-priced successor still resting would otherwise buy into a closed
        # position (a stop hit between a partial fill and the rest): it is cancelled with it.
        for o in self.orders:
            if o.symbol == p.symbol and o.purpose == "entry" and not o.state.status.is_final:
                self.model.cancel(o.state, int(fill.ts))
                o.state.error = "position closed: the rest of the entry is cancelled"


    def record_trade(self, p: SimPosition, exit_ts: int, exit_price: Decimal, is_open: bool) -> TradeRecord:
        cost = p.bought + p.buy_fees
        fees = p.buy_fees + p.sell_fees
        if is_open:
            pnl = p.book.realised + p.book.qty * exit_price - p.book.cost
            exit_value = float(p.sold + p.book.qty * exit_price)
        else:
            pnl = p.book.realised
            exit_value = float(p.sold)
        entry_price = (p.bought / p.qty_bought) if p.qty_bought else ZERO
        return TradeRecord(p.symbol, p.strategy, p.regime, int(p.first_fill_ts or p.opened_ts), exit_ts, p.qty_bought,
                           entry_price, exit_price, float(p.bought), exit_value, fees, pnl,
                           float(pnl / cost) if cost else 0.0, is_open,
                           "+".join(dict.fromkeys(p.exit_reasons)) or ("OPEN" if is_open else ""), p.entry_score)

    def _close_if_unfilled(self, order: SimOrder) -> None:
        """An entry that ended with nothing filled leaves no position behind."""
        if order.purpose != "entry":
            return
        p = self.positions.get(order.symbol)
        if p is None or p.book.qty > 0 or p.bought > 0:
            return
        if order.state.status not in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
            return
        pending = any(o is not order and o.symbol == order.symbol and o.purpose == "entry"
                      and not o.state.status.is_final for o in self.orders)
        if not pending:       # another leg or a successor may still fill
            self.positions.pop(order.symbol, None)

    def snapshot(self, bar_ts: int, equity: Decimal) -> None:
        self.snap_ts.append(bar_ts)
        self.snap_equity.append(equity)



# --------------------------------------------------------------------------- the scan per bar


def tick_aggregate(symbols: tuple[str, ...], ts: int, outputs, regime, params: ScanParams, *,
                   ema: Mapping[str, float] | None, held: Mapping[str, Direction], candidates: np.ndarray,
                   can_short: np.ndarray, flags) -> Aggregate:
    """The last step of a scan from precomputed parts: the aggregation with the score EMA and the
    held markets. Signal objects only for the markets the tick reads (held ones and ENTER
    proposals; a second pass builds the ENTER signals when there are any): the arrays, actions
    and EMA state cover every market either way, so the tick decides exactly as with the scan's
    candidates-or-held mask. ``params.signals_for_all`` builds every signal."""
    held_mask = np.array([s in held for s in symbols])
    mask = np.ones(len(symbols), bool) if params.signals_for_all else held_mask
    args = dict(ema_state=ema, held=held, candidates=candidates, can_short=can_short, bandit_weight=1.0,
                extra_reasons=flags)
    agg = aggregate(symbols, ts, outputs, regime, params.aggregator, signal_mask=mask, **args)
    if not params.signals_for_all:
        enter = np.array([a is Action.ENTER for a in agg.actions])
        if enter.any():
            agg = aggregate(symbols, ts, outputs, regime, params.aggregator, signal_mask=held_mask | enter, **args)
    return agg


class Scanner:
    """Produces each bar's ``ScanResult`` (``scan``) and the window-derived arrays of the tick
    (``derived``; None: the core computes them from the window)."""

    def __init__(self, data: MarketData, config: BacktestConfig) -> None:
        self.data, self.config = data, config
        self.params: ScanParams = scan_params(config.profile)
        if config.regime_thresholds is not None:
            self.params = replace(self.params, thresholds=config.regime_thresholds)

    def scan(self, t: int, frame: MarketFrame, held: dict[str, Direction], ema: dict[str, float] | None
             ) -> ScanResult:
        raise NotImplementedError

    def derived(self, t: int) -> Derived | None:
        return None

    def close(self) -> None:
        pass


class BarScanner(Scanner):
    """``mode="bar"``: the live scan on every bar's window."""

    def scan(self, t: int, frame: MarketFrame, held: dict[str, Direction], ema: dict[str, float] | None
             ) -> ScanResult:
        return scan(frame.candles, books=None, tickers=frame.tickers, params=self.params, ema_state=ema, held=held,
                    markets=frame.markets, leader_history=frame.leader_history)


class VectorScanner(Scanner):
    """``mode="vector"``: window-only parts precomputed for blocks of bars; the aggregation
    (score EMA, held markets, actions) runs per bar exactly as at the end of ``scan``."""

    def __init__(self, data: MarketData, config: BacktestConfig, start: int, end: int) -> None:
        super().__init__(data, config)
        from strategies.engine.backtest.precompute import ScanPrecompute

        self.pre = ScanPrecompute(data.candles, data.markets, self.params, window_bars=config.window_bars,
                                  leader_bars=config.leader_bars, atr_period=config.profile.atr_period,
                                  tickers=data.tickers, block_bars=config.block_bars, start=start, end=end,
                                  workers=config.workers)

    def scan(self, t: int, frame: MarketFrame, held: dict[str, Direction], ema: dict[str, float] | None
             ) -> ScanResult:
        part = self.pre.at(t)
        symbols = self.data.symbols
        agg = tick_aggregate(symbols, part.ts, part.outputs, part.regime, self.params, ema=ema, held=held,
                             candidates=part.screen.candidate, can_short=part.can_short, flags=part.screen.flags)
        return ScanResult(part.ts, symbols, part.screen, part.regime, part.max_positions, part.outputs, agg,
                          agg.signals, agg.ema_state)

    def derived(self, t: int) -> Derived | None:
        return self.pre.derived(t)

    def close(self) -> None:
        self.pre.close()


# --------------------------------------------------------------------------- the run


@dataclass
class BacktestResult:
    """Per-bar curves (``ts`` bar opens, values at each bar's close) and the trades."""

    ts: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    position_value: np.ndarray
    regime: list[str]
    trading_state: list[str]
    trades: list[TradeRecord]
    final_equity: Decimal
    initial_cash: Decimal
    fees_paid: Decimal
    traded_value: Decimal
    fills: int
    entries: int
    exits: int
    orders: int
    reason_counts: dict[str, int]
    guard_trips: dict[str, int]
    exit_reasons: dict[str, int]
    seconds: float
    markets: tuple[str, ...]
    #: ``[bars x markets]``: each tick's final score signed by its direction (+ LONG or NONE,
    #: - SHORT), and whether the aggregate proposed ENTER (the evidence's calibration table)
    scores: np.ndarray | None = None
    enter: np.ndarray | None = None

    @property
    def bars(self) -> int:
        return len(self.ts)


def make_frame(data: MarketData, t: int, config: BacktestConfig) -> MarketFrame:
    c = data.candles
    a = max(0, t - config.window_bars + 1)
    s = slice(a, t + 1)
    window = Candles(c.symbols, c.timeframe, c.ts[s], c.open[:, s], c.high[:, s], c.low[:, s], c.close[:, s],
                     c.volume[:, s])
    la = max(0, t - config.leader_bars + 1)
    ls = slice(la, t + 1)
    leader = Candles(c.symbols[:1], c.timeframe, c.ts[ls], c.open[:1, ls], c.high[:1, ls], c.low[:1, ls], c.close[:1, ls],
                     c.volume[:1, ls])
    bar_ts = int(c.ts[t])
    return MarketFrame("backtest", bar_ts, window, leader, LazyBooks(data, t), data.tickers(t), data.markets,
                       bar_ts + data.bar_seconds)


def run_backtest(data: MarketData, config: BacktestConfig,
                 progress: Callable[[float], None] | None = None, *, scanner: Scanner | None = None) -> BacktestResult:
    """Tick every bar from ``start_index`` to ``end_index`` through the live tick core. The scan
    is the live one on 1-minute data (``config.mode``) unless ``scanner`` brings its own (the
    tuner's scan from precomputed module outputs, on bars of any length)."""
    started = time.perf_counter()
    n = data.n_bars
    start = config.window_bars - 1 if config.start_index is None else config.start_index
    end = n if config.end_index is None else min(config.end_index, n)
    if scanner is None and data.bar_seconds != 60:
        raise ValueError("the live scan runs on 1-minute candles; other bars need a scanner of their own")
    if scanner is None and config.window_bars < 300:
        raise ValueError("window_bars must be at least 300 (the scan's minimum)")
    if scanner is None and start < ScanParams().min_bars - 1:
        raise ValueError(f"the first tick needs {ScanParams().min_bars} bars of history (start_index >= "
                         f"{ScanParams().min_bars - 1})")
    if end <= start:
        raise ValueError(f"nothing to tick: {n} bars, first tick at bar {start} (needs {config.window_bars} bars "
                         f"of history)")
    if scanner is None:
        scanner = (VectorScanner(data, config, start, end) if config.mode == "vector" else BarScanner(data, config))
    port = BacktestPort(data, config, scanner)
    m = end - start
    equity = np.empty(m)
    cash = np.empty(m)
    pos_value = np.empty(m)
    regimes: list[str] = []
    states: list[str] = []
    scores = np.full((m, len(data.symbols)), np.nan)
    enter = np.zeros((m, len(data.symbols)), bool)
    try:
        _loop(data, config, port, scanner, start, end, equity, cash, pos_value, regimes, states, progress,
              scores, enter)
    finally:
        scanner.close()
    entries, exits = port.entries, port.exits
    last_t = end - 1
    trades = list(port.trades)
    for s, p in port.positions.items():
        if p.book.qty <= 0:
            continue
        price = data.mid(data.candles.index(s), last_t)
        trades.append(port.record_trade(p, int(data.candles.ts[last_t]) + data.bar_seconds, to_decimal(price), True))
    trades.sort(key=lambda tr: (tr.entry_ts, tr.symbol))
    exit_reasons: dict[str, int] = {}
    for tr in trades:
        if not tr.is_open:
            for r in tr.exit_reason.split("+"):
                exit_reasons[r] = exit_reasons.get(r, 0) + 1
    if progress is not None:
        progress(1.0)
    return BacktestResult(
        ts=data.candles.ts[start:end].copy(), equity=equity, cash=cash, position_value=pos_value, regime=regimes,
        trading_state=states, trades=trades, final_equity=port.equity(), initial_cash=config.cash,
        fees_paid=port.fees_paid, traded_value=port.traded_value, fills=port.fills, entries=entries, exits=exits,
        orders=port.orders_sent, reason_counts=port.reason_counts, guard_trips=port.guard_trips,
        exit_reasons=exit_reasons, seconds=time.perf_counter() - started, markets=data.symbols, scores=scores,
        enter=enter)


def _loop(data: MarketData, config: BacktestConfig, port: BacktestPort, scanner: Scanner, start: int, end: int,
          equity: np.ndarray, cash: np.ndarray, pos_value: np.ndarray, regimes: list[str], states: list[str],
          progress: Callable[[float], None] | None, scores: np.ndarray, enter: np.ndarray) -> None:
    feed = GuardFeedState()
    m = end - start
    step = max(1, m // 100)
    profile = config.profile
    for k, t in enumerate(range(start, end)):
        frame = make_frame(data, t, config)
        port.at(t, frame)
        out: TickOutcome = run_core(port, profile=profile, market=frame, bar_ts=frame.bar_ts, feed=feed,
                                    derived=scanner.derived(t), mc_seed=config.seed, bar_seconds=data.bar_seconds)
        feed = GuardFeedState.from_dict(out.feed)
        port.entries += out.entries
        port.exits += out.exits
        eq = port.equity()
        port.snapshot(frame.bar_ts, eq)
        equity[k] = float(eq)
        cash[k] = float(port.balance)
        pos_value[k] = float(eq - port.balance)
        regimes.append(out.scan.regime.label.value)
        agg = out.scan.aggregate
        scores[k] = np.where(agg.direction < 0, -agg.final_score, agg.final_score)
        enter[k] = [a is Action.ENTER for a in agg.actions]
        states.append(out.guard.decision.trading_state.value)
        if progress is not None and (k % step == 0):
            progress(k / m)
