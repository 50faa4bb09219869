"""Drift rules [AI-6]: DRIFT_WARN reasons, the three rollback rules, PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.engine.learning.drift import DriftInputs, DriftStatus, evaluate_drift, psi

MIX = {"TREND": 60, "RANGE": 30, "BREAKOUT_ROTATION": 10}


def inputs(**kw) -> DriftInputs:
    rng = np.random.default_rng(0)
    base = {"recent_r": rng.normal(0.003, 0.01, 10), "reference_r": rng.normal(0.003, 0.01, 40),
            "net_return_24h": 0.004, "consecutive_losses": 0, "recent_regimes": MIX, "reference_regimes": MIX,
            "reference_hours": 14 * 24.0}
    base.update(kw)
    return DriftInputs(**base)


def test_psi_by_hand():
    assert psi(MIX, MIX) == pytest.approx(0.0)
    ref, cur = {"A": 50, "B": 50}, {"A": 80, "B": 20}
    want = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert psi(ref, cur) == pytest.approx(want)
    assert psi({"A": 10}, {"B": 10}) > 5          # disjoint mixes: floored shares, a huge index


def test_a_model_doing_as_expected_is_ok():
    res = evaluate_drift(inputs())
    assert res.status is DriftStatus.OK and res.reasons == () and res.warn_streak == 0
    assert res.metrics["reference"] == "baseline" and res.metrics["n_trades_24h"] == 10


@pytest.mark.parametrize(("kw", "reason"), [
    ({"recent_r": np.full(8, -0.01) + np.linspace(0, 0.001, 8)}, "PERFORMANCE"),
    ({"net_return_24h": -0.015}, "NET_RETURN"),
    ({"consecutive_losses": 3}, "LOSS_STREAK"),
    ({"recent_regimes": {"PANIC": 40, "CHOP": 40}, "recent_r": np.full(6, -0.001)}, "REGIME_MIX"),
])
def test_each_warning(kw, reason):
    res = evaluate_drift(inputs(**kw))
    assert res.status is DriftStatus.DRIFT_WARN and reason in res.reasons and res.warn_streak == 1


def test_a_new_regime_mix_alone_is_not_drift():
    res = evaluate_drift(inputs(recent_regimes={"PANIC": 40, "CHOP": 40}, recent_r=np.full(10, 0.005)))
    assert res.status is DriftStatus.OK and res.metrics["regime_psi"] > 1


def test_a_short_reference_is_no_reference_for_the_regime_mix():
    res = evaluate_drift(inputs(recent_regimes={"PANIC": 40, "CHOP": 40}, recent_r=np.full(6, -0.001),
                                reference_hours=10.0))
    assert "REGIME_MIX" not in res.reasons and res.metrics["regime_psi"] is None


def test_the_gate_expectation_is_the_reference_without_baseline_trades():
    res = evaluate_drift(inputs(reference_r=np.array([0.01]), recent_r=np.full(9, -0.004),
                                expected_mean=0.004, expected_std=0.01))
    assert res.metrics["reference"] == "gate"
    assert res.metrics["z"] == pytest.approx((-0.004 - 0.004) / (0.01 / 3))
    assert "PERFORMANCE" in res.reasons


@pytest.mark.parametrize(("kw", "rule"), [
    ({"net_return_24h": -0.021}, "NET_RETURN_24H"),
    ({"consecutive_losses": 5}, "CONSECUTIVE_LOSSES"),
    ({"net_return_24h": -0.012, "previous_streak": 2}, "DRIFT_WARN_STREAK"),
])
def test_rollback_rules(kw, rule):
    res = evaluate_drift(inputs(**kw))
    assert res.status is DriftStatus.ROLLBACK and res.rollback_rule == rule


def test_boundaries():
    assert evaluate_drift(inputs(net_return_24h=-0.02)).rollback_rule is None        # < -2 %, not <=
    assert evaluate_drift(inputs(consecutive_losses=4)).status is DriftStatus.DRIFT_WARN
    two = evaluate_drift(inputs(net_return_24h=-0.012, previous_streak=1))
    assert two.status is DriftStatus.DRIFT_WARN and two.warn_streak == 2
    assert evaluate_drift(inputs(previous_streak=2)).warn_streak == 0                 # a clean check resets


def test_nothing_to_judge_is_insufficient_and_keeps_the_streak():
    res = evaluate_drift(DriftInputs(np.array([]), np.array([]), None, 0, {}, {}, previous_streak=2))
    assert res.status is DriftStatus.INSUFFICIENT and res.warn_streak == 2
