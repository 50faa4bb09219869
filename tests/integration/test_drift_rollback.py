"""Drift and automatic rollback [AI-6] end to end on the sim exchange.

An AI MODE paper trader runs the real tick (scan, guard, checklist, sizing, fill model, books)
first on STANDARD (the baseline's reference window), then on a deployed model. Then the
simulator's regime mix is switched through its public configuration (``SimConfig``: shorter
regime episodes, three times the volatility, and every drift reversed: the trends the model was
validated on now run against it) and the hourly drift checks run. (Before the regime engine was
fitted on real data the switch kept the drift's sign: the scale-free volatility rule now keeps
the model out of most of that market, so it no longer lost enough to be judged.) The model is rolled back automatically, with the
rule that decided, its audit row and its CRITICAL event, and the trader is back on STANDARD.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from execution import marketdata
from execution.models import SimMarketState
from strategies import learning
from strategies.models import DriftCheck, ModelStatus, StrategyProfile
from strategies.services import deployed_model, effective_profile
from tests.factories import staff_user
from traders import audit, tasks
from traders.models import Event, IntentKind
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

T0 = 1_790_000_000.0
GATE = {"decision": "PASS", "rule": "ALL_RULES_PASSED", "detail": "every rule passed",
        "metrics": {"n": 120, "e": 0.003, "std": 0.012, "sharpe": 0.25}}
MODEL_PARAMS = {"entry_threshold": 35.0, "exit_threshold": 15.0, "risk_per_trade": 0.01,
                "max_positions_cap": 6, "time_stop_seconds": 3 * 3600}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def switch_regime_mix(**changes) -> None:
    """Change the running simulator's public configuration (``SimConfig`` fields) in place."""
    row = SimMarketState.objects.get(name="sim")
    row.state = {**row.state, "config": {**row.state["config"], **changes}}
    row.config = row.state["config"]
    row.save(update_fields=["state", "config"])


@pytest.fixture
def world(db, settings):
    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_SEED = 1600, 10, 3
    marketdata._view_cache.clear()
    boss = staff_user(username="boss")
    trader = create_trader(user=boss, name="ai", profile=StrategyProfile.objects.get(key="AI_MODE"),
                           seed_money=Decimal("10000000"))
    request_intent(user=boss, kind=IntentKind.START, trader=trader)
    process_intents()
    tasks.collect_market_data(T0)
    return boss, trader


class Clock:
    def __init__(self, trader) -> None:
        self.now, self.trader = T0, trader

    def run(self, bars: int) -> None:
        for _ in range(bars):
            self.now += 60
            tasks.collect_market_data(self.now)
            assert run_tick(self.trader.pk, marketdata.latest_bar("sim")).outcome == "ok"


def deploy_then_run(boss, trader, *, switch: bool) -> tuple:
    """Baseline 90 bars, deploy, 60 bars, [switch the mix], then up to 6 hourly drift checks."""
    clock = Clock(trader)
    clock.run(90)                                                  # the baseline (STANDARD) runs
    model = learning.create_model_version(name="tuned", params=MODEL_PARAMS, gate=GATE)
    learning.validate_model(model, now=utc(clock.now))
    learning.deploy_to_paper(model, actor=boss, now=utc(clock.now))
    assert effective_profile(trader.profile).entry_threshold == 35.0
    clock.run(60)
    verdicts = learning.check_drift(now=utc(clock.now))
    model.refresh_from_db()
    assert model.status == ModelStatus.PAPER_DEPLOYED, verdicts
    if switch:
        switch_regime_mix(regime_duration_scale=0.05, vol_scale=3.0, drift_scale=-3.0)
    for _hour in range(6):
        clock.run(60)
        verdicts += learning.check_drift(now=utc(clock.now))
        model.refresh_from_db()
        if model.status != ModelStatus.PAPER_DEPLOYED:
            break
    return model, verdicts


@pytest.mark.slow
def test_a_drifting_model_is_rolled_back_automatically(world):
    boss, trader = world
    model, verdicts = deploy_then_run(boss, trader, switch=True)
    assert model.status == ModelStatus.AUTO_ROLLBACK, verdicts
    final = DriftCheck.objects.filter(model_version=model).order_by("-window_end").first()
    assert final.status == "ROLLBACK" and any(r.startswith("ROLLBACK:") for r in final.reasons)
    rule = model.status_reason.split(":")[0]
    assert rule in ("NET_RETURN_24H", "CONSECUTIVE_LOSSES", "DRIFT_WARN_STREAK")
    assert final.metrics["n_trades_24h"] > 0
    event = Event.objects.get(kind="MODEL_AUTO_ROLLBACK")
    assert event.level == "CRITICAL" and event.data["model"] == model.pk
    row = audit.filtered(kind="MODEL_TRANSITION").order_by("-seq").first()
    assert row.payload["to"] == "AUTO_ROLLBACK" and row.actor == "system"
    assert audit.verify_chain() is None
    # AI MODE is back on STANDARD for the next tick
    assert deployed_model("PAPER") is None
    assert effective_profile(trader.profile).entry_threshold == 70.0


@pytest.mark.slow
def test_the_same_model_without_the_switch_stays_deployed(world):
    """The control: same seed, same model, same hours, the simulator's mix unchanged."""
    boss, trader = world
    model, verdicts = deploy_then_run(boss, trader, switch=False)
    assert model.status == ModelStatus.PAPER_DEPLOYED, verdicts
    assert not any(v["status"] == "ROLLBACK" for v in verdicts)
    assert DriftCheck.objects.filter(model_version=model).count() == 7
