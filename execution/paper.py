"""PAPER execution [EXE-4]: the same fill model as the simulator and backtests, run against the
collected books and bars, with every order and fill stored and booked to the trader.

Both brokers (``PaperBroker`` here, ``execution.live.LiveBroker``) share ``Broker``: the same
execution policy [EXE-1] (``execution.engine.policy``: legs, offsets, cancel/replace, market
fallback), the same failure handling [EXE-3] (``execution.services.record_failure``, the market
blacklist) and the same booking helpers, so PAPER and LIVE execute alike. Without a policy a
broker sends exactly the order it is given (the behaviour before policies existed).

Broker interface (what a tick calls, inside its transaction, holding the trader row lock):

* ``submit(order, request) -> fills``: execute a new order (the ``Order`` row exists already);
  with a policy an entry may become several legs (extra ``Order`` rows, same position).
* ``advance(order) -> fills``: bring a resting order up to date (new bar / venue state) and,
  once it timed out, apply the policy's re-price or market fallback (a successor ``Order`` row,
  same position). A policy ``CANCEL`` is left to the caller's own timeout (the tick cancels the
  rest and closes an entry that got nothing), with the policy's reason kept on the order.
* ``cancel(order, reason)``: cancel what is left.

Fills returned by ``submit`` and ``advance`` are stored as ``Fill`` rows by the broker and must
be booked by the caller (``book_fill``). Worker-only (never imported by web code).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db.models import Sum

from execution.engine.accounting import Book, apply_fill
from execution.engine.fillmodel import Bar, FillConfig, FillModel
from execution.engine.policy import (
    Decision,
    ExecutionPolicy,
    Step,
    VenueCapabilities,
    WorkingOrder,
    on_timeout,
    plan_entry,
)
from execution.engine.types import Fill as EngineFill
from execution.engine.types import (
    Liquidity,
    OrderRequest,
    OrderState,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from execution.marketdata import MarketView
from execution.models import Fill, Order, Position, Trade

logger = logging.getLogger(__name__)
BAR = 60
#: Not final: working, queued, or (LIVE) of unknown outcome, which may still be on the venue.
OPEN_STATUSES = (Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED, Order.Status.UNKNOWN)
#: The fill model has every order type (see ``SimulatedVenue.capabilities``).
FILL_MODEL_CAPABILITIES = VenueCapabilities(post_only=True, ioc=True, fok=True, market_buy_by_qty=True,
                                            market_buy_by_quote=True, stop_orders=False, client_id_max_len=64)
ZERO = Decimal("0")


def order_from_request(trader, request: OrderRequest, *, purpose: str, bar_ts: int, signal=None,
                       position=None, parent: Order | None = None, execution: dict | None = None) -> Order:
    """The ``Order`` row of ``request``, saved before any venue sees it [EXE-2]."""
    if execution is None:
        execution = {"successors": 0}
        if request.price is not None:
            execution["decision_price"] = str(request.price)
    return Order.objects.create(
        trader=trader, signal=signal, position=position, client_order_id=request.client_order_id, mode=trader.mode,
        symbol=request.symbol, side=request.side.value, type=request.type.value, tif=request.tif.value,
        purpose=purpose, price=request.price, qty=request.qty, quote_amount=request.quote_amount, bar_ts=bar_ts,
        parent=parent, execution=execution,
    )


def request_of(order: Order) -> OrderRequest:
    """The venue request a stored order stands for (the inverse of ``order_from_request``)."""
    return OrderRequest(client_order_id=order.client_order_id, symbol=order.symbol, side=Side(order.side),
                        type=OrderType(order.type), qty=order.qty, price=order.price,
                        quote_amount=order.quote_amount, tif=TimeInForce(order.tif))


def state_of(order: Order) -> OrderState:
    """Rebuild the engine's view of a stored order (with its fills, so trade ids continue)."""
    fills = [
        EngineFill(order.client_order_id, f.symbol, Side(f.side), f.price, f.qty, f.fee, f.ts, Liquidity(f.liquidity), f.trade_id)
        for f in order.fills.order_by("id")
    ]
    return OrderState(
        client_order_id=order.client_order_id, symbol=order.symbol, side=Side(order.side), type=OrderType(order.type),
        status=OrderStatus(order.status), qty=order.qty, price=order.price, quote_amount=order.quote_amount,
        exchange_order_id=order.exchange_order_id, filled_qty=order.filled_qty, avg_price=order.avg_price,
        fee=order.fee, ts=order.bar_ts or 0, error=order.error, fills=fills, tif=TimeInForce(order.tif),
    )


class Broker:
    """What PAPER and LIVE share: the execution policy and failure handling (module docstring).

    ``now_ts`` is the close of the bar being ticked (``view.bar_ts + 60``); the policy measures
    an order's age from its ``bar_ts`` like the tick's own timeout, with at least one bar.
    """

    mode = "PAPER"

    def __init__(self, trader, view: MarketView, *, policy: ExecutionPolicy | None = None,
                 capabilities: VenueCapabilities | None = None) -> None:
        self.trader = trader
        self.view = view
        self.policy = policy
        self.capabilities = capabilities or FILL_MODEL_CAPABILITIES
        self.now_ts = view.bar_ts + BAR
        self._advanced: set[int] = set()

    def advance(self, order: Order) -> list[EngineFill]:
        """Bring ``order`` and its open sibling legs (same entry, same position) up to date, so
        that when the caller then cancels one leg its position already holds every leg's fills
        of this bar. A leg already advanced by this broker is only refreshed (its row may have
        changed under the caller's copy)."""
        if order.pk in self._advanced:
            order.refresh_from_db()
            return []
        group = [order]
        if order.purpose == "entry" and order.position_id is not None:
            group += list(Order.objects.select_for_update().filter(
                position_id=order.position_id, purpose="entry",
                status__in=[Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]).exclude(pk=order.pk)
                .exclude(bar_ts=self.view.bar_ts).order_by("id"))
        fills: list[EngineFill] = []
        for row in group:
            if row.pk in self._advanced:
                continue
            self._advanced.add(row.pk)
            fills += self.advance_one(row)
        return fills

    def advance_one(self, order: Order) -> list[EngineFill]:
        raise NotImplementedError

    # -- policy -------------------------------------------------------------------------------
    def plan(self, order: Order, request: OrderRequest) -> list[tuple[Order, OrderRequest]]:
        """The legs of ``order``: itself, re-priced by the policy, plus one new row per extra leg."""
        book = self.view.books.get(request.symbol)
        if self.policy is None or order.purpose != "entry" or book is None:
            return [(order, request)]
        legs = plan_entry(request, book, self.view.markets[request.symbol], self.policy, self.capabilities,
                          self.view.data_ts)
        decision_price = str(request.price) if request.price is not None else None
        out = []
        for k, leg in enumerate(legs):
            execution = {"leg": k, "successors": 0, "decision_price": decision_price,
                         "policy": self.policy.to_dict()}
            if k == 0:
                order.price, order.qty, order.tif, order.execution = leg.price, leg.qty, leg.tif.value, execution
                order.save(update_fields=["price", "qty", "tif", "execution", "updated_at"])
                row = order
            else:
                row = order_from_request(self.trader, leg, purpose=order.purpose, bar_ts=order.bar_ts,
                                         signal=order.signal, position=order.position, execution=execution)
            out.append((row, leg))
        return out

    def working(self, order: Order) -> WorkingOrder:
        ex = order.execution or {}
        decision = ex.get("decision_price") or order.price or order.avg_price
        return WorkingOrder(
            client_order_id=order.client_order_id, symbol=order.symbol, side=Side(order.side),
            qty=order.qty or Decimal(0), filled_qty=order.filled_qty, price=order.price,
            age_seconds=self.now_ts - (order.bar_ts if order.bar_ts is not None else self.now_ts),
            successors=int(ex.get("successors", 0)), decision_price=Decimal(str(decision)),
            tif=TimeInForce(order.tif), fallback=bool(ex.get("fallback")))

    def decide(self, order: Order) -> Decision:
        """The policy's step for a resting entry (``WAIT`` without a policy or a book)."""
        book = self.view.books.get(order.symbol)
        if (self.policy is None or order.purpose != "entry" or book is None or order.qty is None
                or order.status not in (Order.Status.OPEN, Order.Status.PARTIALLY_FILLED)):
            return Decision(Step.WAIT, "")
        decision = on_timeout(self.working(order), book, self.view.markets[order.symbol], self.policy,
                              self.capabilities, self.view.data_ts, min_age_seconds=BAR)
        if decision.step is Step.CANCEL:
            order.execution = {**(order.execution or {}), "cancel_reason": decision.reason}
            order.save(update_fields=["execution", "updated_at"])
        return decision

    def successor(self, order: Order, decision: Decision) -> Order:
        """The row of the order that continues ``order``'s chain (a re-price or the fallback)."""
        assert decision.request is not None
        ex = dict(order.execution or {})
        ex.update(successors=int(ex.get("successors", 0)) + 1, step=decision.step.value, reason=decision.reason,
                  fallback=decision.step is Step.FALLBACK)
        ex.pop("pending", None)
        ex.pop("cancel_reason", None)
        child = order_from_request(self.trader, decision.request, purpose=order.purpose, bar_ts=self.view.bar_ts,
                                   signal=order.signal, position=order.position, parent=order, execution=ex)
        self._advanced.add(child.pk)       # it met this bar's book already; the next bar is its first
        return child

    # -- failures [EXE-3] -------------------------------------------------------------------------
    def failed(self, order: Order, code: str, detail: str) -> None:
        from execution.services import record_failure

        record_failure(self.trader, order.symbol, code, detail, now=self.now_ts, order=order)

    def blacklisted(self, order: Order) -> bool:
        from execution.services import is_blacklisted

        return order.purpose == "entry" and is_blacklisted(self.trader, order.symbol, self.now_ts)


class PaperBroker(Broker):
    """PAPER: the fill model against the collected book (submit) and the newest bar (advance)."""

    def __init__(self, trader, view: MarketView, config: FillConfig | None = None, *,
                 policy: ExecutionPolicy | None = None) -> None:
        super().__init__(trader, view, policy=policy, capabilities=FILL_MODEL_CAPABILITIES)
        self.model = FillModel(config or FillConfig())

    def submit(self, order: Order, request: OrderRequest) -> list[EngineFill]:
        """Execute a new order (its legs) against the current book; returns the fills it got."""
        fills: list[EngineFill] = []
        for row, leg in self.plan(order, request):
            if self.blacklisted(row):
                _reject(row, "MARKET_BLACKLISTED")
                continue
            fills += self._execute(row, leg)
        return fills

    def _execute(self, order: Order, request: OrderRequest) -> list[EngineFill]:
        state = self.model.submit(request, self.view.books[request.symbol], self.view.data_ts,
                                  self.view.markets[request.symbol])
        fills = self._sync(order, state, already=0)
        if order.status == Order.Status.REJECTED:
            self.failed(order, "VENUE_REJECTED", order.error)
        return fills

    def advance_one(self, order: Order) -> list[EngineFill]:
        """Give a resting order the newest bar: it fills only if the market traded through it.
        Then, once it timed out, the policy's re-price or market fallback."""
        state = state_of(order)
        before = len(state.fills)
        i = self.view.candles.index(order.symbol)
        bar = Bar.from_candles(self.view.candles, i, -1, 60)
        self.model.on_bar(state, bar, self.view.books.get(order.symbol), self.view.markets[order.symbol])
        fills = self._sync(order, state, already=before)
        decision = self.decide(order)
        if decision.step in (Step.REPLACE, Step.FALLBACK):
            self.model.cancel(state, self.now_ts)
            child = self.successor(order, decision)
            _finish(order, Order.Status.CANCELLED, f"{decision.reason}: continued by {child.client_order_id}")
            fills += self._execute(child, decision.request)
        return fills

    def cancel(self, order: Order, reason: str) -> None:
        order.refresh_from_db(fields=["status", "filled_qty", "error", "execution"])
        if order.status in OPEN_STATUSES:
            why = (order.execution or {}).get("cancel_reason")
            _finish(order, Order.Status.CANCELLED, f"{reason} ({why})" if why else reason)

    def _sync(self, order: Order, state: OrderState, already: int) -> list[EngineFill]:
        new = state.fills[already:]
        for f in new:
            Fill.objects.create(order=order, trader=self.trader, trade_id=f.trade_id, symbol=f.symbol, side=f.side.value,
                                price=f.price, qty=f.qty, fee=f.fee, liquidity=f.liquidity.value, ts=f.ts)
        order.status = state.status.value
        order.filled_qty, order.avg_price, order.fee = state.filled_qty, state.avg_price, state.fee
        order.error = state.error[:300]
        order.save(update_fields=["status", "filled_qty", "avg_price", "fee", "error", "updated_at"])
        return list(new)


def _finish(order: Order, status: str, error: str) -> None:
    order.status, order.error = status, error[:300]
    order.save(update_fields=["status", "error", "updated_at"])


def _reject(order: Order, code: str) -> None:
    """Refused before any venue saw it (blacklisted market, LIVE no longer allowed...)."""
    _finish(order, Order.Status.REJECTED, code)


def book_of(position: Position) -> Book:
    return Book(qty=position.qty, cost=position.cost, entry_notional=position.avg_entry * position.qty,
                realised=position.realised_pnl, fees=position.fees, direction=position.direction)


def book_fill(trader, position: Position, fill: EngineFill, *, exit_reason: str = "") -> Trade | None:
    """Apply one fill to the position and the trader's cash; a reducing fill writes a Trade.

    The trader row must be locked by the caller. Returns the Trade for an exit fill.
    """
    result = apply_fill(book_of(position), fill)
    book = result.book
    position.qty, position.cost, position.fees = book.qty, book.cost, book.fees
    position.avg_entry = book.avg_entry if book.qty else position.avg_entry
    position.realised_pnl = book.realised
    trader.cash += result.cash_delta
    trader.fees_paid += fill.fee
    trade = None
    if fill.side is Side.SELL:
        trader.realised_pnl += result.realised
        trade = Trade.objects.create(
            trader=trader, position=position, symbol=position.symbol, direction=position.direction, mode=trader.mode,
            qty=fill.qty, entry_price=position.avg_entry, exit_price=fill.price, entry_ts=position.opened_ts,
            exit_ts=fill.ts, pnl=result.realised, fees=fill.fee + (result.cost_closed - position.avg_entry * fill.qty),
            exit_reason=exit_reason or "EXIT", strategy=position.strategy, regime=position.regime,
            model_version_id=position.model_version_id,
        )
        if book.qty == 0:
            position.status, position.closed_ts = Position.Status.CLOSED, fill.ts
    position.save()
    return trade


# -- booking outside a tick (LIVE send phase and reconciliation) -----------------------------------

def stored_fills(order: Order) -> list[EngineFill]:
    return [EngineFill(order.client_order_id, f.symbol, Side(f.side), f.price, f.qty, f.fee, f.ts,
                       Liquidity(f.liquidity), f.trade_id) for f in order.fills.order_by("id")]


def store_fill(trader, order: Order, fill: EngineFill) -> None:
    Fill.objects.create(order=order, trader=trader, trade_id=fill.trade_id, symbol=fill.symbol, side=fill.side.value,
                        price=fill.price, qty=fill.qty, fee=fill.fee, liquidity=fill.liquidity.value, ts=fill.ts)


def book_order_fills(trader, order: Order, fills: list[EngineFill], *, reason: str) -> int:
    """Book fills of ``order`` (already stored as ``Fill`` rows) against its position, with the
    audit rows and events the tick writes. The caller holds the trader row lock and saves the
    trader; the position is loaded fresh (locked) here."""
    from traders import audit
    from traders.services import log_event

    if not fills:
        return 0
    if order.position_id is None:
        raise RuntimeError(f"fills of {order.client_order_id} have no position to book against")
    position = Position.objects.select_for_update().get(pk=order.position_id)
    for fill in fills:
        trade = book_fill(trader, position, fill, exit_reason=reason)
        audit.record("FILL", actor="system", trader=trader, obj=order,
                     payload={"trade_id": fill.trade_id, "symbol": fill.symbol, "side": fill.side.value,
                              "price": fill.price, "qty": fill.qty, "fee": fill.fee})
        if trade is not None:
            audit.record("POSITION_REDUCED", actor="system", trader=trader, obj=position,
                         payload={"qty": fill.qty, "pnl": trade.pnl, "reason": reason, "remaining": position.qty})
            if position.status == Position.Status.CLOSED:
                log_event(trader, "POSITION_CLOSED", f"{position.symbol} closed ({reason}), PnL "
                          f"{position.realised_pnl:,.0f}", data={"position": position.pk, "pnl": str(position.realised_pnl)})
    sync_plan_qty(position)
    return len(fills)


def sync_plan_qty(position: Position) -> None:
    """Keep the position manager's float view in step with the booked Decimal quantity."""
    state = position.plan.get("state")
    if state is not None and state.get("qty") != float(position.qty):
        position.plan = {**position.plan, "state": {**state, "qty": float(position.qty)}}
        position.save(update_fields=["plan"])


def close_if_unfilled(order: Order) -> bool:
    """An entry that ended with nothing filled leaves no position behind (``True`` if closed)."""
    if order.purpose != "entry" or order.position_id is None:
        return False
    if order.status not in (Order.Status.CANCELLED, Order.Status.REJECTED, Order.Status.EXPIRED):
        return False
    position = Position.objects.select_for_update().get(pk=order.position_id)
    pending = Order.objects.filter(position=position, purpose="entry", status__in=OPEN_STATUSES).exclude(pk=order.pk)
    if position.qty > 0 or position.status != Position.Status.OPEN or pending.exists():
        return False
    position.status, position.closed_ts = Position.Status.CLOSED, order.bar_ts
    position.plan = {**position.plan, "never_filled": True}
    position.save(update_fields=["status", "closed_ts", "plan"])
    return True


def reopen_for_exit(position: Position) -> None:
    """An exit that ended short: the position manager may ask again next tick."""
    state = dict(position.plan.get("state") or {})
    state["closing"] = False
    state["qty"] = float(position.qty)
    position.plan = {**position.plan, "state": state}
    position.save(update_fields=["plan"])


def pending_sell_qty(position: Position, *, exclude: Order | None = None) -> Decimal:
    """Unfilled quantity of a position's sell orders that are working (sent and not final; not
    resting stops, not orders still queued behind this one)."""
    rows = Order.objects.filter(position=position, side=Side.SELL.value, status__in=OPEN_STATUSES).exclude(
        purpose="stop").exclude(status=Order.Status.NEW, submitted_at__isnull=True)
    if exclude is not None:
        rows = rows.exclude(pk=exclude.pk)
    agg = rows.aggregate(q=Sum("qty"), f=Sum("filled_qty"))
    return (agg["q"] or Decimal(0)) - (agg["f"] or Decimal(0))
