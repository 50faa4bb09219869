"""Model disagreement in the worker [RK-4]: an AI MODE trader running a model is compared with
the deterministic profile on every tick; a strong, lasting conflict halts it (reason, event,
audit row), agreement never does, and a trader with one signal source is not judged."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest

from execution import marketdata
from risk.engine.guard import MODEL_DISAGREEMENT
from risk.models import TraderSafetyState
from strategies import learning
from strategies.models import ScanRun, StrategyProfile
from tests.factories import staff_user
from traders import tasks, trading
from traders.models import AuditLog, Event, IntentKind
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

T0 = 1_790_000_000.0


@pytest.fixture
def world(db, settings):
    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_SEED = 1600, 12, 7
    marketdata._view_cache.clear()
    return staff_user(username="boss")


def deploy(user, params):
    model = learning.create_model_version(name="m", params=params,
                                          gate={"decision": "PASS", "rule": "ALL_RULES_PASSED", "metrics": {}})
    learning.validate_model(model)
    learning.deploy_to_paper(model, actor=user)
    return model


def start(user, key):
    trader = create_trader(user=user, name=f"t-{key}", profile=StrategyProfile.objects.get(key=key),
                           seed_money=Decimal("10000000"))
    request_intent(user=user, kind=IntentKind.START, trader=trader)
    process_intents()
    return trader


def tick(trader, n, now=T0):
    tasks.collect_market_data(now)
    for _ in range(n):
        now += 60
        tasks.collect_market_data(now)
        assert run_tick(trader.pk, marketdata.latest_bar("sim")).outcome == "ok"


def contradict(monkeypatch):
    """The deterministic source contradicts the model everywhere: the other side at full score."""
    real = trading.reaggregate

    def opposite(result, params, **kwargs):
        agg = real(result, params, **kwargs)
        own = result.aggregate
        return replace(agg, final_score=np.full_like(own.final_score, 100.0),
                       direction=np.where(own.direction != 0, -own.direction, -1))

    monkeypatch.setattr(trading, "reaggregate", opposite)


def test_a_lasting_conflict_halts_the_ai_trader(world, monkeypatch):
    deploy(world, {"entry_threshold": 30.0, "exit_threshold": 15.0})
    trader = start(world, "AI_MODE")
    contradict(monkeypatch)
    tick(trader, 4)
    safety = TraderSafetyState.objects.get(trader=trader)
    assert MODEL_DISAGREEMENT in {t["code"] for t in safety.trips}
    assert safety.trading_state == "HALTED" and MODEL_DISAGREEMENT in safety.reason
    assert Event.objects.filter(trader=trader, kind="GUARD_TRIP", message__startswith=MODEL_DISAGREEMENT).exists()
    assert AuditLog.objects.filter(kind="GUARD_TRIP", trader_id=trader.pk, payload__code=MODEL_DISAGREEMENT).exists()
    last = ScanRun.objects.filter(trader=trader).order_by("-id").first()
    second = last.inputs["second_opinion"]
    assert second["strong"] > 0 and second["conflicts"] == second["strong"]
    trader.refresh_from_db()
    assert trader.scan_state["guard_feed"]["disagreement"] and "ema_second" in trader.scan_state


def test_a_model_equal_to_the_profile_never_disagrees(world):
    deploy(world, {})                 # the deployed model changes nothing: both sources are STANDARD
    trader = start(world, "AI_MODE")
    tick(trader, 4)
    safety = TraderSafetyState.objects.get(trader=trader)
    assert MODEL_DISAGREEMENT not in {t["code"] for t in safety.trips}
    runs = ScanRun.objects.filter(trader=trader)
    assert runs.exists() and all(r.inputs["second_opinion"]["conflicts"] == 0 for r in runs)


def test_one_signal_source_is_not_judged(world, monkeypatch):
    contradict(monkeypatch)
    for k, key in enumerate(("AI_MODE", "CRAZY")):   # AI MODE without a model runs STANDARD
        trader = start(world, key)
        tick(trader, 3, now=T0 + 600 * k)
        assert not any("second_opinion" in r.inputs for r in ScanRun.objects.filter(trader=trader))
        trader.refresh_from_db()
        assert trader.scan_state["guard_feed"]["disagreement"] == []
        safety = TraderSafetyState.objects.get(trader=trader)
        assert MODEL_DISAGREEMENT not in {t["code"] for t in safety.trips}
