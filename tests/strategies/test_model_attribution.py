"""Which model an AI MODE entry was made under [AI-5], [AI-6].

The tick records the deployed model on the position it opens and every Trade copies it, so
drift monitoring attributes a trade by that record; the lifecycle history (``_Audience``) is only
the fallback for rows without one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from execution import marketdata
from execution.models import Position, Trade
from strategies import learning
from strategies.models import ScanRun, StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import staff_user
from traders import tasks
from traders.models import IntentKind
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

T0 = 1_790_000_000.0
HOUR = 3600
GATE = {"decision": "PASS", "rule": "ALL_RULES_PASSED", "detail": "every rule passed",
        "metrics": {"n": 120, "e": 0.003, "std": 0.012, "sharpe": 0.25}}
# Active enough to enter and leave within a few dozen bars of the sim exchange.
MODEL_PARAMS = {"entry_threshold": 30.0, "exit_threshold": 15.0, "risk_per_trade": 0.01,
                "max_positions_cap": 6, "time_stop_seconds": 600}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def deployed(boss, name: str, at: float):
    model = learning.create_model_version(name=name, params=MODEL_PARAMS, gate=GATE)
    learning.validate_model(model, now=utc(at))
    learning.deploy_to_paper(model, actor=boss, now=utc(at))
    return model


# -- the real tick records the model ------------------------------------------------------------

@pytest.fixture
def ticking(db, settings):
    """An AI MODE and a CRAZY paper trader on the sim exchange with a model deployed to paper,
    ticked until both have closed trades."""
    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_SEED = 1600, 12, 7
    marketdata._view_cache.clear()
    boss = staff_user(username="boss")
    crazy = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(crazy).to_dict()
    params.pop("name")
    params.update(entry_threshold=30.0, exit_threshold=15.0, time_stop_seconds=600)
    update_profile(profile=crazy, params=params, user=boss, comment="attribution test")
    crazy.refresh_from_db()
    ai = create_trader(user=boss, name="ai", profile=StrategyProfile.objects.get(key="AI_MODE"),
                       seed_money=Decimal("10000000"))
    plain = create_trader(user=boss, name="plain", profile=crazy, seed_money=Decimal("10000000"))
    for trader in (ai, plain):
        request_intent(user=boss, kind=IntentKind.START, trader=trader)
    assert process_intents() == 2
    model = deployed(boss, "tuned", T0)
    now = T0
    tasks.collect_market_data(now)
    for _ in range(150):
        now += 60
        tasks.collect_market_data(now)
        bar = marketdata.latest_bar("sim")
        assert run_tick(ai.pk, bar).outcome == "ok"
        assert run_tick(plain.pk, bar).outcome == "ok"
        if all(Trade.objects.filter(trader=t).exists() for t in (ai, plain)):
            break
    return boss, ai, plain, model


def test_the_tick_records_the_deployed_model_on_ai_positions_and_their_trades(ticking):
    boss, ai, plain, model = ticking
    positions = Position.objects.filter(trader=ai)
    trades = Trade.objects.filter(trader=ai)
    assert positions.exists() and trades.exists()
    assert set(positions.values_list("model_version_id", flat=True)) == {model.pk}
    assert set(trades.values_list("model_version_id", flat=True)) == {model.pk}
    # the same id the scan stored among its inputs
    scan = ScanRun.objects.filter(trader=ai).order_by("-id").first()
    assert scan.inputs["scan_overrides"]["model_version"] == model.pk
    # a trade of a position carries that position's model
    for trade in trades.select_related("position"):
        assert trade.model_version_id == trade.position.model_version_id


def test_a_trader_of_another_profile_records_no_model(ticking):
    boss, ai, plain, model = ticking
    assert Trade.objects.filter(trader=plain).exists()
    assert set(Position.objects.filter(trader=plain).values_list("model_version_id", flat=True)) == {None}
    assert set(Trade.objects.filter(trader=plain).values_list("model_version_id", flat=True)) == {None}


def test_the_model_is_shown_on_the_trader_page_and_in_the_api(ticking, client):
    boss, ai, plain, model = ticking
    client.force_login(boss)
    html = client.get(reverse("trader-detail", args=[ai.pk])).content.decode()
    assert f'<td class="model-version">#{model.pk}</td>' in html
    assert "model-version" not in client.get(reverse("trader-detail", args=[plain.pk])).content.decode()
    api = APIClient()
    api.force_authenticate(boss)
    body = api.get("/api/positions/", {"trader": ai.pk}).json()
    rows = body["results"] if isinstance(body, dict) else body
    assert rows and {r["model_version"] for r in rows} == {model.pk}


# -- drift attributes by the recorded id --------------------------------------------------------

@pytest.fixture
def two_models(db):
    """Model A deployed at T0 and rolled back an hour later; model B deployed after the 24 h
    cooldown. From then on the transition history says every PAPER entry ran B."""
    boss = staff_user(username="boss")
    a = deployed(boss, "A", T0)
    learning.rollback(a, actor=boss, reason="test", now=utc(T0 + HOUR))
    b = deployed(boss, "B", T0 + 26 * HOUR)
    a.refresh_from_db()
    trader = create_trader(user=boss, name="ai", profile=StrategyProfile.objects.get(key="AI_MODE"),
                           seed_money=Decimal("10000000"))
    return trader, a, b, T0 + 26 * HOUR


def closed_trade(trader, model, entry_ts: float, exit_ts: float, pnl: str) -> Trade:
    """A closed round trip of qty 1 at 100: its net return is pnl / 100."""
    position = Position.objects.create(trader=trader, symbol=f"KRW-T{int(entry_ts)}", status=Position.Status.CLOSED,
                                       opened_ts=int(entry_ts), closed_ts=int(exit_ts), model_version=model)
    return Trade.objects.create(trader=trader, position=position, symbol=position.symbol, mode="PAPER",
                                qty=Decimal(1), entry_price=Decimal(100), exit_price=Decimal(100) + Decimal(pnl),
                                entry_ts=int(entry_ts), exit_ts=int(exit_ts), pnl=Decimal(pnl), fees=Decimal(0),
                                exit_reason="EXIT", model_version=model)


def test_drift_attributes_a_trade_by_its_recorded_model_not_by_the_history(two_models):
    trader, a, b, b_at = two_models
    closed_trade(trader, a, b_at + 600, b_at + 1200, "-1")       # entered under A though B was deployed
    closed_trade(trader, None, b_at + 1800, b_at + 2400, "2")    # no record: the history says B
    closed_trade(trader, b, b_at + 3000, b_at + 3600, "1")       # recorded B
    now = b_at + 6 * HOUR
    assert sorted(learning.drift_inputs(b, now).recent_r.tolist()) == pytest.approx([0.01, 0.02])
    assert learning.drift_inputs(a, now).recent_r.tolist() == pytest.approx([-0.01])


def test_a_recorded_entry_stamped_just_before_the_deploy_counts_for_its_model(two_models):
    """opened_ts is the bar close; the scan that chose the model ran after it. Without a record
    the same timestamp belongs to what ran before (STANDARD here), and a record from a deployment
    more than the redeploy cooldown earlier never counts."""
    trader, a, b, b_at = two_models
    closed_trade(trader, b, b_at - 30, b_at + 600, "0.5")
    closed_trade(trader, None, b_at - 30, b_at + 900, "3")
    closed_trade(trader, b, b_at - 25 * HOUR, b_at + 1200, "4")
    inputs = learning.drift_inputs(b, b_at + 6 * HOUR)
    assert inputs.recent_r.tolist() == pytest.approx([0.005])


def test_rows_without_a_record_still_follow_the_history(two_models):
    trader, a, b, b_at = two_models
    closed_trade(trader, None, T0 + 600, T0 + 1200, "-2")        # A was deployed then
    closed_trade(trader, None, b_at + 600, b_at + 1200, "1")     # B
    now = b_at + 6 * HOUR
    assert learning.drift_inputs(b, now).recent_r.tolist() == pytest.approx([0.01])
    # A's own trades are outside the 24 h window, but they are its trades since deployment
    assert learning.drift_inputs(a, T0 + 2 * HOUR).recent_r.tolist() == pytest.approx([-0.02])
