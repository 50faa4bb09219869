"""One trader's tick (worker-only): scan -> guard -> manage positions -> checklist -> size ->
execute -> mark to market, every stage stored with its reasons [SPEC 4, PL-2, RK-*].

The engines decide (pure functions); this module loads their inputs, stores their outputs and
books the fills, all inside one transaction that holds the trader's row lock, so a tick never
runs twice at once and a stale tick is skipped, never replayed.

No venue I/O inside that transaction (issue 21, item 3): a LIVE tick reads the venue before it
(``execution.snapshot.VenueSnapshot.prefetch``: the working orders by client id, open orders,
balances), reconciles and decides from what it read, and its cancels and new orders reach the
venue after the commit. A hung venue delays the tick, never the database.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from execution.callstats import merge_tick_calls
from execution.collectors import trader_market_source
from execution.engine.types import MarketDataError, OrderRequest
from execution.live import LiveRefused, broker_for
from execution.marketdata import MarketView, load_view
from execution.models import Order, Position
from execution.paper import book_fill, close_if_unfilled, order_from_request, reopen_for_exit
from execution.reconcile import reconcile_trader
from execution.snapshot import VenueSnapshot
from quantweb.db import quantize_money, to_decimal
from risk.engine.guard import GuardState, Severity, period_starts
from risk.engine.positions import PositionState
from risk.engine.profiles import RiskProfile
from risk.models import KillSwitch, TraderSafetyState
from strategies.engine.learning.params import apply_scan_params
from strategies.engine.pipeline import ScanResult, reaggregate, scan
from strategies.engine.types import Direction
from strategies.models import FeatureSnapshot, ScanRun, Signal
from strategies.services import baseline_profile, scan_overrides
from traders import audit, realtime
from traders.engine.tick import (
    EntryDecision,
    ExitRecord,
    GuardContext,
    GuardFeedState,
    GuardOutcome,
    HeldPosition,
    OrderOutcome,
    SecondOpinion,
    run_core,
    scan_conflicts,
)
from traders.engine.tick import scan_params as scan_params
from traders.models import EquitySnapshot, EventLevel, Trader, TraderMode, TraderStatus
from traders.services import log_event

logger = logging.getLogger(__name__)
BAR = 60


@dataclass
class TickReport:
    trader_id: int
    bar_ts: int
    outcome: str
    entries: int = 0
    exits: int = 0
    fills: int = 0
    notes: list[str] = field(default_factory=list)


def trader_profile(trader: Trader) -> RiskProfile:
    from strategies.services import effective_profile

    return effective_profile(trader.profile, params=trader.config_version.params, mode=trader.mode)


def run_tick(trader_id: int, bar_ts: int, *, now: float | None = None) -> TickReport:
    """Tick one trader on the closed bar ``bar_ts``. Idempotent per bar."""
    # The credential loads (and decrypts) only where a venue client is built: a key that cannot be
    # decrypted refuses the LIVE tick with its reason instead of failing it (``_read_venue``).
    trader = Trader.objects.select_related("profile", "config_version").get(pk=trader_id)
    try:
        view = load_view(trader_market_source(trader), bar_ts)
    except (LookupError, ValueError, MarketDataError) as exc:
        log_event(trader, "TICK_SKIPPED", f"no market data for bar {bar_ts}: {exc}", level=EventLevel.WARN)
        return TickReport(trader_id, bar_ts, "no-data")
    # LIVE: read the venue first, with no transaction open (issue 21, item 3); inside the
    # transaction the tick's reconciliation and broker are answered from what was read, and
    # their cancels go out after the commit (``execution.snapshot``).
    snapshot, venue_error = _read_venue(trader, view, bar_ts)
    with transaction.atomic():
        # No join to the (nullable) credential here: PostgreSQL cannot lock an outer join.
        trader = (Trader.objects.select_for_update(skip_locked=True).select_related("profile", "config_version")
                  .filter(pk=trader_id).first())
        if trader is None:
            return TickReport(trader_id, bar_ts, "busy")   # another worker is ticking it
        if trader.status not in (TraderStatus.RUNNING, TraderStatus.PAUSED) or trader.removed_at:
            return TickReport(trader_id, bar_ts, "not-running")
        if trader.last_tick_ts is not None and bar_ts <= trader.last_tick_ts:
            return TickReport(trader_id, bar_ts, "stale")
        # PAPER: the fill model. LIVE: only LIVE + ARMED + paper protection passed gets a venue
        # broker (checked again before every venue call); anything else places nothing [EXE-4].
        profile = trader_profile(trader)
        factory = None
        if snapshot is not None:
            snapshot.freeze()
            transaction.on_commit(snapshot.thaw)           # before the broker's send phase
            transaction.on_commit(lambda: snapshot.run_deferred(trader_id), robust=True)
            factory = lambda t, v: snapshot                # noqa: E731
        elif venue_error is not None:
            factory = _refuse_with(venue_error)
        try:
            broker = broker_for(trader, view, profile=profile, exchange_factory=factory)
        except LiveRefused:
            trader.last_tick_ts, trader.last_tick_at = bar_ts, timezone.now()
            trader.save(update_fields=["last_tick_ts", "last_tick_at"])
            return TickReport(trader_id, bar_ts, "live-refused")
        if trader.mode == TraderMode.LIVE:
            # Orders a crashed worker left behind are settled by client order id first [EXE-2].
            reconcile_trader(trader, broker.exchange, view=view)
        report = _tick(trader, view, bar_ts, broker, profile)
        trader.last_tick_ts, trader.last_tick_at = bar_ts, timezone.now()
        trader.save()
    return report


def _read_venue(trader: Trader, view: MarketView, bar_ts: int) -> tuple[VenueSnapshot | None, LiveRefused | None]:
    """Before the tick's transaction: the LIVE venue's snapshot (``execution.snapshot``), or the
    reason no venue client could be built (a refused or unreadable credential). Nothing for PAPER,
    for a trader that will not tick, or one the gate refuses (no venue client is built) [EXE-4]."""
    from django.conf import settings

    from execution import live

    if trader.mode != TraderMode.LIVE or trader.removed_at is not None \
            or trader.status not in (TraderStatus.RUNNING, TraderStatus.PAUSED) \
            or (trader.last_tick_ts is not None and bar_ts <= trader.last_tick_ts) \
            or live.live_refusal(trader) is not None:
        return None, None
    try:
        exchange = live.exchange_for(trader, view)
    except LiveRefused as exc:
        return None, exc
    except Exception as exc:         # a credential that cannot be decrypted, an adapter that fails to start
        return None, LiveRefused("VENUE_UNAVAILABLE", f"{trader.exchange}: {exc.__class__.__name__}: {exc}")
    snapshot = VenueSnapshot.of(exchange)
    snapshot.prefetch(trader.pk, budget=float(getattr(settings, "QUANTWEB_VENUE_READ_BUDGET_SECONDS", 20)))
    return snapshot, None


def _refuse_with(error: LiveRefused):
    def factory(trader, view):
        raise error
    return factory


def _tick(trader: Trader, view: MarketView, bar_ts: int, broker=None, profile: RiskProfile | None = None) -> TickReport:
    """Load the tick's state, let the pure core decide (``traders.engine.tick.run_core``) through
    a port that stores every decision and books every fill, then write the books and the log."""
    profile = profile or trader_profile(trader)
    safety, _ = TraderSafetyState.objects.select_for_update().get_or_create(
        trader=trader, defaults={"peak_equity": trader.seed_money})
    kill = KillSwitch.objects.filter(pk=1).first()
    port = PaperPort(trader, view, profile, safety, kill, bar_ts, broker)
    feed = GuardFeedState.from_dict(trader.scan_state.get("guard_feed"))
    outcome = run_core(port, profile=profile, market=view, bar_ts=bar_ts, feed=feed, mc_seed=trader.pk)
    if merge_tick_calls(safety, port.broker):        # this tick's venue calls join the API error window [RK-4]
        safety.save(update_fields=["state"])
    trader.scan_state = {**trader.scan_state, "guard_feed": outcome.feed}
    report = TickReport(trader.pk, bar_ts, "ok", entries=outcome.entries, exits=outcome.exits, fills=outcome.fills)
    result = outcome.scan

    # 6. Books, equity curve, action log.
    equity = _mark_to_market(trader, port.positions, view, save=True)
    trader.equity = quantize_money(equity)
    if trader.equity > safety.peak_equity:
        safety.peak_equity = trader.equity
        safety.save(update_fields=["peak_equity"])
    snap = EquitySnapshot.objects.create(trader=trader, ts=bar_ts, equity=trader.equity, cash=trader.cash,
                                         positions_value=trader.equity - trader.cash, seed_money=trader.seed_money)
    transaction.on_commit(lambda: realtime.publish(realtime.equity_payload(snap)))
    log_event(trader, "TICK", f"{result.regime.label.value} {result.regime.regime_score:.0f}: "
              f"{len(result.screen.symbols)} candidates, {len(result.entries)} entry signals, "
              f"{report.entries} entries, {report.exits} exits, equity {trader.equity:,.0f}",
              data={"scan_run": port.scan_run.pk, "equity": str(trader.equity),
                    "duration_ms": round(port.scan_ms, 1)})
    return report


class PaperPort:
    """The live worker's side of ``run_core``: Django rows in, Django rows out, the paper
    broker for execution. Every call happens inside the tick's transaction."""

    def __init__(self, trader: Trader, view: MarketView, profile: RiskProfile, safety: TraderSafetyState, kill,
                 bar_ts: int, broker=None) -> None:
        self.trader, self.view, self.profile, self.safety, self.kill = trader, view, profile, safety, kill
        self.bar_ts = bar_ts
        # The PaperBroker (or, for an eligible LIVE trader, the LiveBroker), both running the
        # profile's execution policy [EXE-1].
        self.broker = broker or broker_for(trader, view, profile=profile)
        self.positions: dict[str, Position] = {
            p.symbol: p for p in Position.objects.select_for_update().filter(trader=trader, status=Position.Status.OPEN)}
        self.signal_rows: dict[str, Signal] = {}
        self.scan_run: ScanRun | None = None
        self.scan_ms = 0.0
        self.overrides: dict = {}  # AI MODE scan overrides of this tick (model_version for new positions)
        self.ema_before: dict[str, float] = {}   # the score EMA before this tick's scan
        self.opinion: SecondOpinion | None = None

    # -- orders resting from earlier ticks
    def resting_orders(self):
        # Resting venue stops mirror the worker's stop [RK-5]; the LIVE broker keeps them in sync.
        return list(Order.objects.select_for_update().filter(
            trader=self.trader, status__in=[Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]).exclude(purpose="stop"))

    def advance(self, order: Order) -> int:
        fills = self.broker.advance(order)
        n = _book_fills(self.trader, order, fills, self.positions, self.view, reason=order.purpose.upper())
        # A re-price / market fallback that expired unfilled must not leave an empty position
        # that blocks the market [EXE-1].
        if order.purpose == "entry" and order.status not in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED):
            for row in [order, *Order.objects.filter(parent=order)]:
                _close_if_unfilled(row, self.positions)
        return n

    def order_open(self, order: Order) -> bool:
        return order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)

    def order_bar_ts(self, order: Order) -> int | None:
        return order.bar_ts

    def cancel(self, order: Order, reason: str) -> None:
        self.broker.cancel(order, reason)
        _close_if_unfilled(order, self.positions)
        log_event(self.trader, "ORDER_CANCELLED", f"{order.symbol} {order.side} remainder cancelled after timeout",
                  data={"client_order_id": order.client_order_id, "filled": str(order.filled_qty)})

    # -- books
    def held(self) -> dict[str, HeldPosition]:
        out = {}
        for symbol, p in self.positions.items():
            state = p.plan.get("state")
            st = PositionState.from_dict({**state, "qty": float(p.qty)}) if state else None
            out[symbol] = HeldPosition(symbol, Direction(p.direction), p.qty, st, bool(p.plan.get("dust")))
        return out

    def cash(self) -> Decimal:
        return self.trader.cash

    def equity(self) -> Decimal:
        return _mark_to_market(self.trader, self.positions, self.view)

    # -- scan
    def scan(self, held: dict[str, Direction]) -> ScanResult:
        trader, view = self.trader, self.view
        started = time.perf_counter()
        ema_in = self.ema_before = dict(trader.scan_state.get("ema") or {})
        # AI MODE: the deployed model's scan keys and the bandit's weights [AI-3], [AI-4].
        overrides = self.overrides = scan_overrides(trader.profile, trader.mode)
        params = self.scan_params = apply_scan_params(scan_params(self.profile), overrides.get("scan"),
                                                      overrides.get("bandit_weights"))
        from dataclasses import replace as _replace

        from regime.thresholds import current_thresholds
        params = self.scan_params = _replace(params, thresholds=current_thresholds())  # stored [RG-2]
        result = scan(view.candles, books=view.books, tickers=view.tickers, params=params,
                      ema_state=trader.scan_state.get("ema"), held=held, markets=view.markets,
                      leader_history=view.leader_history)
        self.scan_ms = (time.perf_counter() - started) * 1000
        trader.scan_state = {**trader.scan_state, "ema": result.ema_state}
        self.opinion = self._second_opinion(result, held)
        agreement = None
        if self.opinion is not None:     # shown with the scan ("why"): how far the two sources agree
            conflicts, strong = scan_conflicts(result, self.opinion, held)
            agreement = {"conflicts": conflicts, "strong": strong}
        self.scan_run, self.signal_rows = _store_scan(trader, view, self.bar_ts, result, self.scan_ms, ema_in, held,
                                                      self.profile, overrides, second_opinion=agreement,
                                                      regime_thresholds=params.thresholds)
        return result

    def second_opinion(self, result: ScanResult, held: dict[str, Direction]) -> SecondOpinion | None:
        return self.opinion                # computed with the scan, so it is stored with it

    def _second_opinion(self, result: ScanResult, held: dict[str, Direction]) -> SecondOpinion | None:
        """AI MODE with a model (or bandit weights) in use: the deterministic profile's
        aggregation of the same scan (STANDARD with the stored edits, no model, no bandit), with
        its own score EMA, for the guard's model disagreement [RK-4]. None for one source."""
        trader, overrides = self.trader, self.overrides
        if not overrides or (overrides.get("model_version") is None and not overrides.get("bandit_weights")):
            if "ema_second" in trader.scan_state:
                trader.scan_state = {k: v for k, v in trader.scan_state.items() if k != "ema_second"}
            return None
        base = scan_params(baseline_profile(trader.profile, trader.config_version.params))
        # A new second source starts from the trader's own score EMA (before this scan), so equal
        # settings give equal scores from the first tick.
        ema = trader.scan_state.get("ema_second") or self.ema_before
        agg = reaggregate(result, base, ema_state=ema, held=held, markets=self.view.markets)
        trader.scan_state = {**trader.scan_state, "ema_second": agg.ema_state}
        return SecondOpinion(agg, self.scan_params.aggregator, base.aggregator)

    # -- guard
    def guard_context(self, now_ts: int) -> GuardContext:
        trader = self.trader
        starts = period_starts(now_ts)
        return GuardContext(
            day_start_equity=_period_start_equity(trader, starts["day"]),
            week_start_equity=_period_start_equity(trader, starts["week"]),
            month_start_equity=_period_start_equity(trader, starts["month"]),
            consecutive_losses=_consecutive_losses(trader),
            master_kill=bool(self.kill and self.kill.engaged),
            emergency_stop=bool(self.safety.state.get("liquidate")),
            previous=GuardState.from_dict(self.safety.state.get("guard")),
        )

    def store_guard(self, outcome: GuardOutcome) -> None:
        _store_guard(self.trader, self.safety, outcome)

    def api_stats(self) -> tuple[int, int] | None:
        # LIVE: the venue calls in the API error window (stored on the locked safety row plus
        # this tick's) [RK-4]; the paper broker makes no venue calls.
        stats = getattr(self.broker, "api_stats", None)
        return stats(state=self.safety.state) if stats is not None else None

    # -- exits
    def set_position_state(self, symbol: str, state: PositionState) -> None:
        position = self.positions[symbol]
        position.plan = {**position.plan, "state": state.to_dict()}
        position.stop_price = to_decimal(state.stop)
        position.highest_price = to_decimal(state.highest_price)
        position.save(update_fields=["plan", "stop_price", "highest_price"])

    def blacklist(self, now_ts: int) -> dict[str, int]:
        from execution.services import blacklisted_markets

        return blacklisted_markets(self.trader, now_ts)

    def exit_order_id(self, symbol: str, n: int) -> str:
        return f"qw{self.trader.pk}-x{self.positions[symbol].pk}-{self.bar_ts}-{n}"

    def submit_exit(self, symbol: str, request: OrderRequest, reason: str) -> OrderOutcome:
        position = self.positions[symbol]
        self._exit_position = position
        order = order_from_request(self.trader, request, purpose="exit", bar_ts=self.bar_ts, position=position)
        fills = self.broker.submit(order, request)
        n = _book_fills(self.trader, order, fills, self.positions, self.view, reason=reason)
        return _outcome(order, n)

    def after_exit(self, record: ExitRecord, request: OrderRequest) -> None:
        trader, position, outcome = self.trader, self._exit_position, record.outcome
        symbol = record.symbol
        if record.followup == "DUST":
            # Dust: worth less than the venue's minimum order, it cannot be sold. It stays on
            # the books (and in equity) but is no longer managed, so it cannot loop.
            position.plan = {**position.plan, "dust": True}
            position.save(update_fields=["plan"])
            log_event(trader, "DUST", f"{symbol}: {position.qty} left is below the minimum order; kept, not managed",
                      level=EventLevel.WARN, data={"position": position.pk})
        elif record.followup == "RETRY":
            # The book could not take it all (or the venue refused): let the manager ask again
            # next tick instead of leaving the position marked as closing forever.
            reopen_for_exit(position)
            log_event(trader, "EXIT_INCOMPLETE", f"{symbol}: {record.reason} filled {outcome.filled_qty} of {record.qty} "
                      f"({outcome.status}{': ' + outcome.error if outcome.error else ''}); retrying next tick",
                      level=EventLevel.WARN, data={"client_order_id": request.client_order_id})
        log_event(trader, "EXIT", f"{symbol}: {record.reason} sell {record.qty} -> {outcome.status}",
                  data={"client_order_id": request.client_order_id, "reason": record.reason,
                        "filled": str(outcome.filled_qty), "avg_price": str(outcome.avg_price)})

    def liquidation_done(self) -> None:
        safety = self.safety
        safety.state = {k: v for k, v in safety.state.items() if k != "liquidate"}
        safety.save(update_fields=["state"])
        log_event(self.trader, "LIQUIDATED", f"{self.trader.name}: every position closed")

    # -- entries
    def record_entry(self, decision: EntryDecision) -> None:
        row = self.signal_rows.get(decision.signal.symbol)
        if row is None:
            return
        sizing = decision.sizing
        row.checks = decision.checks()
        row.action = Signal.Action.ENTER if sizing is not None and not sizing.skipped else Signal.Action.SKIP
        row.save(update_fields=["checks", "action"])

    def entry_order_id(self, sig) -> str:
        row = self.signal_rows.get(sig.symbol)
        return f"qw{self.trader.pk}-s{row.pk if row else self.bar_ts}-0"

    def submit_entry(self, decision: EntryDecision, request: OrderRequest, result: ScanResult) -> OrderOutcome:
        trader, sig, sizing = self.trader, decision.signal, decision.sizing
        row = self.signal_rows.get(sig.symbol)
        order = order_from_request(trader, request, purpose="entry", bar_ts=self.bar_ts, signal=row)
        audit.record("ORDER_CREATED", actor="system", trader=trader, obj=order,
                     payload={"client_order_id": request.client_order_id, "symbol": sig.symbol, "side": "buy",
                              "qty": sizing.qty, "price": sizing.entry_price, "final_score": sig.final_score})
        # The position exists from the order on (qty 0 until filled) so a resting entry is
        # booked when it fills on a later bar, and the market is not entered twice meanwhile.
        position = _open_position(trader, sig, sizing, result, self.bar_ts,
                                  model_version_id=self.overrides.get("model_version"))
        self.positions[sig.symbol] = position
        order.position = position
        order.save(update_fields=["position"])
        # A refusal is recorded by the broker (ExecutionFailure + ORDER_FAILED event + alert) [EXE-3].
        fills = self.broker.submit(order, request)
        n = _book_fills(trader, order, fills, self.positions, self.view, reason="ENTRY")
        _close_if_unfilled(order, self.positions)
        log_event(trader, "ENTRY", f"{sig.symbol}: buy {sizing.qty} @ {sizing.entry_price} (score {sig.final_score:.1f}) -> {order.status}",
                  data={"client_order_id": request.client_order_id, "filled": str(order.filled_qty),
                        "avg_price": str(order.avg_price), "caps": list(sizing.reason_codes)})
        return _outcome(order, n)


def _outcome(order: Order, fills: int) -> OrderOutcome:
    return OrderOutcome(order.status, order.filled_qty, order.avg_price, order.error, fills)


def _book_fills(trader, order: Order, fills, positions: dict[str, Position], view: MarketView, *, reason: str) -> int:
    # A resting order loaded from the database brings its own copy of the position; book against
    # the copy this tick holds, or its later marks and saves would undo the fill.
    held = positions.get(order.symbol)
    position = held if held is not None and held.pk == order.position_id else order.position or held
    for fill in fills:
        if position is None:
            raise RuntimeError(f"fill {fill.trade_id} has no position to book against")
        trade = book_fill(trader, position, fill, exit_reason=reason)
        audit.record("FILL", actor="system", trader=trader, obj=order,
                     payload={"trade_id": fill.trade_id, "symbol": fill.symbol, "side": fill.side.value,
                              "price": fill.price, "qty": fill.qty, "fee": fill.fee})
        if trade is not None:
            audit.record("POSITION_REDUCED", actor="system", trader=trader, obj=position,
                         payload={"qty": fill.qty, "pnl": trade.pnl, "reason": reason, "remaining": position.qty})
            if position.status == Position.Status.CLOSED:
                positions.pop(position.symbol, None)
                log_event(trader, "POSITION_CLOSED", f"{position.symbol} closed ({reason}), PnL {position.realised_pnl:,.0f}",
                          data={"position": position.pk, "pnl": str(position.realised_pnl)})
    return len(fills)


def _open_position(trader, sig, sizing, result: ScanResult, bar_ts: int, *,
                   model_version_id: int | None = None) -> Position:
    top_module = max(sig.module_scores.items(), key=lambda kv: kv[1])[0] if sig.module_scores else ""
    state = PositionState.open(sig.symbol, Direction.LONG, float(sizing.entry_price), float(sizing.qty),
                               float(sizing.stop_price), bar_ts + BAR)
    position = Position.objects.create(
        trader=trader, symbol=sig.symbol, direction=1, opened_ts=bar_ts + BAR, stop_price=sizing.stop_price,
        initial_stop=sizing.stop_price, highest_price=sizing.entry_price, last_price=sizing.entry_price,
        plan={"state": state.to_dict(), "sizing": sizing.to_dict()}, strategy=top_module, regime=result.regime.label.value,
        model_version_id=model_version_id,
    )
    audit.record("POSITION_OPENED", actor="system", trader=trader, obj=position,
                 payload={"symbol": sig.symbol, "stop": sizing.stop_price, "planned_qty": sizing.qty})
    return position


def _close_if_unfilled(order: Order, positions: dict[str, Position]) -> None:
    """An entry that ended with nothing filled, and whose sibling legs and re-priced successors
    are not working any more, leaves no position behind (``execution.paper.close_if_unfilled``)."""
    if close_if_unfilled(order):
        held = positions.get(order.symbol)
        if held is not None and held.pk == order.position_id:
            positions.pop(order.symbol)


def _sync_plan_qty(position: Position) -> None:
    """Keep the position manager's float view in step with the booked Decimal quantity."""
    state = position.plan.get("state")
    if state is not None:
        state["qty"] = float(position.qty)


def _mark_to_market(trader, positions: dict[str, Position], view: MarketView, *, save: bool = False) -> Decimal:
    """Cash plus open positions at the last close (in memory; ``save`` writes the marks once)."""
    value = Decimal("0")
    for symbol, position in positions.items():
        price = view.last_price(symbol)
        if math.isfinite(price):
            position.last_price = to_decimal(price)
        _sync_plan_qty(position)
        value += position.qty * (position.last_price or position.avg_entry)
        if save:
            position.save(update_fields=["last_price", "plan"])
    return trader.cash + value


def scan_inputs(view: MarketView, ema_in: dict, held: dict, profile_params: dict) -> dict:
    """Everything a scan read that the candle table does not keep: enough to recompute it
    (``manage.py explain_signal``) while the candles are retained. ``markets`` keeps the two
    MarketInfo flags the scan reads (they can change later); ``candles_checksum`` lets the
    recompute tell whether the Candle table still holds the bars this scan saw."""
    from strategies.explain import candles_checksum

    return {
        "window_bars": view.candles.n_bars, "first_ts": int(view.candles.ts[0]), "last_ts": int(view.candles.ts[-1]),
        "leader_bars": view.leader_history.n_bars if view.leader_history is not None else 0,
        "symbols": list(view.candles.symbols), "data_ts": view.data_ts,
        "ema_in": ema_in, "held": {k: int(v) for k, v in held.items()},
        "books": {s: {"ts": b.ts, "bids": b.bids.tolist(), "asks": b.asks.tolist()} for s, b in view.books.items()},
        "tickers": {s: [t.ts, t.last, t.bid, t.ask, t.value_24h, t.change_24h_pct] for s, t in view.tickers.items()},
        "profile": profile_params,
        "markets": {"caution": sorted(s for s, m in view.markets.items() if m.caution),
                    "can_short": sorted(s for s, m in view.markets.items() if m.can_short)},
        "candles_checksum": candles_checksum(view.candles, view.leader_history),
    }


def _store_scan(trader, view: MarketView, bar_ts: int, result: ScanResult, duration_ms: float, ema_in: dict,
                held: dict, profile: RiskProfile, overrides: dict | None = None, second_opinion: dict | None = None,
                regime_thresholds=None):
    from regime import services as regime_services

    regime_row = regime_services.store(view.exchange, bar_ts, result.regime)
    scan_run = ScanRun.objects.create(
        trader=trader, exchange=view.exchange, bar_ts=bar_ts, duration_ms=duration_ms, n_markets=len(result.symbols),
        n_candidates=len(result.screen.symbols), regime=regime_row,
        inputs={**scan_inputs(view, ema_in, held, trader.config_version.params),
                # The exact profile this tick ran with (AI MODE merges the live model's values).
                "effective_profile": profile.to_dict(),
                # AI MODE's scan overrides (model scan keys, bandit weights) as applied.
                "scan_overrides": overrides or {},
                # The regime thresholds in force for this tick (stored versions [RG-2]).
                **({"regime_thresholds": regime_thresholds.to_json()} if regime_thresholds is not None else {}),
                # AI MODE with a model: conflicts / strong markets against the deterministic profile [RK-4].
                **({"second_opinion": second_opinion} if second_opinion is not None else {})},
    )
    FeatureSnapshot.objects.bulk_create([
        FeatureSnapshot(scan_run=scan_run, symbol=s.symbol, bar_ts=bar_ts, price=view.last_price(s.symbol),
                        features={"modules": s.module_scores, "raw": _finite(s.raw_metrics), "final": s.final_score})
        for s in result.signals if math.isfinite(view.last_price(s.symbol))
    ])
    audit.record("SIGNALS", actor="system", trader=trader, obj=scan_run, payload={
        "bar_ts": bar_ts, "regime": result.regime.label.value, "regime_score": round(float(result.regime.regime_score), 2),
        "signals": [[s.symbol, round(float(s.final_score), 4), int(s.direction), _action(s, result)] for s in result.signals],
    })
    rows = {}
    for s in result.signals:
        rows[s.symbol] = Signal.objects.create(
            trader=trader, scan_run=scan_run, symbol=s.symbol, bar_ts=bar_ts, base_score=s.base_score,
            total_score=s.total_score, final_score=s.final_score, module_scores=_finite(s.module_scores),
            reason_codes=list(s.reason_codes), raw_metrics=_finite(s.raw_metrics), regime=result.regime.label.value,
            direction=int(s.direction), action=_action(s, result),
        )
    return scan_run, rows


def _action(signal, result: ScanResult) -> str:
    for s in result.entries:
        if s.symbol == signal.symbol:
            return Signal.Action.SKIP   # becomes ENTER once checks and sizing pass
    if any(s.symbol == signal.symbol for s in result.exits):
        return Signal.Action.EXIT
    return Signal.Action.HOLD


def _finite(data: dict) -> dict:
    return {k: (float(v) if isinstance(v, int | float) and math.isfinite(v) else None) for k, v in data.items()}


def _period_start_equity(trader, since_ts: int) -> Decimal:
    """Equity at the last snapshot before ``since_ts`` (the seed money before the first one)."""
    return (EquitySnapshot.objects.filter(trader=trader, ts__lt=since_ts).order_by("-ts").values_list("equity", flat=True).first()
            or trader.seed_money)


def _consecutive_losses(trader) -> int:
    count = 0
    for pnl in trader.trades.order_by("-id").values_list("pnl", flat=True)[:50]:
        if pnl < 0:
            count += 1
        else:
            break
    return count


def _store_guard(trader, safety: TraderSafetyState, outcome: GuardOutcome) -> None:
    """Persist the guard's verdict, log and audit every trip and release, pause or resume."""
    decision, released = outcome.decision, outcome.released
    safety.trading_state = decision.trading_state.value
    safety.trips = [t.to_dict() for t in decision.trips]
    safety.reason = "; ".join(f"{t.code}: {t.detail}" for t in decision.trips)[:300]
    safety.state = {**safety.state, "guard": decision.state.to_dict()}
    safety.consecutive_losses = outcome.inputs.consecutive_losses
    safety.save()
    for trip in decision.new_trips:
        # A trip that forces selling is critical; one that only stops new entries is a warning.
        level = EventLevel.WARN if trip.severity is Severity.HALT else EventLevel.CRITICAL
        log_event(trader, "GUARD_TRIP", f"{trip.code}: {trip.detail}", level=level, data=trip.to_dict())
        audit.record("GUARD_TRIP", actor="system", trader=trader, payload=trip.to_dict())
    for trip in decision.cleared + ((released,) if released else ()):
        log_event(trader, "GUARD_CLEARED", f"{trip.code} cleared", data=trip.to_dict())
        audit.record("GUARD_CLEARED", actor="system", trader=trader, payload=trip.to_dict())
    paused = decision.trading_state.value != "ACTIVE"
    trader.status = TraderStatus.PAUSED if paused else TraderStatus.RUNNING
    trader.status_reason = safety.reason if paused else ""
