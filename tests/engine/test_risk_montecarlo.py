"""Monte Carlo evaluator [RK-6] against closed-form values, and Kelly with CVaR."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk.engine.montecarlo import (
    MCMethod,
    TradeStats,
    apply_stop,
    block_bootstrap_indices,
    evaluate_candidate,
    evaluate_candidates,
    fit_student_t,
    horizon_stats,
    kelly_with_cvar,
    rank_candidates,
)

MU, SIGMA = 0.0004, 0.004          # per-bar log return of the i.i.d. normal reference
COST = 2 * (0.0005 + 0.0005)


def _lognormal_closed_form(h: int) -> tuple[float, float, float]:
    """EV, win probability and CVaR95 of exp(X) - 1 - COST, X ~ N(MU h, SIGMA^2 h)."""
    m, s = MU * h, SIGMA * math.sqrt(h)
    nd = NormalDist()
    ev = math.exp(m + s * s / 2) - 1 - COST
    win = 1 - nd.cdf((math.log1p(COST) - m) / s)
    q = m + s * nd.inv_cdf(0.05)
    tail = math.exp(m + s * s / 2) * nd.cdf((q - m - s * s) / s) / 0.05
    return ev, win, -(tail - 1 - COST)


@pytest.fixture(scope="module")
def normal_returns() -> np.ndarray:
    return np.random.default_rng(7).normal(MU, SIGMA, size=200_000)


@pytest.mark.parametrize("method", [MCMethod.BLOCK_BOOTSTRAP, MCMethod.STUDENT_T])
def test_iid_normal_returns_match_the_closed_form(normal_returns, method):
    rep = evaluate_candidate(normal_returns, np.random.default_rng(1), n_paths=40_000, horizon=60,
                             fee=0.0005, slippage=0.0005, method=method, mean_block=5)
    for h in (1, 10, 60):
        ev, win, cvar = _lognormal_closed_form(h)
        se = SIGMA * math.sqrt(h) / math.sqrt(40_000)
        assert rep.ev[h - 1] == pytest.approx(ev, abs=5 * se + 2e-5)
        assert rep.win_prob[h - 1] == pytest.approx(win, abs=0.012)
        assert rep.cvar95[h - 1] == pytest.approx(cvar, rel=0.04)
    # positive drift and fixed costs: EV per hour rises with the horizon, so T* is the longest
    assert rep.t_star_bars == 60
    assert rep.ev_per_hour == pytest.approx(rep.ev[59] / 1.0)


def test_costs_are_charged_on_both_legs():
    flat = np.zeros((100, 3))
    rep = horizon_stats(flat, round_trip_cost=2 * (0.001 + 0.002), bar_seconds=60)
    np.testing.assert_allclose(rep.ev, -0.006)
    np.testing.assert_allclose(rep.win_prob, 0.0)
    np.testing.assert_allclose(rep.cvar95, 0.006)
    assert rep.t_star_bars == 0 and rep.kelly() == 0.0


def test_zero_drift_has_no_edge_after_costs():
    r = np.random.default_rng(3).normal(0.0, 0.003, size=5_000)
    rep = evaluate_candidate(r - r.mean(), np.random.default_rng(4), n_paths=5_000, horizon=30)
    assert rep.t_star_bars == 0
    assert np.all(rep.ev < 0)


def test_seeded_runs_are_reproducible(normal_returns):
    a = evaluate_candidate(normal_returns[:2000], np.random.default_rng(11), n_paths=500, horizon=20)
    b = evaluate_candidate(normal_returns[:2000], np.random.default_rng(11), n_paths=500, horizon=20)
    np.testing.assert_array_equal(a.ev, b.ev)


def test_stationary_bootstrap_indices_run_in_blocks():
    idx = block_bootstrap_indices(1000, 2000, 100, mean_block=20, rng=np.random.default_rng(0))
    assert idx.shape == (2000, 100) and idx.min() >= 0 and idx.max() < 1000
    continues = (np.diff(idx, axis=1) % 1000) == 1
    # a block continues with probability 1 - 1/20 (a fresh start lands on i + 1 rarely)
    assert continues.mean() == pytest.approx(0.95, abs=0.01)


def test_student_t_fit_recovers_fat_tails():
    rng = np.random.default_rng(5)
    loc, scale, df = fit_student_t(0.001 + 0.002 * rng.standard_t(6.0, size=400_000))
    assert loc == pytest.approx(0.001, abs=2e-5)
    assert scale == pytest.approx(0.002, rel=0.03)
    assert 5.0 < df < 7.5


def test_stop_freezes_a_path_at_the_first_crossing_with_its_gap():
    cum = np.log1p(np.array([[-0.01, -0.03, -0.06, 0.02], [0.01, 0.02, 0.03, 0.04]]))
    out = np.expm1(apply_stop(cum, 0.05))
    np.testing.assert_allclose(out[0], [-0.01, -0.03, -0.06, -0.06])
    np.testing.assert_allclose(out[1], [0.01, 0.02, 0.03, 0.04])


def test_short_direction_negates_returns(normal_returns):
    rep = evaluate_candidate(normal_returns, np.random.default_rng(2), n_paths=4000, horizon=30, direction=-1)
    assert rep.t_star_bars == 0 and rep.ev[-1] < 0


def test_candidates_are_ranked_by_ev_per_hour():
    rng = np.random.default_rng(9)
    rets = np.vstack([rng.normal(mu, 0.003, size=3000) for mu in (0.0, 0.0006, 0.0012)])
    reports = evaluate_candidates(rets, np.random.default_rng(1), n_paths=2000, horizon=60)
    assert rank_candidates(reports) == [2, 1]
    assert reports[2].to_dict()["at_t_star"]["bars"] == reports[2].t_star_bars


def test_kelly_matches_the_binary_bet_formula():
    # p = 0.6, win +2 %, loss -1 %: f* = p / L - q / W = 60 - 20 = 40 x notional, halved
    assert kelly_with_cvar(0.6, 0.02, 0.01, 0.0, fraction=0.5, max_fraction=100) == pytest.approx(20.0)
    # the tail loss 4 % replaces the 1 % average loss: f* = 15 - 20 < 0 -> no edge
    assert kelly_with_cvar(0.6, 0.02, 0.01, 0.04, fraction=0.5, max_fraction=100) == 0.0
    assert kelly_with_cvar(0.6, 0.02, 0.01, 0.02, fraction=1.0, max_fraction=100) == pytest.approx(10.0)
    assert kelly_with_cvar(0.6, 0.02, 0.01, 0.0, fraction=0.5, max_fraction=1.0) == 1.0


def test_trade_stats_from_realised_returns():
    r = np.array([0.02, 0.02, 0.02, -0.01, -0.03] * 4)
    s = TradeStats.from_returns(r)
    assert (s.win_rate, s.n_trades) == (0.6, 20)
    assert s.avg_win == pytest.approx(0.02) and s.avg_loss == pytest.approx(0.02)
    assert s.cvar95 == pytest.approx(0.03)


@given(st.floats(-1, 2), st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1), st.floats(0, 1))
def test_kelly_is_never_negative_nan_or_above_its_cap(p, w, loss, cvar, frac):
    f = kelly_with_cvar(p, w, loss, cvar, frac, max_fraction=1.0)
    assert 0.0 <= f <= 1.0 and not math.isnan(f)
