"""The bandit service [AI-4]: closed positions feed their (regime, module) arm once, the weights
are reproducible, and AI MODE scans receive them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from execution.models import Position, Trade
from strategies.engine.learning.bandit import BanditConfig, prior_arm, update
from strategies.engine.modules import MODULE_NAMES
from strategies.learning import bandit_table, update_bandit
from strategies.models import BanditReward, BanditState, StrategyProfile
from strategies.services import scan_overrides
from tests.factories import make_trader, staff_user


def closed(trader, symbol, module, regime, pnl, qty=Decimal("1"), entry=Decimal("100"), ts=1_000) -> Position:
    p = Position.objects.create(trader=trader, symbol=symbol, status="closed", strategy=module, regime=regime,
                                opened_ts=ts, closed_ts=ts + 600)
    Trade.objects.create(trader=trader, position=p, symbol=symbol, mode="PAPER", qty=qty, entry_price=entry,
                         exit_price=entry, entry_ts=ts, exit_ts=ts + 600, pnl=Decimal(pnl), fees=Decimal("0.1"),
                         exit_reason="TEST", strategy=module, regime=regime)
    return p


@pytest.fixture
def trader(db):
    return make_trader(staff_user(username="boss"))


def test_closed_positions_update_their_arm_once(trader):
    closed(trader, "A", "TP", "TREND", "2.0")          # +2 % of 100: a full success
    closed(trader, "B", "TP", "TREND", "-1.0", ts=2_000)  # -1 %: reward 0.25
    closed(trader, "C", "VCB", "RANGE", "0.5", qty=Decimal("2"), ts=3_000)   # 0.5 / 200 = +0.25 %
    out = update_bandit(seed=5)
    assert out == {"rewards": 3, "resampled": True}
    cfg = BanditConfig()
    want = update(update(prior_arm(cfg), 0.02, cfg), -0.01, cfg)
    tp = BanditState.objects.get(regime="TREND", module="TP")
    assert (tp.alpha, tp.beta, tp.n) == (pytest.approx(want.alpha), pytest.approx(want.beta), 2)
    vcb = BanditState.objects.get(regime="RANGE", module="VCB")
    assert vcb.n == 1 and BanditReward.objects.get(module="VCB").r_net == pytest.approx(0.0025)
    # every regime x module has a row and a weight; CHOP and PANIC are neutral
    assert BanditState.objects.count() == 5 * len(MODULE_NAMES)
    assert set(BanditState.objects.filter(regime__in=["CHOP", "PANIC"]).values_list("weight", flat=True)) == {1.0}
    assert all(0.5 <= w <= 1.5 for w in BanditState.objects.values_list("weight", flat=True))
    before = list(BanditState.objects.order_by("id").values("alpha", "beta", "n", "weight"))
    assert update_bandit(seed=5) == {"rewards": 0, "resampled": False}        # idempotent
    assert list(BanditState.objects.order_by("id").values("alpha", "beta", "n", "weight")) == before
    table = bandit_table()
    assert [r["regime"] for r in table] == ["TREND", "RANGE", "BREAKOUT_ROTATION", "CHOP", "PANIC"]


def test_weights_are_a_function_of_seed_and_history(trader):
    closed(trader, "A", "TP", "TREND", "3.0")
    update_bandit(seed=9)
    first = sorted(BanditState.objects.values_list("regime", "module", "weight"))
    BanditState.objects.all().delete()
    BanditReward.objects.all().delete()
    update_bandit(seed=9)
    assert sorted(BanditState.objects.values_list("regime", "module", "weight")) == first
    BanditState.objects.all().delete()
    BanditReward.objects.all().delete()
    update_bandit(seed=10)
    assert sorted(BanditState.objects.values_list("regime", "module", "weight")) != first


def test_positions_without_a_realised_trade_are_only_marked(trader):
    p = Position.objects.create(trader=trader, symbol="A", status="closed", strategy="TP", regime="TREND",
                                opened_ts=1, closed_ts=2)
    update_bandit(seed=1)
    reward = BanditReward.objects.get(position=p)
    assert reward.r_net is None and BanditState.objects.get(regime="TREND", module="TP").n == 0


def test_ai_mode_scans_receive_the_weights(trader):
    closed(trader, "A", "TP", "TREND", "3.0")
    update_bandit(seed=2)
    over = scan_overrides(StrategyProfile.objects.get(key="AI_MODE"), "PAPER")
    assert over["bandit_weights"]["TREND"]["TP"] == BanditState.objects.get(regime="TREND", module="TP").weight
    assert set(over["bandit_weights"]) == {"TREND", "RANGE", "BREAKOUT_ROTATION", "CHOP", "PANIC"}
