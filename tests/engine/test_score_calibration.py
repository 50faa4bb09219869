"""Score calibration [CA-2]: the rarity scale, the fitted knots and their use in the aggregator."""

from __future__ import annotations

import numpy as np
import pytest

from regime.engine.types import RegimeInputs, RegimeLabel, RegimeState
from risk.engine.profiles import (
    _CALIBRATION_NAMES,
    CRAZY,
    PROFIT_FIRST,
    SAFETY_FIRST,
    STANDARD,
    ProfileError,
    RiskProfile,
)
from strategies.engine.aggregator import AggregatorParams, aggregate
from strategies.engine.calibration import (
    CALIBRATIONS,
    RAW,
    REAL_V1,
    ScoreCalibration,
    crossing_rates,
    fit_knots,
    score_for_rate,
    smooth,
    validate_knots,
)
from strategies.engine.types import Direction, ModuleOutput
from traders.engine.tick import scan_params


def test_rarity_scale_anchors():
    # 70 = one setup per market-day; every halving of the rate adds 12 points
    assert score_for_rate(1.0) == pytest.approx(70.0)
    assert score_for_rate(0.5) == pytest.approx(82.0)
    assert score_for_rate(2.0) == pytest.approx(58.0)
    assert score_for_rate(0.0) == 100.0            # never crossed: the rarest level
    assert score_for_rate(1e6) == 0.0               # clipped


def test_crossing_rates_count_episodes_not_minutes():
    # one market, 1-minute bars, one day: two episodes above 50 (3 bars and 1 bar long)
    x = np.zeros((1440, 1))
    x[100:103, 0] = 60.0
    x[500, 0] = 55.0
    r = crossing_rates(x, [50.0, 58.0, 70.0], bar_seconds=60)
    assert r.tolist() == pytest.approx([2.0, 1.0, 0.0], rel=1e-3)


def test_crossing_rates_reject_bad_input():
    with pytest.raises(ValueError):
        crossing_rates(np.zeros(10), [1.0], 60)
    with pytest.raises(ValueError):
        crossing_rates(np.full((5, 2), np.nan), [1.0], 60)


def test_fit_knots_pools_sets_geometrically_and_is_monotone():
    levels = [10.0, 20.0, 30.0, 40.0]
    a = np.array([8.0, 2.0, 1.0, 0.05])
    b = np.array([2.0, 2.0, 0.25, 0.05])
    knots = fit_knots([a, b], levels)
    # geometric means 4, 2, 0.5, 0.05 -> 46, 58, 82, 100 (clipped); the curve stops at 100
    assert knots == ((0.0, 0.0), (10.0, 46.0), (20.0, 58.0), (30.0, 82.0), (40.0, 100.0))
    validate_knots(knots)


@pytest.mark.parametrize("bad", [((0, 0),), ((0, 0), (0, 10)), ((0, 50), (10, 40)), ((0, 0), (10, 120)),
                                 ((0, 0), (float("nan"), 10))])
def test_bad_knots_are_refused(bad):
    with pytest.raises(ValueError):
        ScoreCalibration(bad)


def test_real_v1_is_monotone_and_reaches_100():
    cal = ScoreCalibration(REAL_V1)
    xs = np.linspace(0, 80, 801)
    y = cal(xs)
    assert np.all(np.diff(y) >= 0)
    assert y[0] == 0 and y[-1] == 100
    # the profiles' effective levels (threshold / risk multiplier) sit inside the curve
    for p in (SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY):
        level = min(100.0, p.entry_threshold / p.risk_multiplier)
        assert cal(xs).max() >= level


def test_smooth_is_the_aggregators_ema():
    base = np.array([[0.0], [10.0], [10.0]])
    assert smooth(base, 0.3)[:, 0].tolist() == pytest.approx([0.0, 3.0, 5.1])


def _state() -> RegimeState:
    nan = float("nan")
    return RegimeState(RegimeLabel.RANGE, 0.0, 0.0, RegimeInputs(nan, nan, nan, nan, nan, nan))


def _outputs(score: float) -> tuple[ModuleOutput, ...]:
    empty = ((),)
    return (ModuleOutput("TP", np.array([score]), np.array([Direction.LONG], np.int8), empty, {}),)


def test_aggregator_applies_the_calibration_after_the_ema_and_before_the_multiplier():
    raw = AggregatorParams(weights={"TP": 1.0})
    cal = AggregatorParams(weights={"TP": 1.0}, calibration=REAL_V1, risk_multiplier=0.8)
    a = aggregate(("X",), 0, _outputs(34.0), _state(), raw, ema_state={"X": 34.0})
    b = aggregate(("X",), 0, _outputs(34.0), _state(), cal, ema_state={"X": 34.0})
    assert a.final_score[0] == pytest.approx(34.0)
    assert b.total_score[0] == pytest.approx(34.0)            # the EMA is on the raw composite
    assert b.final_score[0] == pytest.approx(66.0 * 0.8)      # REAL_V1(34) = 66, times 0.8
    sig = b.signals[0]
    assert sig.raw_metrics["raw_score"] == pytest.approx(34.0)
    assert sig.raw_metrics["calibrated_score"] == pytest.approx(66.0)


def test_profiles_carry_the_calibration_into_the_scan():
    assert tuple(CALIBRATIONS) == _CALIBRATION_NAMES
    assert STANDARD.score_calibration == "REAL_V1"
    assert scan_params(STANDARD).aggregator.calibration == REAL_V1
    raw = RiskProfile.from_dict({"name": "STANDARD", "score_calibration": "RAW"})
    assert scan_params(raw).aggregator.calibration == RAW
    with pytest.raises(ProfileError, match="score_calibration"):
        RiskProfile.from_dict({"name": "STANDARD", "score_calibration": "NOPE"})


def test_the_score_ema_smooths_per_unit_of_time_at_every_cadence():
    from dataclasses import replace

    from traders.engine.tick import tick_ema_alpha

    assert tick_ema_alpha(60) == 0.3                                # [SC-3] at the live cadence, exactly
    assert tick_ema_alpha(300) == pytest.approx(1 - 0.7 ** 5)
    # five one-minute ticks of a constant score weigh it as much as one five-minute tick
    one = 0.0
    for _ in range(5):
        one = 0.3 * 50.0 + 0.7 * one
    assert tick_ema_alpha(300) * 50.0 == pytest.approx(one)
    assert scan_params(replace(STANDARD, cadence_seconds=3600)).aggregator.ema_alpha > 0.999


def test_fit_knots_starts_at_the_most_crossed_level():
    levels = [5.0, 10.0, 20.0, 30.0]
    rates = np.array([1.0, 4.0, 1.0, 0.1])          # the composite mostly sits above 5
    assert fit_knots([rates], levels) == ((0.0, 0.0), (10.0, 46.0), (20.0, 70.0), (30.0, 100.0))


def test_calibrate_takes_knots_as_stored_json_lists():
    from strategies.engine.calibration import calibrate

    as_json = [list(k) for k in REAL_V1]
    assert calibrate(as_json, 34.0) == pytest.approx(66.0)
    assert calibrate(REAL_V1, [0.0, 100.0]).tolist() == [0.0, 100.0]
