"""Aggregator [SC-2]..[SC-4]: weights, EMA state, final score, actions."""

from __future__ import annotations

import numpy as np
import pytest

from regime.engine.types import RegimeLabel
from strategies.engine.aggregator import DEFAULT_WEIGHTS, AggregatorParams, aggregate
from strategies.engine.types import Action, Direction, ModuleOutput
from tests.engine.test_strat_support import regime

SYMS = ("A", "B", "C")


def out(name: str, scores: list[float], dirs: list[int]) -> ModuleOutput:
    return ModuleOutput(name, np.array(scores, float), np.array(dirs, np.int8), ((f"{name}_X",),) * len(scores))


def neutral_params(**kw) -> AggregatorParams:
    return AggregatorParams(regime_module_weights={}, **kw)


def test_default_weights_match_the_spec():
    assert {k: v for k, v in DEFAULT_WEIGHTS.items() if v} == {"TP": 0.30, "VCB": 0.25, "REGIME": 0.20,
                                                              "LSR": 0.15, "LF": 0.10}


def test_weighted_sum_and_sides():
    outs = [out("TP", [100, 0, 50], [1, 0, -1]), out("VCB", [80, 60, 50], [1, -1, -1])]
    a = aggregate(SYMS, 0, outs, regime(), neutral_params(weights={"TP": 0.6, "VCB": 0.4}))
    np.testing.assert_allclose(a.base_score, [0.6 * 100 + 0.4 * 80, 0.4 * 60, 50.0])
    assert a.direction.tolist() == [Direction.LONG, Direction.SHORT, Direction.SHORT]
    np.testing.assert_allclose(a.total_score, a.base_score)          # first tick seeds the EMA


def test_weights_are_normalised_and_zero_weight_modules_ignored():
    outs = [out("TP", [50, 50, 50], [1, 1, 1]), out("MR", [100, 100, 100], [1, 1, 1])]
    a = aggregate(SYMS, 0, outs, regime(), neutral_params(weights={"TP": 2.0, "MR": 0.0}))
    np.testing.assert_allclose(a.base_score, [50, 50, 50])


def test_ema_state_in_and_out():
    outs = [out("TP", [100, 100, 0], [1, 1, 0])]
    p = neutral_params(weights={"TP": 1.0})
    a = aggregate(SYMS, 0, outs, regime(), p, ema_state={"A": 0.0, "B": -50.0})
    np.testing.assert_allclose(a.total_score, [30.0, abs(0.3 * 100 + 0.7 * -50), 0.0])
    assert a.ema_state == pytest.approx({"A": 30.0, "B": -5.0, "C": 0.0})
    assert a.direction.tolist() == [Direction.LONG, Direction.SHORT, Direction.NONE]


def test_final_score_multipliers_and_regime_weight_formula():
    outs = [out("TP", [60, 60, 60], [1, 1, 1])]
    p = neutral_params(weights={"TP": 1.0}, risk_multiplier=1.15, regime_weights={"TREND": 1.5})
    a = aggregate(SYMS, 0, outs, regime(RegimeLabel.TREND, 50.0), p, bandit_weight=np.array([1.0, 0.5, 2.0]))
    rw = 1 + (1.5 - 1) * 0.5
    np.testing.assert_allclose(a.final_score, [60 * rw * 1.15, 60 * rw * 0.5 * 1.15, 100.0])


def test_per_regime_module_weight_is_applied_through_rg3():
    outs = [out("MR", [80, 80, 80], [1, 1, 1]), out("TP", [0, 0, 0], [0, 0, 0])]
    p = AggregatorParams(weights={"MR": 0.5, "TP": 0.5}, regime_module_weights={"MR": {"RANGE": 1.3}})
    a = aggregate(SYMS, 0, outs, regime(RegimeLabel.RANGE, 100.0), p)
    np.testing.assert_allclose(a.base_score, [0.5 * 1.3 * 80] * 3)


def test_actions_entry_exit_hold_skip():
    outs = [out("TP", [90, 30, 80, 75], [1, 1, 1, -1])]
    syms = ("A", "B", "C", "D")
    p = neutral_params(weights={"TP": 1.0})
    a = aggregate(syms, 7, outs, regime(), p, held={"B": Direction.LONG, "C": Direction.LONG},
                  candidates=np.array([True, True, True, True]), can_short=np.array([False] * 4))
    assert a.actions == (Action.ENTER, Action.EXIT, Action.HOLD, Action.SKIP)
    sig = {s.symbol: s for s in a.signals}
    assert sig["A"].action is Action.ENTER and sig["A"].ts == 7
    assert "EXIT_SCORE_AT_OR_BELOW_THRESHOLD" in sig["B"].reason_codes
    assert "SHORT_NOT_ALLOWED" in sig["D"].reason_codes
    assert sig["A"].module_scores == {"TP": 90.0}


def test_chop_and_panic_block_entries_and_non_candidates_skip():
    outs = [out("TP", [95, 95, 95], [1, 1, 1])]
    p = neutral_params(weights={"TP": 1.0})
    for label in (RegimeLabel.CHOP, RegimeLabel.PANIC):
        a = aggregate(SYMS, 0, outs, regime(label, 90.0), p)
        assert a.actions == (Action.SKIP,) * 3
        assert f"REGIME_{label}_NO_ENTRY" in a.signals[0].reason_codes
    a = aggregate(SYMS, 0, outs, regime(), p, candidates=np.array([True, False, True]),
                  signal_mask=np.array([True, True, False]))
    assert a.actions == (Action.ENTER, Action.SKIP, Action.ENTER)
    assert [s.symbol for s in a.signals] == ["A", "B"]
    assert "NOT_A_CANDIDATE" in a.signals[1].reason_codes


def test_thresholds_validated_and_nan_scores_rejected():
    with pytest.raises(ValueError):
        AggregatorParams(entry_threshold=40, exit_threshold=40)
    with pytest.raises(ValueError, match="NaN"):
        aggregate(SYMS, 0, [out("TP", [np.nan, 0, 0], [0, 0, 0])], regime(), neutral_params())
