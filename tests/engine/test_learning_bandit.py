"""Thompson-sampling bandit [AI-4] and its application in the aggregator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regime.engine.types import RegimeLabel
from strategies.engine.aggregator import AggregatorParams, aggregate
from strategies.engine.learning.bandit import (
    Arm,
    BanditConfig,
    market_weights,
    prior_arm,
    reward_of,
    sample_weights,
    update,
)
from strategies.engine.types import ModuleOutput
from tests.engine.test_strat_support import regime

CFG = BanditConfig()
MODULES = ("TP", "VCB", "LSR")


def test_reward_maps_net_return_to_unit_interval():
    assert reward_of(0.0, CFG) == 0.5
    assert reward_of(0.02, CFG) == 1.0 and reward_of(0.05, CFG) == 1.0
    assert reward_of(-0.02, CFG) == 0.0 and reward_of(-0.3, CFG) == 0.0
    assert reward_of(0.01, CFG) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        reward_of(float("nan"), CFG)


def test_update_decays_toward_the_prior_then_adds_the_reward():
    arm = Arm(15.0, 7.0, 12)
    new = update(arm, 0.01, CFG)
    assert new.alpha == pytest.approx(5 + 0.995 * 10 + 0.75)
    assert new.beta == pytest.approx(5 + 0.995 * 2 + 0.25)
    assert new.n == 13


def test_weights_are_in_range_neutral_in_chop_and_panic_and_reproducible():
    arms = {("TREND", "TP"): Arm(40, 5, 45), ("TREND", "VCB"): Arm(5, 40, 45), ("CHOP", "TP"): Arm(40, 5, 45)}
    a = sample_weights(arms, seed=11, modules=MODULES)
    b = sample_weights(arms, seed=11, modules=MODULES)
    assert a == b
    assert sample_weights(arms, seed=12, modules=MODULES) != a
    for regime_name, row in a.items():
        assert set(row) == set(MODULES)
        for w in row.values():
            assert 0.5 <= w <= 1.5
        if regime_name in ("CHOP", "PANIC"):
            assert set(row.values()) == {1.0}
    assert a["TREND"]["TP"] > 1.2 > 0.8 > a["TREND"]["VCB"]


@given(st.lists(st.floats(-0.5, 0.5), max_size=60), st.integers(0, 2**32 - 1))
def test_any_history_gives_weights_in_range(returns, seed):
    arm = prior_arm(CFG)
    for r in returns:
        arm = update(arm, r, CFG)
    weights = sample_weights({("RANGE", "TP"): arm}, seed, modules=("TP",))
    assert all(0.5 <= w <= 1.5 for row in weights.values() for w in row.values())


def test_evidence_moves_the_posterior_mean_the_right_way():
    good, bad = prior_arm(CFG), prior_arm(CFG)
    for _ in range(100):
        good, bad = update(good, 0.03, CFG), update(bad, -0.03, CFG)
    assert good.mean > 0.85 and bad.mean < 0.15
    draws = [sample_weights({("TREND", "TP"): good, ("TREND", "VCB"): bad}, s, modules=("TP", "VCB"))["TREND"]
             for s in range(50)]
    assert np.mean([d["TP"] for d in draws]) > 1.3 and np.mean([d["VCB"] for d in draws]) < 0.7


def test_market_weight_is_the_contribution_weighted_mean():
    scores = np.array([[80.0, 0.0, 50.0], [40.0, 60.0, 50.0]])      # 2 modules x 3 markets
    dirs = np.array([[1, 0, 1], [1, -1, -1]], np.int8)
    side = np.array([1, -1, 1])
    w = market_weights(scores, dirs, side, np.array([0.5, 0.5]), np.array([1.5, 0.5]))
    assert w[0] == pytest.approx((40 * 1.5 + 20 * 0.5) / 60)         # both long
    assert w[1] == pytest.approx(0.5)                                  # only the short module contributes
    assert w[2] == pytest.approx(1.5)                                  # the short module is on the other side
    assert market_weights(np.zeros((2, 1)), np.zeros((2, 1), np.int8), np.array([1]), np.ones(2),
                          np.array([1.5, 1.5]))[0] == 1.0


def out(name, scores, dirs):
    return ModuleOutput(name, np.array(scores, float), np.array(dirs, np.int8), ((),) * len(scores))


def test_aggregator_applies_bandit_weights_in_the_scan_regime_only():
    outs = [out("TP", [60, 60], [1, 1]), out("VCB", [60, 0], [1, 0])]
    base = AggregatorParams(weights={"TP": 0.5, "VCB": 0.5}, regime_module_weights={})
    learned = AggregatorParams(weights={"TP": 0.5, "VCB": 0.5}, regime_module_weights={},
                               bandit_weights={"TREND": {"TP": 1.5, "VCB": 0.5}, "CHOP": {"TP": 1.5}})
    plain = aggregate(("A", "B"), 0, outs, regime(RegimeLabel.TREND, 100.0), base)
    trend = aggregate(("A", "B"), 0, outs, regime(RegimeLabel.TREND, 100.0), learned)
    np.testing.assert_allclose(trend.final_score, plain.final_score * np.array([1.0, 1.5]))
    assert trend.signals[1].raw_metrics["bandit_weight"] == pytest.approx(1.5)
    rng = aggregate(("A", "B"), 0, outs, regime(RegimeLabel.RANGE, 100.0), learned)   # no RANGE weights
    np.testing.assert_allclose(rng.final_score, plain.final_score)
    chop = aggregate(("A", "B"), 0, outs, regime(RegimeLabel.CHOP, 100.0), learned)   # CHOP: always 1
    np.testing.assert_allclose(chop.final_score, aggregate(("A", "B"), 0, outs, regime(RegimeLabel.CHOP, 100.0),
                                                           base).final_score)


def test_aggregator_penalties():
    outs = [out("TP", [80, 80], [1, 1]), out("LSR", [0, 40], [0, -1]),
            ModuleOutput("MOM", np.array([0.0, 0.0]), np.zeros(2, np.int8), ((), ()),
                         {"move_atr": np.array([3.0, 1.0])})]
    p0 = AggregatorParams(weights={"TP": 0.5, "LSR": 0.5}, regime_module_weights={})
    p = AggregatorParams(weights={"TP": 0.5, "LSR": 0.5}, regime_module_weights={},
                         penalty_weights={"CONFLICT": 0.5, "EXTENSION": 0.4})
    a0 = aggregate(("A", "B"), 0, outs, regime(), p0)
    a = aggregate(("A", "B"), 0, outs, regime(), p)
    # A: no conflict, extension (3 - 2) / 2 = 0.5 -> load 0.2; B: conflict 20 / 60, no extension
    np.testing.assert_allclose(a.base_score, a0.base_score * np.array([1 - 0.4 * 0.5, 1 - 0.5 * (20 / 60)]))
    assert "PENALTY_EXTENSION" in a.signals[0].reason_codes and "PENALTY_CONFLICT" not in a.signals[0].reason_codes
    assert "PENALTY_CONFLICT" in a.signals[1].reason_codes
    assert a.signals[1].raw_metrics["penalty.CONFLICT"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        AggregatorParams(penalty_weights={"NOPE": 0.1})
    with pytest.raises(ValueError):
        AggregatorParams(penalty_weights={"CONFLICT": 1.5})
