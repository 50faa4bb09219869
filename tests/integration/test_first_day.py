"""A first day that trades [CA-2], issue 14: a new PAPER trader on the stored STANDARD profile,
on the embedded simulator with `make run`'s market count and warm-up, through the real worker
path (collector -> tick -> fill model -> books).

* On a simulated market that offers a setup (seed 3: a TREND hour after the warm-up) the trader
  opens its first position within minutes, with a calibrated score of at least 70.
* On `make run`'s own default (seed 7) it does not within 2 hours: the simulator's day after the
  two-day warm-up is one 24-hour true RANGE episode, in which the default module weights (no
  weight on mean reversion, [SC-2]) never score a market above 66 (65.1). That target is missed and
  the test says so (strict xfail: it turns red the day it is met).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from execution.engine.sim import SimConfig, SimMarket
from execution.marketdata import latest_bar
from execution.models import Fill, Position
from risk.engine.profiles import STANDARD
from strategies.engine.backtest.pipeline import BacktestConfig, MarketData, run_backtest
from strategies.models import Signal, StrategyProfile
from strategies.services import effective_profile
from tests.factories import staff_user
from traders import tasks
from traders.models import IntentKind
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

T0 = 1_790_000_000.0
MARKETS, WARMUP = 30, 2 * 1440          # quantweb.settings defaults (`make run`)
FIRST_HOURS = 2


@pytest.fixture
def sim_with_a_setup(settings):
    settings.QUANTWEB_SIM_SEED = 3
    settings.QUANTWEB_SIM_MARKETS = MARKETS
    settings.QUANTWEB_SIM_WARMUP_BARS = WARMUP
    from execution import marketdata

    marketdata._view_cache.clear()
    return settings


@pytest.mark.slow
def test_a_new_standard_paper_trader_enters_through_the_worker_path(db, sim_with_a_setup):
    user = staff_user(username="first-day")
    profile = StrategyProfile.objects.get(key="STANDARD")
    assert effective_profile(profile).score_calibration == "REAL_V1"      # the stored defaults, untouched
    trader = create_trader(user=user, name="first", profile=profile, seed_money=Decimal("10000000"))
    request_intent(user=user, kind=IntentKind.START, trader=trader)
    assert process_intents() == 1
    now = T0
    tasks.collect_market_data(now)
    opened_at = None
    for minute in range(1, FIRST_HOURS * 60 + 1):
        now += 60
        tasks.collect_market_data(now)
        assert run_tick(trader.pk, latest_bar("sim")).outcome == "ok"
        if Fill.objects.filter(trader=trader, side="buy").exists():
            opened_at = minute
            break
    assert opened_at is not None, "no position in the first 2 simulated hours"
    assert Position.objects.filter(trader=trader, qty__gt=0).exists()
    entry = Signal.objects.filter(scan_run__trader=trader, action=Signal.Action.ENTER).order_by("id").first()
    assert entry is not None and entry.final_score >= STANDARD.entry_threshold
    assert entry.raw_metrics["calibrated_score"] >= STANDARD.entry_threshold > entry.raw_metrics["raw_score"]


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 14 target missed: make run's default simulator (seed 7) opens its "
                                       "third day with a 24 h true RANGE where no market scores above 66")
def test_the_default_make_run_simulator_gives_an_entry_in_the_first_two_hours():
    market = SimMarket(SimConfig(seed=7, n_markets=MARKETS))
    history = market.generate(WARMUP + FIRST_HOURS * 60)
    data = MarketData(history.candles, {m.symbol: m for m in market.market_info()})
    result = run_backtest(data, BacktestConfig(profile=STANDARD, start_index=WARMUP - 1,
                                               end_index=WARMUP + FIRST_HOURS * 60))
    assert result.entries >= 1
