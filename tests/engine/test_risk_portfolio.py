"""Portfolio limits [RK-3]: open stop-loss risk, risk budget, position slots."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regime.engine.types import RegimeLabel
from risk.engine.portfolio import REGIME_MAX_POSITIONS, PortfolioState, max_positions, open_risk
from risk.engine.positions import PositionState
from risk.engine.profiles import CRAZY, SAFETY_FIRST, STANDARD
from strategies.engine.types import Direction


def long_pos(symbol="KRW-BTC", entry=100.0, qty=10.0, stop=95.0) -> PositionState:
    return PositionState.open(symbol, Direction.LONG, entry, qty, stop, opened_ts=0)


def test_open_risk_sums_stop_distance_times_qty():
    short = PositionState.open("KRW-ETH", Direction.SHORT, 50.0, 4.0, 52.5, opened_ts=0)
    assert open_risk([long_pos(), short]) == pytest.approx(10 * 5 + 4 * 2.5)


def test_a_stop_past_breakeven_carries_no_risk():
    trailed = replace(long_pos(), stop=101.0)
    assert trailed.open_risk == 0.0
    assert open_risk([trailed, long_pos(qty=2.0)]) == pytest.approx(10.0)


def test_remaining_risk_budget_and_portfolio_risk():
    pf = PortfolioState(equity=10_000.0, cash=5_000.0, positions=(long_pos(), long_pos("KRW-XRP", qty=40.0)))
    assert pf.open_risk == pytest.approx(250.0)
    assert pf.portfolio_risk() == pytest.approx(0.025)
    assert pf.remaining_risk_budget(STANDARD) == pytest.approx(10_000 * 0.05 - 250)
    assert pf.remaining_risk_budget(SAFETY_FIRST) == 0.0          # 2 % budget already used up
    assert pf.leverage({"KRW-BTC": 110.0}) == pytest.approx((10 * 110 + 40 * 100) / 10_000)


@pytest.mark.parametrize("regime, profile, expected", [
    (RegimeLabel.BREAKOUT_ROTATION, CRAZY, 7),
    (RegimeLabel.BREAKOUT_ROTATION, STANDARD, 5),
    (RegimeLabel.TREND, CRAZY, 5),
    (RegimeLabel.RANGE, STANDARD, 3),
    (RegimeLabel.RANGE, SAFETY_FIRST, 3),
    (RegimeLabel.TREND, SAFETY_FIRST, 3),
    (RegimeLabel.CHOP, CRAZY, 0),
    (RegimeLabel.PANIC, CRAZY, 0),
    (None, CRAZY, 0),
])
def test_max_positions_is_the_smallest_of_regime_profile_and_ten(regime, profile, expected):
    assert max_positions(regime, profile) == expected


def test_absolute_cap_of_ten_holds_even_for_a_generous_regime_table():
    table = dict(REGIME_MAX_POSITIONS, TREND=25)
    assert max_positions(RegimeLabel.TREND, CRAZY, {RegimeLabel(k): v for k, v in table.items()}) == 10


def test_remaining_slots_never_negative():
    pf = PortfolioState(10_000.0, 0.0, tuple(long_pos(f"S{i}", qty=0.1) for i in range(6)))
    assert pf.remaining_slots(RegimeLabel.RANGE, CRAZY) == 0
    assert pf.remaining_slots(RegimeLabel.BREAKOUT_ROTATION, CRAZY) == 1
    assert pf.summary(RegimeLabel.TREND, STANDARD)["remaining_slots"] == 0


def test_zero_equity_has_no_budget():
    pf = PortfolioState(0.0, 0.0, (long_pos(),))
    assert pf.remaining_risk_budget(CRAZY) == 0.0
    assert math.isinf(pf.portfolio_risk())


@given(st.lists(st.tuples(st.floats(1, 1e6), st.floats(0.001, 1e3), st.floats(0.01, 0.5)), max_size=10),
       st.floats(1, 1e9))
def test_budget_is_never_negative_and_never_above_the_limit(specs, equity):
    positions = tuple(long_pos(f"S{i}", entry=e, qty=q, stop=e * (1 - d)) for i, (e, q, d) in enumerate(specs))
    pf = PortfolioState(equity, equity, positions)
    remaining = pf.remaining_risk_budget(STANDARD)
    assert 0.0 <= remaining <= equity * STANDARD.max_portfolio_risk
    assert remaining + pf.open_risk >= equity * STANDARD.max_portfolio_risk * (1 - 1e-12) or remaining == 0.0
