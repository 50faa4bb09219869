"""Evaluation gate [AI-2]: metrics, each rule's decision, the deflated Sharpe ratio and PBO."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from strategies.engine.learning.gate import (
    EULER_GAMMA,
    Decision,
    GateConfig,
    TrialStats,
    deflated_sharpe,
    evaluate_gate,
    expected_max_sharpe,
    pbo_cscv,
    sample_metrics,
)

Z = NormalDist()


def good_sample(n: int = 200, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.004, 0.01, n)
    mae = -np.abs(rng.normal(0.006, 0.003, n))
    return r, mae


def test_metrics_by_hand():
    r = np.array([0.02, -0.01, 0.03, 0.00, -0.02])
    mae = np.array([-0.01, -0.03, 0.0, -0.005, -0.04])
    m = sample_metrics(r, mae, days=2.5)
    assert m["n"] == 5 and m["spd"] == 2.0
    assert m["e"] == pytest.approx(0.004)
    assert m["std"] == pytest.approx(np.std(r, ddof=1))
    assert m["sharpe"] == pytest.approx(0.004 / np.std(r, ddof=1))
    assert m["win_rate"] == pytest.approx(0.4)
    assert m["q05"] == pytest.approx(np.quantile(r, 0.05)) and m["q01"] == pytest.approx(np.quantile(r, 0.01))
    assert m["mae_mean"] == pytest.approx(np.mean([0.01, 0.03, 0.0, 0.005, 0.04]))
    assert m["mae_95"] == pytest.approx(np.quantile([0.01, 0.03, 0.0, 0.005, 0.04], 0.95))


def test_a_good_sample_passes_with_every_metric_returned():
    r, mae = good_sample()
    res = evaluate_gate(r, mae, days=30)
    assert res.decision is Decision.PASS and res.rule == "ALL_RULES_PASSED" and res.failures == ()
    for key in ("n", "days", "spd", "e", "std", "sharpe", "win_rate", "q05", "q01", "mae_mean", "mae_95", "dsr", "pbo"):
        assert key in res.metrics
    assert res.to_dict()["metrics"]["dsr"] is None        # not computed without a candidate set


@pytest.mark.parametrize(("change", "rule"), [
    (lambda r, m, d: (r[:20], m[:20], d), "N_MIN"),
    (lambda r, m, d: (r - 0.01, m, d), "E_POSITIVE"),
    (lambda r, m, d: (np.concatenate([r, [-0.15] * 3]), np.concatenate([m, [-0.15] * 3]), d), "Q01_FLOOR"),
    (lambda r, m, d: (r, m, 2000.0), "SPD_RANGE"),       # 0.1 signals a day
    (lambda r, m, d: (r, m, 2.0), "SPD_RANGE"),          # 100 a day
    (lambda r, m, d: (r, m * 30, d), "MAE_95_MAX"),
])
def test_each_hard_rule_rejects_and_names_itself(change, rule):
    r, mae = good_sample()
    rr, mm, days = change(r.copy(), mae.copy(), 30.0)
    res = evaluate_gate(rr, mm, days=days)
    assert res.decision is Decision.REJECT
    assert res.rule == rule and rule in res.failures


def test_hard_rules_decide_before_soft_ones_and_all_failures_are_listed():
    r, mae = good_sample()
    res = evaluate_gate(r - 0.01, mae * 30, days=30)
    assert res.rule == "E_POSITIVE"
    assert {"E_POSITIVE", "MAE_95_MAX", "SHARPE_MIN", "MAE_MEAN_MAX"} <= set(res.failures)


@pytest.mark.parametrize(("kwargs", "rule"), [
    ({"config": GateConfig(sharpe_min=1.0)}, "SHARPE_MIN"),
    ({"config": GateConfig(q05_floor=0.0)}, "Q05_FLOOR"),
    ({"config": GateConfig(mae_mean_max=0.001)}, "MAE_MEAN_MAX"),
    ({"trials": TrialStats(n_trials=1000, sharpe_variance=1.0)}, "DSR_MIN"),
    ({"pbo": 0.7}, "PBO_MAX"),
])
def test_soft_rules_hold(kwargs, rule):
    r, mae = good_sample()
    res = evaluate_gate(r, mae, days=30, **kwargs)
    assert res.decision is Decision.HOLD and res.rule == rule


def test_expected_max_sharpe_by_hand():
    n, v = 10, 0.04
    hand = math.sqrt(v) * ((1 - EULER_GAMMA) * Z.inv_cdf(1 - 1 / n) + EULER_GAMMA * Z.inv_cdf(1 - 1 / (n * math.e)))
    assert expected_max_sharpe(n, v) == pytest.approx(hand)
    assert expected_max_sharpe(1, v) == 0.0


def test_deflated_sharpe_matches_the_papers_example():
    """Bailey & López de Prado (2014), section 5: annualised SR 2.5 over T = 1250 daily
    observations, skewness -3, kurtosis 10, N = 100 trials with annualised V[SR] = 0.5 -> DSR
    about 0.90. Per-observation units: SR = 2.5 / sqrt(250), V = 0.5 / 250."""
    sr, t, skew, kurt, n, v = 2.5 / math.sqrt(250), 1250, -3.0, 10.0, 100, 0.5 / 250
    sr0 = math.sqrt(v) * ((1 - EULER_GAMMA) * Z.inv_cdf(1 - 1 / n) + EULER_GAMMA * Z.inv_cdf(1 - 1 / (n * math.e)))
    hand = Z.cdf((sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2))
    assert sr0 == pytest.approx(0.1132, abs=5e-4)
    assert hand == pytest.approx(0.90, abs=0.005)
    assert deflated_sharpe(sr, t, skew, kurt, n, v) == pytest.approx(hand, rel=1e-12)


def test_deflated_sharpe_falls_as_trials_grow():
    values = [deflated_sharpe(0.1, 500, 0.0, 3.0, n, 0.002) for n in (2, 10, 100, 1000)]
    assert values == sorted(values, reverse=True)
    assert values[0] > 0.9 > values[-1]


def test_pbo_is_zero_for_a_dominant_candidate():
    rng = np.random.default_rng(1)
    m = rng.normal(0.0, 0.01, (400, 12))
    m[:, 5] += 0.01               # one candidate is better in every period block
    out = pbo_cscv(m, n_blocks=10)
    assert out["splits"] == 252
    assert out["pbo"] == pytest.approx(0.0, abs=0.01)
    assert out["logit_mean"] > 1


def test_pbo_is_about_half_for_pure_noise():
    pbos = [pbo_cscv(np.random.default_rng(seed).normal(0.0, 0.01, (400, 20)), n_blocks=10)["pbo"]
            for seed in range(8)]
    assert 0.35 < float(np.mean(pbos)) < 0.65


def test_pbo_refuses_bad_input():
    with pytest.raises(ValueError):
        pbo_cscv(np.zeros((100, 1)))
    with pytest.raises(ValueError):
        pbo_cscv(np.zeros((100, 3)), n_blocks=5)
    with pytest.raises(ValueError):
        pbo_cscv(np.zeros((10, 3)), n_blocks=10)
