"""One trader's tick (worker-only): scan -> guard -> manage positions -> checklist -> size ->
execute -> mark to market, every stage stored with its reasons [SPEC 4, PL-2, RK-*].

The engines decide (pure functions); this module loads their inputs, stores their outputs and
books the fills, all inside one transaction that holds the trader's row lock, so a tick never
runs twice at once and a stale tick is skipped, never replayed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from django.db import transaction
from django.utils import timezone

from execution.engine.types import MarketDataError, OrderRequest, OrderType, Side, TimeInForce
from execution.marketdata import MarketView, load_view
from execution.models import Order, Position
from execution.paper import PaperBroker, book_fill, order_from_request
from quantweb.db import quantize_money, to_decimal
from regime.engine.types import RegimeLabel
from risk.engine.checks import CheckContext, ExchangeHealth, run_checklist
from risk.engine.guard import (
    EMERGENCY_STOP,
    PANIC_REGIME,
    GuardInputs,
    GuardState,
    Severity,
    evaluate,
    period_starts,
    reset,
)
from risk.engine.portfolio import PortfolioState
from risk.engine.positions import PositionState, manage_position
from risk.engine.profiles import RiskProfile
from risk.engine.sizing import size_position
from risk.models import KillSwitch, TraderSafetyState
from strategies.engine import indicators as ind
from strategies.engine.aggregator import AggregatorParams
from strategies.engine.pipeline import ScanParams, ScanResult, scan
from strategies.engine.types import Direction
from strategies.models import FeatureSnapshot, ScanRun, Signal
from traders import audit, realtime
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

    return effective_profile(trader.profile, params=trader.config_version.params)


def scan_params(profile: RiskProfile) -> ScanParams:
    return ScanParams(
        aggregator=AggregatorParams(weights=dict(profile.module_weights), entry_threshold=profile.entry_threshold,
                                    exit_threshold=profile.exit_threshold, risk_multiplier=profile.risk_multiplier),
        profile_max_positions=profile.max_positions_cap,
    )


def run_tick(trader_id: int, bar_ts: int, *, now: float | None = None) -> TickReport:
    """Tick one trader on the closed bar ``bar_ts``. Idempotent per bar."""
    trader = Trader.objects.select_related("profile", "config_version").get(pk=trader_id)
    try:
        view = load_view(trader.exchange, bar_ts)
    except (LookupError, MarketDataError) as exc:
        log_event(trader, "TICK_SKIPPED", f"no market data for bar {bar_ts}: {exc}", level=EventLevel.WARN)
        return TickReport(trader_id, bar_ts, "no-data")
    with transaction.atomic():
        trader = (Trader.objects.select_for_update(skip_locked=True).select_related("profile", "config_version")
                  .filter(pk=trader_id).first())
        if trader is None:
            return TickReport(trader_id, bar_ts, "busy")   # another worker is ticking it
        if trader.status not in (TraderStatus.RUNNING, TraderStatus.PAUSED) or trader.removed_at:
            return TickReport(trader_id, bar_ts, "not-running")
        if trader.last_tick_ts is not None and bar_ts <= trader.last_tick_ts:
            return TickReport(trader_id, bar_ts, "stale")
        if trader.mode == TraderMode.LIVE:
            # Venue order routing (exactly-once client ids, reconciliation) is not built yet, so
            # a LIVE trader places nothing: no simulated order may ever be booked as LIVE.
            reason = "LIVE order routing is not available in this build; no order is placed"
            if trader.status_reason != reason:
                trader.status_reason = reason
                log_event(trader, "LIVE_NOT_AVAILABLE", reason, level=EventLevel.WARN)
            trader.last_tick_ts, trader.last_tick_at = bar_ts, timezone.now()
            trader.save(update_fields=["status_reason", "last_tick_ts", "last_tick_at"])
            return TickReport(trader_id, bar_ts, "live-unavailable")
        report = _tick(trader, view, bar_ts)
        trader.last_tick_ts, trader.last_tick_at = bar_ts, timezone.now()
        trader.save()
    return report


def _tick(trader: Trader, view: MarketView, bar_ts: int) -> TickReport:
    report = TickReport(trader.pk, bar_ts, "ok")
    profile = trader_profile(trader)
    safety, _ = TraderSafetyState.objects.select_for_update().get_or_create(
        trader=trader, defaults={"peak_equity": trader.seed_money})
    kill = KillSwitch.objects.filter(pk=1).first()
    positions = {p.symbol: p for p in Position.objects.select_for_update().filter(trader=trader, status=Position.Status.OPEN)}
    broker = PaperBroker(trader, view)
    now_ts = bar_ts + BAR

    # 1. Resting orders from earlier ticks meet the new bar; stale ones are cancelled [EXE-1].
    for order in Order.objects.select_for_update().filter(
            trader=trader, status__in=[Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]):
        fills = broker.advance(order)
        report.fills += _book_fills(trader, order, fills, positions, view, reason=order.purpose.upper())
        if order.status in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED) and \
                now_ts - (order.bar_ts or now_ts) >= max(profile.order_timeout_seconds, BAR):
            broker.cancel(order, "timeout: remainder cancelled")
            _close_if_unfilled(order, positions)
            log_event(trader, "ORDER_CANCELLED", f"{order.symbol} {order.side} remainder cancelled after timeout",
                      data={"client_order_id": order.client_order_id, "filled": str(order.filled_qty)})

    # 2. Scan the market.
    started = time.perf_counter()
    held = {s: Direction(p.direction) for s, p in positions.items()}
    ema_in = dict(trader.scan_state.get("ema") or {})
    result = scan(view.candles, books=view.books, tickers=view.tickers, params=scan_params(profile),
                  ema_state=trader.scan_state.get("ema"), held=held, markets=view.markets,
                  leader_history=view.leader_history)
    duration_ms = (time.perf_counter() - started) * 1000
    trader.scan_state = {**trader.scan_state, "ema": result.ema_state}
    scan_run, signal_rows = _store_scan(trader, view, bar_ts, result, duration_ms, ema_in, held, profile)

    # 3. Runtime guard [RK-4].
    equity = _mark_to_market(trader, positions, view)
    decision = _run_guard(trader, safety, profile, result, equity, kill, now_ts)

    # 4. Manage open positions [RK-5].
    atr = _atr(view, profile)
    # [SC-4]: a held market is judged by its score on the held side; a signal that turned to the
    # other side (or to none) scores 0 there, as in the aggregator's EXIT.
    scores = {s.symbol: s.final_score if held.get(s.symbol) is s.direction else 0.0 for s in result.signals}
    # A PANIC episode lasts as long as the guard's PANIC_REGIME trip, which holds through a
    # flickering label, so a winner is reduced once per episode and not at every flicker [RK-5].
    regime = RegimeLabel.PANIC if PANIC_REGIME in decision.codes else result.regime.label
    for symbol, position in list(positions.items()):
        i = view.candles.index(symbol)
        price = view.last_price(symbol)
        if not math.isfinite(price) or position.plan.get("dust"):
            continue
        state = PositionState.from_dict(position.plan["state"])
        update = manage_position(
            state, profile=profile, price=price, atr=float(atr[i]) if math.isfinite(atr[i]) else 0.0, now_ts=now_ts,
            high=float(view.candles.high[i, -1]), low=float(view.candles.low[i, -1]), score=scores.get(symbol),
            regime=regime, liquidate_all=decision.liquidate_all or bool(safety.state.get("liquidate")),
            reduce_fraction=decision.reduce_fraction, reduce_code=decision.reduce_code or "GUARD_REDUCE",
            market=view.markets[symbol],
        )
        position.plan = {**position.plan, "state": update.state.to_dict()}
        position.stop_price = to_decimal(update.state.stop)
        position.highest_price = to_decimal(update.state.highest_price)
        position.save(update_fields=["plan", "stop_price", "highest_price"])
        for n, intent in enumerate(update.intents):
            qty = min(intent.qty, position.qty)
            if qty <= 0:
                continue
            request = OrderRequest(client_order_id=f"qw{trader.pk}-x{position.pk}-{bar_ts}-{n}", symbol=symbol,
                                   side=intent.side, type=OrderType.MARKET, qty=qty)
            order = order_from_request(trader, request, purpose="exit", bar_ts=bar_ts, position=position)
            fills = broker.submit(order, request)
            report.fills += _book_fills(trader, order, fills, positions, view, reason=intent.reason_code)
            report.exits += 1
            if order.status == Order.Status.REJECTED and order.error == "below_min_notional":
                # Dust: worth less than the venue's minimum order, it cannot be sold. It stays on
                # the books (and in equity) but is no longer managed, so it cannot loop.
                position.plan = {**position.plan, "dust": True}
                position.save(update_fields=["plan"])
                log_event(trader, "DUST", f"{symbol}: {position.qty} left is below the minimum order; kept, not managed",
                          level=EventLevel.WARN, data={"position": position.pk})
            elif order.status != Order.Status.FILLED and position.qty > 0:
                # The book could not take it all (or the venue refused): let the manager ask again
                # next tick instead of leaving the position marked as closing forever.
                _reopen_for_exit(position)
                log_event(trader, "EXIT_INCOMPLETE", f"{symbol}: {intent.reason_code} filled {order.filled_qty} of {qty} "
                          f"({order.status}{': ' + order.error if order.error else ''}); retrying next tick",
                          level=EventLevel.WARN, data={"client_order_id": request.client_order_id})
            log_event(trader, "EXIT", f"{symbol}: {intent.reason_code} sell {qty} -> {order.status}",
                      data={"client_order_id": request.client_order_id, "reason": intent.reason_code,
                            "filled": str(order.filled_qty), "avg_price": str(order.avg_price)})
    if safety.state.get("liquidate") and not positions:
        safety.state = {k: v for k, v in safety.state.items() if k != "liquidate"}
        safety.save(update_fields=["state"])
        log_event(trader, "LIQUIDATED", f"{trader.name}: every position closed")

    # 5. Entries: checklist, sizing, execution [RK-1], [RK-2], [EXE-1].
    equity = _mark_to_market(trader, positions, view)
    for sig in result.entries:
        row = signal_rows.get(sig.symbol)
        if sig.symbol in positions:
            continue
        portfolio = _portfolio(trader, positions, equity)
        returns = _returns(view)
        i = view.candles.index(sig.symbol)
        open_idx = [view.candles.index(s) for s in positions]
        ctx = CheckContext(
            signal=sig, profile=profile, regime=result.regime, market=view.markets[sig.symbol],
            book=view.books.get(sig.symbol), portfolio=portfolio, guard=decision, now_ts=now_ts,
            health=ExchangeHealth(data_age_seconds=max(0.0, now_ts - view.data_ts)),
            candidate_returns=returns[i], open_returns=returns[open_idx] if open_idx else None,
        )
        sizing = None
        checklist = run_checklist(ctx)
        if checklist.passed:
            sizing = size_position(
                profile=profile, equity=float(equity), cash_available=float(trader.cash),
                entry_price=float(view.books[sig.symbol].best_ask), atr=float(atr[i]), direction=sig.direction,
                market=view.markets[sig.symbol], book=view.books.get(sig.symbol),
                remaining_risk_budget=portfolio.remaining_risk_budget(profile),
                drawdown=decision.drawdown,
            )
        if row is not None:
            row.checks = [c.to_dict() for c in checklist.results] + ([{"code": "SIZING", "passed": not sizing.skipped, "detail": sizing.to_dict()}] if sizing else [])
            row.action = Signal.Action.ENTER if sizing is not None and not sizing.skipped else Signal.Action.SKIP
            row.save(update_fields=["checks", "action"])
        if not checklist.passed or sizing is None or sizing.skipped:
            continue
        request = OrderRequest(client_order_id=f"qw{trader.pk}-s{row.pk if row else bar_ts}-0", symbol=sig.symbol,
                               side=Side.BUY if sig.direction is Direction.LONG else Side.SELL, type=OrderType.LIMIT,
                               qty=sizing.qty, price=sizing.entry_price, tif=TimeInForce.GTC)
        if request.side is Side.SELL:
            continue  # spot venue: a short entry needs a perpetual venue (ccxt swap)
        order = order_from_request(trader, request, purpose="entry", bar_ts=bar_ts, signal=row)
        audit.record("ORDER_CREATED", actor="system", trader=trader, obj=order,
                     payload={"client_order_id": request.client_order_id, "symbol": sig.symbol, "side": "buy",
                              "qty": sizing.qty, "price": sizing.entry_price, "final_score": sig.final_score})
        # The position exists from the order on (qty 0 until filled) so a resting entry is
        # booked when it fills on a later bar, and the market is not entered twice meanwhile.
        position = _open_position(trader, sig, sizing, result, bar_ts)
        positions[sig.symbol] = position
        order.position = position
        order.save(update_fields=["position"])
        fills = broker.submit(order, request)
        if order.status == Order.Status.REJECTED:
            log_event(trader, "ORDER_REJECTED", f"{sig.symbol}: entry rejected ({order.error})", level=EventLevel.WARN,
                      data={"client_order_id": request.client_order_id, "error": order.error})
        _close_if_unfilled(order, positions)
        report.fills += _book_fills(trader, order, fills, positions, view, reason="ENTRY")
        report.entries += 1
        log_event(trader, "ENTRY", f"{sig.symbol}: buy {sizing.qty} @ {sizing.entry_price} (score {sig.final_score:.1f}) -> {order.status}",
                  data={"client_order_id": request.client_order_id, "filled": str(order.filled_qty),
                        "avg_price": str(order.avg_price), "caps": list(sizing.reason_codes)})
        equity = _mark_to_market(trader, positions, view)

    # 6. Books, equity curve, action log.
    equity = _mark_to_market(trader, positions, view, save=True)
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
              data={"scan_run": scan_run.pk, "equity": str(trader.equity), "duration_ms": round(duration_ms, 1)})
    return report


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


def _open_position(trader, sig, sizing, result: ScanResult, bar_ts: int) -> Position:
    top_module = max(sig.module_scores.items(), key=lambda kv: kv[1])[0] if sig.module_scores else ""
    state = PositionState.open(sig.symbol, Direction.LONG, float(sizing.entry_price), float(sizing.qty),
                               float(sizing.stop_price), bar_ts + BAR)
    position = Position.objects.create(
        trader=trader, symbol=sig.symbol, direction=1, opened_ts=bar_ts + BAR, stop_price=sizing.stop_price,
        initial_stop=sizing.stop_price, highest_price=sizing.entry_price, last_price=sizing.entry_price,
        plan={"state": state.to_dict(), "sizing": sizing.to_dict()}, strategy=top_module, regime=result.regime.label.value,
    )
    audit.record("POSITION_OPENED", actor="system", trader=trader, obj=position,
                 payload={"symbol": sig.symbol, "stop": sizing.stop_price, "planned_qty": sizing.qty})
    return position


def _reopen_for_exit(position: Position) -> None:
    state = dict(position.plan.get("state") or {})
    state["closing"] = False
    state["qty"] = float(position.qty)
    position.plan = {**position.plan, "state": state}
    position.save(update_fields=["plan"])


def _close_if_unfilled(order: Order, positions: dict[str, Position]) -> None:
    """An entry that ended with nothing filled leaves no position behind."""
    position = order.position
    if order.purpose != "entry" or position is None or position.qty > 0:
        return
    if order.status not in (Order.Status.CANCELLED, Order.Status.REJECTED, Order.Status.EXPIRED):
        return
    position.status, position.closed_ts = Position.Status.CLOSED, order.bar_ts
    position.plan = {**position.plan, "never_filled": True}
    position.save(update_fields=["status", "closed_ts", "plan"])
    positions.pop(position.symbol, None)


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


def _portfolio(trader, positions: dict[str, Position], equity: Decimal) -> PortfolioState:
    states = tuple(PositionState.from_dict(p.plan["state"]) for p in positions.values() if p.qty > 0)
    return PortfolioState(equity=float(equity), cash=float(trader.cash), positions=states)


def _atr(view: MarketView, profile: RiskProfile) -> np.ndarray:
    from regime.engine.features import filled_bars, resample_end_aligned

    bars_1m, _ = filled_bars(view.candles)
    bars = resample_end_aligned(bars_1m, 5)
    return ind.atr(bars.high, bars.low, bars.close, profile.atr_period)[:, -1]


def _returns(view: MarketView) -> np.ndarray:
    from regime.engine.features import filled_bars, resample_end_aligned

    bars = resample_end_aligned(filled_bars(view.candles)[0], 5)
    close = bars.close
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.diff(np.log(close), axis=1)


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
                held: dict, profile: RiskProfile):
    from regime import services as regime_services

    regime_row = regime_services.store(view.exchange, bar_ts, result.regime)
    scan_run = ScanRun.objects.create(
        trader=trader, exchange=view.exchange, bar_ts=bar_ts, duration_ms=duration_ms, n_markets=len(result.symbols),
        n_candidates=len(result.screen.symbols), regime=regime_row,
        inputs={**scan_inputs(view, ema_in, held, trader.config_version.params),
                # The exact profile this tick ran with (AI MODE merges the live model's values).
                "effective_profile": profile.to_dict()},
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


def _period_return(trader, since_ts: int, equity: Decimal) -> float:
    start = (EquitySnapshot.objects.filter(trader=trader, ts__lt=since_ts).order_by("-ts").values_list("equity", flat=True).first()
             or trader.seed_money)
    return float((equity - start) / start) if start else 0.0


def _consecutive_losses(trader) -> int:
    count = 0
    for pnl in trader.trades.order_by("-id").values_list("pnl", flat=True)[:50]:
        if pnl < 0:
            count += 1
        else:
            break
    return count


def _run_guard(trader, safety: TraderSafetyState, profile: RiskProfile, result: ScanResult, equity: Decimal,
               kill, now_ts: int):
    starts = period_starts(now_ts)
    inputs = GuardInputs(
        now_ts=now_ts, equity=float(equity),
        day_return=_period_return(trader, starts["day"], equity),
        week_return=_period_return(trader, starts["week"], equity),
        month_return=_period_return(trader, starts["month"], equity),
        consecutive_losses=_consecutive_losses(trader),
        regime=result.regime.label,
        master_kill=bool(kill and kill.engaged),
        emergency_stop=bool(safety.state.get("liquidate")),
    )
    previous = GuardState.from_dict(safety.state.get("guard"))
    released = previous.trip(EMERGENCY_STOP)
    if released is not None and not inputs.emergency_stop and not inputs.master_kill:
        # The emergency stop clears by hand only [RK-4]: the operator releasing the master switch,
        # once this trader's liquidation is done, is that reset.
        previous = reset(previous, equity=inputs.equity, consecutive_losses=inputs.consecutive_losses,
                         codes=(EMERGENCY_STOP,))
    else:
        released = None
    decision = evaluate(inputs, profile, previous)
    safety.trading_state = decision.trading_state.value
    safety.trips = [t.to_dict() for t in decision.trips]
    safety.reason = "; ".join(f"{t.code}: {t.detail}" for t in decision.trips)[:300]
    safety.state = {**safety.state, "guard": decision.state.to_dict()}
    safety.consecutive_losses = inputs.consecutive_losses
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
    return decision

