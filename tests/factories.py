"""Builders for Django-level tests."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from strategies.models import StrategyProfile

PASSWORD = "correct-horse-battery-9"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def operator(self, create, extracted, **kwargs):
        if extracted:
            self.user_permissions.add(Permission.objects.get(codename="change_trader"))
        self.save()


def staff_user(**kwargs):
    return UserFactory(is_staff=True, is_superuser=True, **kwargs)


def profile(key: str = "STANDARD") -> StrategyProfile:
    return StrategyProfile.objects.get(key=key)


def make_trader(user, name="alpha", key="STANDARD", seed=Decimal("10000000")):
    from traders.services import create_trader

    return create_trader(user=user, name=name, profile=profile(key), seed_money=seed)


# -- a populated platform: pages, API fuzz and bench/pages.py ---------------------------------

BAR = 60
SEED_T0 = 1_767_225_600   # 2026-01-01 00:00 UTC
SEED_SYMBOLS = ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL", "KRW-ADA", "KRW-DOGE"]


def seed_platform(user, *, traders: int = 3, events: int = 300, snapshots_per_trader: int = 60,
                  signals_per_trader: int = 20, orders_per_trader: int = 6, regimes: int = 30) -> list:
    """A platform that looks like it has been trading: ``traders`` traders (through the service,
    so each has its safety row and audit trail) with equity curves, open and closed positions,
    orders with fills, closed trades, signals with module scores and checks, regime rows and
    ``events`` action-log rows spread over them. Bulk inserts: 50 traders and 10,000 events take
    a few seconds. Returns the traders."""
    from datetime import UTC, datetime, timedelta

    from execution.models import Fill, Order, Position, Trade
    from regime.models import MarketRegime
    from strategies.models import Signal
    from traders.models import EquitySnapshot, Event, EventLevel, Trader
    from traders.services import create_trader

    keys = ["SAFETY_FIRST", "STANDARD", "PROFIT_FIRST", "CRAZY", "AI_MODE"]
    start = Trader.objects.count()
    made = [create_trader(user=user, name=f"seed-{start + i:03d}", profile=profile(keys[i % len(keys)]),
                          seed_money=Decimal("10000000")) for i in range(traders)]
    snaps, positions, signals, regimes_rows = [], [], [], []
    for n, trader in enumerate(made):
        equity = Decimal("10000000")
        for k in range(snapshots_per_trader):
            equity += Decimal((k * 7919 + n * 104729) % 20001 - 10000)
            snaps.append(EquitySnapshot(trader=trader, ts=SEED_T0 + k * BAR, equity=equity, cash=equity,
                                        seed_money=trader.seed_money))
        trader.equity = equity
        for k, symbol in enumerate(SEED_SYMBOLS[:3]):
            positions.append(Position(
                trader=trader, symbol=symbol, status=Position.Status.OPEN if k < 2 else Position.Status.CLOSED,
                qty=Decimal("0.01") * (k + 1), avg_entry=Decimal("50000000") / (k + 1),
                cost=Decimal("500000"), stop_price=Decimal("48000000") / (k + 1),
                last_price=Decimal("50500000") / (k + 1), opened_ts=SEED_T0 + k * BAR,
                closed_ts=None if k < 2 else SEED_T0 + 30 * BAR, strategy="momentum", regime="TREND"))
        for k in range(signals_per_trader):
            passed = k % 3 != 0
            signals.append(Signal(
                trader=trader, symbol=SEED_SYMBOLS[k % len(SEED_SYMBOLS)], bar_ts=SEED_T0 + k * BAR,
                base_score=50.0 + k % 40, total_score=55.0 + k % 40, final_score=60.0 + k % 35,
                module_scores={"momentum": 70.0, "volume": 55.5, "breakout": 40.0},
                reason_codes=["SCORE_ABOVE_ENTRY"] if passed else ["CHECK_FAILED"],
                regime="TREND", direction=1, action=Signal.Action.ENTER if passed else Signal.Action.SKIP,
                checks=[{"code": "LIQUIDITY", "passed": passed, "detail": "depth ok" if passed else "thin book"}]))
    Trader.objects.bulk_update(made, ["equity"])
    EquitySnapshot.objects.bulk_create(snaps, batch_size=2000)
    Position.objects.bulk_create(positions, batch_size=2000)
    Signal.objects.bulk_create(signals, batch_size=2000)
    orders = []
    for trader in made:
        for k in range(orders_per_trader):
            filled = k % 3 != 2
            orders.append(Order(
                trader=trader, client_order_id=f"seed-{trader.pk}-{k}", mode="PAPER",
                symbol=SEED_SYMBOLS[k % len(SEED_SYMBOLS)], side="buy" if k % 2 == 0 else "sell", type="limit",
                purpose="entry" if k % 2 == 0 else "exit", price=Decimal("50000000"), qty=Decimal("0.01"),
                status=Order.Status.FILLED if filled else Order.Status.REJECTED,
                filled_qty=Decimal("0.01") if filled else Decimal("0"),
                avg_price=Decimal("50010000") if filled else None, fee=Decimal("250") if filled else Decimal("0"),
                error="" if filled else "insufficient funds", bar_ts=SEED_T0 + k * BAR))
    Order.objects.bulk_create(orders, batch_size=2000)
    fills, trades = [], []
    closed = {p.trader_id: p for p in Position.objects.filter(trader__in=made, status=Position.Status.CLOSED)}
    for order in Order.objects.filter(trader__in=made, status=Order.Status.FILLED):
        fills.append(Fill(order=order, trader_id=order.trader_id, trade_id=f"t-{order.pk}", symbol=order.symbol,
                          side=order.side, price=order.avg_price, qty=order.filled_qty, fee=order.fee,
                          liquidity="taker", ts=order.bar_ts + 1))
        if order.side == "sell" and order.trader_id in closed:
            pnl = Decimal((order.pk * 7919) % 40001 - 20000)
            trades.append(Trade(trader_id=order.trader_id, position=closed[order.trader_id], symbol=order.symbol,
                                mode="PAPER", qty=order.filled_qty, entry_price=Decimal("50000000"),
                                exit_price=order.avg_price, entry_ts=order.bar_ts - 600, exit_ts=order.bar_ts,
                                pnl=pnl, fees=Decimal("500"), exit_reason="TAKE_PROFIT" if pnl > 0 else "STOP_LOSS",
                                strategy="momentum", regime="TREND"))
    Fill.objects.bulk_create(fills, batch_size=2000)
    Trade.objects.bulk_create(trades, batch_size=2000)
    last_regime = MarketRegime.objects.filter(exchange="sim").order_by("-bar_ts").values_list("bar_ts", flat=True).first()
    first = (last_regime + BAR) if last_regime else SEED_T0
    labels = ["TREND", "RANGE", "CHOP", "BREAKOUT_ROTATION", "PANIC"]
    for k in range(regimes):
        regimes_rows.append(MarketRegime(
            exchange="sim", bar_ts=first + k * BAR, label=labels[k % len(labels)], regime_score=40.0 + k % 50,
            confidence=0.7, inputs={"breadth": 0.55, "leader_trend": 0.2, "volatility": 0.012,
                                    "dispersion": 0.3, "volume_surge": 1.1, "correlation": 0.6}))
    MarketRegime.objects.bulk_create(regimes_rows, batch_size=2000)
    levels = [EventLevel.INFO] * 8 + [EventLevel.WARN, EventLevel.CRITICAL]
    kinds = ["TICK", "ORDER_FILLED", "SIGNAL", "POSITION_OPENED", "POSITION_CLOSED", "GUARD_TRIP"]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [Event(trader=made[k % len(made)] if made and k % 25 else None, ts=now + timedelta(seconds=k),
                  level=levels[k % len(levels)], kind=kinds[k % len(kinds)],
                  message=f"seeded event {k}: {kinds[k % len(kinds)].lower()} on {SEED_SYMBOLS[k % len(SEED_SYMBOLS)]}",
                  data={"n": k, "symbol": SEED_SYMBOLS[k % len(SEED_SYMBOLS)]}) for k in range(events)]
    Event.objects.bulk_create(rows, batch_size=2000)
    return made
