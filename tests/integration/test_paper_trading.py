"""End to end on the embedded defaults: two PAPER traders run the real pipeline (sim exchange
collector -> scan -> guard -> checklist -> sizing -> fill model -> books) tick by tick, and
every order, fill, position, PnL figure, event and audit row they produced is checked.

Exactness: PostgreSQL and MariaDB store NUMERIC exactly, so there the books must equal the
fills to the last digit. SQLite keeps 15 significant digits in DECIMAL columns (Django
documents this), so on SQLite sums over a 10-million seed agree to 1e-6.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Sum

from execution.marketdata import latest_bar
from execution.models import Fill, Order, Position, Trade
from strategies.models import Signal, StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import staff_user
from traders import audit, tasks
from traders.models import EquitySnapshot, Event, IntentKind, TraderStatus
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

SEED = Decimal("10000000")
TICKS = 70
T0 = 1_790_000_000.0


def close_enough(a: Decimal, b: Decimal) -> bool:
    if connection.vendor == "sqlite":
        return abs(a - b) <= Decimal("0.000001")
    return a == b


@pytest.fixture
def sim_settings(settings):
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    return settings


@pytest.fixture
def traders_running(db, sim_settings):
    user = staff_user(username="boss")
    profile = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(profile).to_dict()
    params.pop("name")
    params.update(entry_threshold=30.0, exit_threshold=15.0)  # an active profile, edited the normal way
    update_profile(profile=profile, params=params, user=user, comment="integration test")
    profile.refresh_from_db()
    alpha = create_trader(user=user, name="alpha", profile=profile, seed_money=SEED)
    beta = create_trader(user=user, name="beta", profile=profile, seed_money=SEED)
    for trader in (alpha, beta):
        request_intent(user=user, kind=IntentKind.START, trader=trader)
    assert process_intents() == 2
    now = T0
    tasks.collect_market_data(now)
    outcomes = []
    for _ in range(TICKS):
        now += 60
        tasks.collect_market_data(now)
        bar = latest_bar("sim")
        outcomes.append((run_tick(alpha.pk, bar).outcome, run_tick(beta.pk, bar).outcome))
    alpha.refresh_from_db()
    beta.refresh_from_db()
    return alpha, beta, outcomes, bar


def test_paper_traders_trade_and_books_agree_with_fills(traders_running):
    alpha, beta, outcomes, last_bar = traders_running
    assert outcomes == [("ok", "ok")] * TICKS
    assert alpha.status == TraderStatus.RUNNING and alpha.last_tick_ts == last_bar

    for trader in (alpha, beta):
        orders = Order.objects.filter(trader=trader)
        fills = Fill.objects.filter(trader=trader)
        assert orders.filter(purpose="entry").exists() and orders.filter(purpose="exit").exists()
        assert Trade.objects.filter(trader=trader).exists()
        # Every order's totals equal its fills; ids are derived from (trader, signal/position, leg).
        for order in orders:
            agg = order.fills.aggregate(q=Sum("qty"), f=Sum("fee"))
            assert order.filled_qty == (agg["q"] or 0)
            assert order.fee == (agg["f"] or 0)
            assert order.client_order_id.startswith(f"qw{trader.pk}-")
            if order.purpose == "entry":
                assert order.signal_id is not None and order.signal.action == Signal.Action.ENTER
        # Positions hold exactly what their fills bought minus what they sold.
        for position in Position.objects.filter(trader=trader):
            bought = position.orders.filter(side="buy").aggregate(q=Sum("filled_qty"))["q"] or 0
            sold = position.orders.filter(side="sell").aggregate(q=Sum("filled_qty"))["q"] or 0
            assert position.qty == bought - sold
            assert (position.status == Position.Status.CLOSED) == (position.qty == 0)
        # Cash, fees and realised PnL follow from the fills.
        buys = sum((f.price * f.qty + f.fee for f in fills.filter(side="buy")), Decimal(0))
        sells = sum((f.price * f.qty - f.fee for f in fills.filter(side="sell")), Decimal(0))
        assert close_enough(trader.cash, SEED - buys + sells)
        assert close_enough(trader.fees_paid, fills.aggregate(f=Sum("fee"))["f"])
        assert close_enough(trader.realised_pnl, Trade.objects.filter(trader=trader).aggregate(p=Sum("pnl"))["p"])
        open_value = sum((p.qty * p.last_price for p in Position.objects.filter(trader=trader, status="open")), Decimal(0))
        assert close_enough(trader.equity, trader.cash + open_value)
        # Equity curve: one point per tick; action log: one TICK per tick, one ENTRY per entry order.
        assert EquitySnapshot.objects.filter(trader=trader).count() == TICKS
        assert Event.objects.filter(trader=trader, kind="TICK").count() == TICKS
        # (One ENTRY per entry decision: split legs and re-priced successors are its children.)
        entry_ids = set(orders.filter(purpose="entry", parent__isnull=True).exclude(execution__leg__gt=0)
                        .values_list("client_order_id", flat=True))
        logged = {e.data["client_order_id"] for e in Event.objects.filter(trader=trader, kind="ENTRY")}
        assert logged == entry_ids
        # Audit: one FILL row per fill, the chain intact.
        assert audit.filtered(trader_id=trader.pk, kind="FILL").count() == fills.count()

    assert audit.verify_chain() is None
    check_a_tick_is_never_replayed(alpha, last_bar)
    check_signals_explain_every_entry(alpha)


def test_identical_traders_get_identical_fills(traders_running):
    """Same profile, same market, separate books: duplicate buys across traders are allowed and
    each trader's fills are its own (the fill model is deterministic)."""
    alpha, beta, _, _ = traders_running

    def tape(trader):
        return [(f.symbol, f.side, f.price, f.qty, f.fee) for f in Fill.objects.filter(trader=trader).order_by("ts", "id")]

    assert tape(alpha) == tape(beta) != []
    assert alpha.cash == beta.cash and alpha.equity == beta.equity
    assert set(Order.objects.filter(trader=alpha).values_list("client_order_id", flat=True)).isdisjoint(
        Order.objects.filter(trader=beta).values_list("client_order_id", flat=True))


def check_a_tick_is_never_replayed(alpha, last_bar):
    before = (Order.objects.count(), Fill.objects.count(), EquitySnapshot.objects.count())
    assert run_tick(alpha.pk, last_bar).outcome == "stale"
    assert run_tick(alpha.pk, last_bar - 60).outcome == "stale"
    assert (Order.objects.count(), Fill.objects.count(), EquitySnapshot.objects.count()) == before


def check_signals_explain_every_entry(alpha):
    entered = Signal.objects.filter(trader=alpha, action=Signal.Action.ENTER)
    assert entered.exists()
    for signal in entered:
        assert signal.final_score >= 30.0
        assert [c["passed"] for c in signal.checks if c["code"] != "SIZING"] == [True] * (len(signal.checks) - 1)
        assert signal.module_scores and signal.reason_codes
        assert signal.scan_run.inputs["books"] and "ema_in" in signal.scan_run.inputs
    skipped = Signal.objects.filter(trader=alpha, action=Signal.Action.SKIP).exclude(checks=[])
    for signal in skipped:
        assert any(not c["passed"] for c in signal.checks)   # a denial always says why
