"""Position manager [RK-5]: stops, scale-outs, trailing, time stop, score exit, PANIC."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.engine.types import MarketInfo, Side
from regime.engine.types import RegimeLabel
from risk.engine.positions import (
    EMERGENCY_LIQUIDATE,
    GUARD_REDUCE,
    PANIC_CLOSE,
    PANIC_REDUCE,
    SCORE_EXIT,
    STOP_LOSS,
    TIME_STOP,
    TRAILING_STOP,
    OrderStyle,
    PositionState,
    manage_position,
)
from risk.engine.profiles import STANDARD
from strategies.engine.types import Direction

# entry 100, stop 95: 1R = 5. STANDARD: TP at 1R and 2R (1/3 each), trail 3 ATR from 1R.
PROFILE = replace(STANDARD, time_stop_seconds=3600, score_exit_min_hold_seconds=0)
MARKET = MarketInfo("KRW-X", "X", "KRW", min_notional=Decimal("0"), taker_fee=Decimal("0"))


def pos(**kw) -> PositionState:
    base = PositionState.open("KRW-X", Direction.LONG, 100.0, 9.0, 95.0, opened_ts=0)
    return replace(base, **kw)


def tick(p: PositionState, price: float, **kw):
    kw.setdefault("atr", 1.0)
    kw.setdefault("now_ts", 60)
    kw.setdefault("market", MARKET)
    return manage_position(p, profile=PROFILE, price=price, **kw)


def test_nothing_happens_inside_the_range():
    u = tick(pos(), 101.0)
    assert u.intents == () and u.state.stop == 95.0 and u.state.highest_price == 101.0


def test_stop_loss_closes_at_market_when_the_bar_trades_through():
    u = tick(pos(), 96.0, low=94.9)
    (i,) = u.intents
    assert (i.reason_code, i.style, i.close_all, i.qty, i.side) == (STOP_LOSS, OrderStyle.MARKET, True,
                                                                     Decimal("9"), Side.SELL)
    assert u.state.closing
    assert tick(u.state, 90.0).intents == ()          # a close in flight is not requested twice


def test_scale_out_plan_then_breakeven_then_trail():
    u = tick(pos(), 105.5, high=105.5)                # 1.1R: first third, stop to break-even
    (i,) = u.intents
    assert (i.reason_code, i.qty, i.style, i.close_all, i.price_hint) == ("TAKE_PROFIT_1", Decimal("3"),
                                                                          OrderStyle.LIMIT, False, 105.0)
    assert u.state.scale_outs_done == 1
    # trailing from 1R: best 105.5 - 3 x ATR 1 = 102.5 beats break-even 100
    assert u.state.stop == 102.5 and u.state.trailing_active
    state = u.state.on_fill(3.0)
    u2 = tick(state, 111.0, high=111.0)               # 2.2R: second third
    (i2,) = u2.intents
    assert (i2.reason_code, i2.qty) == ("TAKE_PROFIT_2", Decimal("3"))
    assert u2.state.stop == 108.0
    u3 = tick(u2.state.on_fill(3.0), 108.5, low=107.9)
    (i3,) = u3.intents
    assert (i3.reason_code, i3.qty, i3.style) == (TRAILING_STOP, Decimal("3"), OrderStyle.MARKET)


def test_both_levels_in_one_bar_emit_two_scale_outs():
    u = tick(pos(), 110.0, high=111.0)
    assert [i.reason_code for i in u.intents] == ["TAKE_PROFIT_1", "TAKE_PROFIT_2"]
    assert sum(i.qty for i in u.intents) == Decimal("6")


def test_a_scale_out_leaving_dust_closes_everything():
    market = replace(MARKET, min_notional=Decimal("500"))   # 9 x 105 = 945: 2/3 left is 630, 1/3 is 315
    u = tick(pos(), 105.0, high=105.0, market=market)
    assert u.notes == ("TP_BELOW_MIN_ORDER",) and u.intents == ()
    small = pos(qty=6.0)                                     # 3 sold would leave 3 x 105 = 315 < 500
    u2 = tick(small, 105.0, high=105.0, market=market)
    (i,) = u2.intents
    assert i.close_all and i.qty == Decimal("6")


def test_time_stop_closes_a_stale_position_only():
    assert tick(pos(), 101.0, now_ts=3599).intents == ()
    (i,) = tick(pos(), 101.0, now_ts=3600).intents
    assert (i.reason_code, i.style) == (TIME_STOP, OrderStyle.LIMIT_THEN_MARKET)
    assert tick(pos(), 103.0, now_ts=7200).intents == ()      # 0.6R >= 0.5R: working, kept


def test_score_exit_at_or_below_the_exit_threshold():
    assert tick(pos(), 101.0, score=40.1).intents == ()
    (i,) = tick(pos(), 101.0, score=40.0).intents
    assert i.reason_code == SCORE_EXIT and i.close_all


def test_score_exit_waits_for_the_minimum_hold():
    p = replace(PROFILE, score_exit_min_hold_seconds=4 * 3600, time_stop_seconds=0)
    assert manage_position(pos(), profile=p, price=101.0, atr=1.0, now_ts=4 * 3600 - 60, score=10.0,
                           market=MARKET).intents == ()
    (i,) = manage_position(pos(), profile=p, price=101.0, atr=1.0, now_ts=4 * 3600, score=10.0,
                           market=MARKET).intents
    assert i.reason_code == SCORE_EXIT
    # the stop still applies from the start
    (s,) = manage_position(pos(), profile=p, price=94.0, atr=1.0, now_ts=60, score=10.0, market=MARKET).intents
    assert s.reason_code == STOP_LOSS


def test_panic_closes_losers_and_reduces_winners_once():
    (i,) = tick(pos(), 99.0, regime=RegimeLabel.PANIC).intents
    assert i.reason_code == PANIC_CLOSE
    u = tick(pos(), 104.0, regime=RegimeLabel.PANIC)
    (r,) = u.intents
    assert (r.reason_code, r.qty, r.close_all) == (PANIC_REDUCE, Decimal("4.5"), False)
    assert u.state.stop == 100.0                        # remainder protected at break-even
    again = tick(u.state.on_fill(4.5), 104.0, regime=RegimeLabel.PANIC)
    assert again.intents == ()                          # once per episode
    calm = tick(again.state, 104.0, regime=RegimeLabel.TREND)
    assert "PANIC" not in calm.state.reductions         # the next episode reduces again


def test_no_market_fallback_profile_uses_limit_orders():
    p = replace(PROFILE, allow_market_fallback=False)
    u = manage_position(pos(), profile=p, price=101.0, atr=1.0, now_ts=60, score=10.0)
    assert u.intents[0].style is OrderStyle.LIMIT


def test_guard_reduction_and_emergency_liquidation():
    u = tick(pos(), 101.0, reduce_fraction=1 / 3)
    (i,) = u.intents
    assert (i.reason_code, i.qty) == (GUARD_REDUCE, Decimal("3"))
    assert tick(u.state.on_fill(3.0), 101.0, reduce_fraction=1 / 3).intents == ()
    (e,) = tick(pos(), 101.0, liquidate_all=True).intents
    assert (e.reason_code, e.style, e.qty) == (EMERGENCY_LIQUIDATE, OrderStyle.MARKET, Decimal("9"))


def test_short_positions_mirror_the_rules():
    short = PositionState.open("KRW-X", Direction.SHORT, 100.0, 9.0, 105.0, opened_ts=0)
    u = tick(short, 94.0, low=94.0)
    assert u.intents[0].reason_code == "TAKE_PROFIT_1" and u.intents[0].side is Side.BUY
    assert u.state.stop == 97.0                          # 94 + 3 ATR
    (s,) = tick(u.state, 96.0, high=97.2).intents
    assert s.reason_code == TRAILING_STOP


def test_state_round_trips_through_json():
    p = replace(pos(), scale_outs_done=1, reductions=("PANIC",), trailing_active=True)
    assert PositionState.from_dict(p.to_dict()) == p


def test_invalid_positions_are_rejected():
    with pytest.raises(ValueError):
        PositionState.open("KRW-X", Direction.LONG, 100.0, 1.0, 101.0, opened_ts=0)


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.lists(st.tuples(st.floats(-0.05, 0.05), st.floats(0.1, 5.0)), min_size=1, max_size=60))
def test_trailing_stop_only_ever_tightens(is_long, moves):
    """Whatever the path and ATR, a long's stop never falls and a short's never rises."""
    direction = Direction.LONG if is_long else Direction.SHORT
    state = PositionState.open("KRW-X", direction, 100.0, 9.0, 95.0 if is_long else 105.0, opened_ts=0)
    price = 100.0
    for n, (move, atr) in enumerate(moves):
        price = max(price * (1 + move), 1e-6)
        u = manage_position(state, profile=PROFILE, price=price, atr=atr, now_ts=n, market=MARKET,
                            regime=RegimeLabel.PANIC if n % 17 == 16 else RegimeLabel.TREND)
        if is_long:
            assert u.state.stop >= state.stop
        else:
            assert u.state.stop <= state.stop
        assert all(i.qty >= 0 and i.reason_code for i in u.intents)
        assert sum(i.qty for i in u.intents) <= Decimal(repr(state.qty))
        state = u.state
        if state.closing:
            break
        for i in u.intents:
            state = state.on_fill(float(i.qty))
