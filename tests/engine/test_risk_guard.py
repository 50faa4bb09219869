"""Runtime guard [RK-4]: each trip, its severity, how it clears, persistence."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regime.engine.types import RegimeLabel
from risk.engine import guard as g
from risk.engine.guard import (
    ClearMode,
    GuardInputs,
    GuardState,
    Severity,
    TradingState,
    disagreement_share,
    evaluate,
    period_starts,
    reset,
)
from risk.engine.profiles import STANDARD

T0 = int(datetime(2025, 3, 12, 15, 30, tzinfo=UTC).timestamp())    # a Wednesday
P = STANDARD


def inputs(ts: int = T0, **kw) -> GuardInputs:
    kw.setdefault("equity", 10_000.0)
    return GuardInputs(now_ts=ts, **kw)


def test_quiet_snapshot_is_active():
    d = evaluate(inputs(), P)
    assert d.trading_state is TradingState.ACTIVE and d.allows_entries and d.trips == ()
    assert d.state.peak_equity == 10_000.0


def test_period_boundaries_are_utc():
    starts = period_starts(T0)
    assert starts["day"] == int(datetime(2025, 3, 12, tzinfo=UTC).timestamp())
    assert starts["week"] == int(datetime(2025, 3, 10, tzinfo=UTC).timestamp())
    assert starts["month"] == int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
    assert g.next_month_start(int(datetime(2025, 12, 31, 23, tzinfo=UTC).timestamp())) == \
        int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


@pytest.mark.parametrize("field, code, clears", [
    ("day_return", g.DAILY_LOSS_LIMIT, datetime(2025, 3, 13, tzinfo=UTC)),
    ("week_return", g.WEEKLY_LOSS_LIMIT, datetime(2025, 3, 17, tzinfo=UTC)),
    ("month_return", g.MONTHLY_LOSS_LIMIT, datetime(2025, 4, 1, tzinfo=UTC)),
])
def test_loss_limits_halt_until_the_next_period(field, code, clears):
    limit = {"day_return": P.daily_loss_limit, "week_return": P.weekly_loss_limit,
             "month_return": P.monthly_loss_limit}[field]
    assert evaluate(inputs(**{field: -limit + 0.001}), P).allows_entries
    d = evaluate(inputs(**{field: -limit}), P)
    (trip,) = d.trips
    assert (trip.code, trip.severity, trip.clear_mode) == (code, Severity.HALT, ClearMode.TIME)
    assert trip.clears_at_ts == int(clears.timestamp())
    assert d.trading_state is TradingState.HALTED and d.new_trips == d.trips and d.changed
    # recovering within the period does not clear it
    later = evaluate(inputs(trip.clears_at_ts - 1), P, d.state)
    assert later.trading_state is TradingState.HALTED and not later.changed
    # the new period starts with a fresh return
    fresh = evaluate(inputs(trip.clears_at_ts), P, later.state)
    assert fresh.trading_state is TradingState.ACTIVE and fresh.cleared == (trip,)


def test_consecutive_losses_pause_then_need_a_new_run():
    d = evaluate(inputs(consecutive_losses=5), P)
    (trip,) = d.trips
    assert trip.clears_at_ts == T0 + P.consecutive_loss_cooldown_seconds
    after = evaluate(inputs(trip.clears_at_ts, consecutive_losses=5), P, d.state)
    assert after.allows_entries and after.state.consecutive_loss_ack == 5
    assert evaluate(inputs(trip.clears_at_ts + 60, consecutive_losses=9), P, after.state).allows_entries
    assert not evaluate(inputs(trip.clears_at_ts + 60, consecutive_losses=10), P, after.state).allows_entries
    # a win resets the counter and the acknowledgement
    won = evaluate(inputs(trip.clears_at_ts + 60, consecutive_losses=0), P, after.state)
    assert won.state.consecutive_loss_ack == 0


def test_drawdown_limit_needs_a_manual_reset_that_rebases_the_peak():
    s = evaluate(inputs(equity=10_000.0), P).state
    d = evaluate(inputs(T0 + 60, equity=8_500.0), P, s)
    assert d.codes == (g.MAX_DRAWDOWN,) and d.drawdown == pytest.approx(0.15)
    # equity recovers above the limit: still halted, manual reset only
    d2 = evaluate(inputs(T0 + 10 * 86_400, equity=9_500.0), P, d.state)
    assert d2.codes == (g.MAX_DRAWDOWN,)
    s3 = reset(d2.state, equity=8_600.0, consecutive_losses=0, codes=(g.MAX_DRAWDOWN,))
    assert s3.trading_state is TradingState.ACTIVE and s3.peak_equity == 8_600.0
    assert evaluate(inputs(T0 + 10 * 86_400 + 60, equity=8_600.0), P, s3).allows_entries


@pytest.mark.parametrize("kw, code, calm", [
    ({"atr_pct": 5.0, "atr_pct_baseline": 2.0}, g.VOLATILITY_SPIKE, {"atr_pct": 3.9, "atr_pct_baseline": 2.0}),
    ({"api_error_rate": 0.25, "api_calls": 40}, g.API_ERROR_RATE, {"api_error_rate": 0.05, "api_calls": 40}),
    ({"realised_slippage": 0.02, "expected_slippage": 0.001}, g.SLIPPAGE_ANOMALY,
     {"realised_slippage": 0.007, "expected_slippage": 0.001}),
    ({"model_disagreement": 0.6}, g.MODEL_DISAGREEMENT, {"model_disagreement": 0.3}),
])
def test_condition_trips_halt_and_clear_with_hysteresis_after_the_hold(kw, code, calm):
    d = evaluate(inputs(**kw), P)
    assert d.codes == (code,) and d.trading_state is TradingState.HALTED
    # calm, but before the hold time: still halted
    assert not evaluate(inputs(T0 + P.guard_min_hold_seconds - 1, **calm), P, d.state).allows_entries
    done = evaluate(inputs(T0 + P.guard_min_hold_seconds, **calm), P, d.state)
    assert done.allows_entries and done.cleared[0].code == code


def test_hysteresis_keeps_a_trip_just_below_the_trigger():
    d = evaluate(inputs(atr_pct=5.0, atr_pct_baseline=2.0), P)
    near = evaluate(inputs(T0 + 3600, atr_pct=4.5, atr_pct_baseline=2.0), P, d.state)   # 2.25x > 0.8 x 2.5
    assert near.codes == (g.VOLATILITY_SPIKE,)


def test_api_error_rate_needs_a_sample():
    assert evaluate(inputs(api_error_rate=1.0, api_calls=3), P).allows_entries


def test_db_and_exchange_outage_halt_for_one_tick_of_confirmation():
    d = evaluate(inputs(db_ok=False, exchange_ok=False), P)
    assert set(d.codes) == {g.DB_UNAVAILABLE, g.EXCHANGE_UNAVAILABLE}
    assert not evaluate(inputs(T0 + 30), P, d.state).allows_entries
    assert evaluate(inputs(T0 + 60), P, d.state).allows_entries


def test_panic_regime_reduces_and_clears_when_the_regime_changes():
    d = evaluate(inputs(regime=RegimeLabel.PANIC), P)
    assert d.trading_state is TradingState.REDUCING and d.codes == (g.PANIC_REGIME,)
    assert d.reduce_fraction == 0.0         # PANIC is reduced per position by the position manager
    assert evaluate(inputs(T0 + P.guard_min_hold_seconds, regime=RegimeLabel.TREND), P, d.state).allows_entries


def test_leverage_above_limit_reduces_to_the_limit():
    d = evaluate(inputs(leverage=1.6), P)
    assert d.trading_state is TradingState.REDUCING
    assert (d.reduce_code, d.reduce_fraction) == (g.LEVERAGE_LIMIT, pytest.approx(1 - 1 / 1.6))
    assert evaluate(inputs(T0 + 60, leverage=0.9), P, d.state).allows_entries


def test_master_kill_halts_until_switched_off():
    d = evaluate(inputs(master_kill=True), P)
    assert d.codes == (g.MASTER_KILL,) and d.trading_state is TradingState.HALTED
    assert evaluate(inputs(T0 + 1), P, d.state).allows_entries


def test_emergency_stop_liquidates_and_is_latched_until_reset():
    d = evaluate(inputs(emergency_stop=True, master_kill=True), P)
    assert d.trading_state is TradingState.REDUCING and d.liquidate_all
    assert (d.reduce_fraction, d.reduce_code) == (1.0, g.EMERGENCY_STOP)
    later = evaluate(inputs(T0 + 86_400), P, d.state)
    assert later.liquidate_all and later.codes == (g.EMERGENCY_STOP,)
    cleared = reset(later.state, equity=10_000.0, consecutive_losses=0)
    assert cleared.trips == () and evaluate(inputs(T0 + 86_460), P, cleared).allows_entries


def test_severity_orders_the_trading_state():
    d = evaluate(inputs(day_return=-0.2, leverage=3.0), P)
    assert d.trading_state is TradingState.REDUCING
    assert {t.severity for t in d.trips} == {Severity.HALT, Severity.REDUCE}


def test_state_survives_a_json_round_trip():
    d = evaluate(inputs(day_return=-0.2, emergency_stop=True, atr_pct=9.0, atr_pct_baseline=1.0), P)
    restored = GuardState.from_dict(json.loads(json.dumps(d.state.to_dict())))
    assert restored == d.state
    assert GuardState.from_dict(None) == GuardState()


def test_the_clock_never_runs_backwards():
    d = evaluate(inputs(), P)
    with pytest.raises(ValueError):
        evaluate(inputs(T0 - 1), P, d.state)


def test_disagreement_share_counts_strong_conflicts():
    a = [90.0, 80.0, 10.0, 75.0]
    b = [85.0, 20.0, 15.0, 72.0]
    da, db = [1, 1, 1, 1], [1, 1, 1, -1]
    # strong markets: 0, 1, 3; conflicts: 1 (60 points apart), 3 (opposite directions)
    assert disagreement_share(a, da, b, db) == pytest.approx(2 / 3)
    assert disagreement_share([10.0], [1], [10.0], [-1]) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.3, 0.1), st.integers(0, 12), st.booleans(), st.floats(0.5, 1.5),
                          st.sampled_from(list(RegimeLabel))), min_size=1, max_size=25))
def test_state_matches_the_worst_trip_and_never_enters_with_trips(steps):
    state, ts, equity = None, T0, 10_000.0
    for day_ret, losses, db_ok, eq_move, regime in steps:
        ts += 1800
        equity *= eq_move
        d = evaluate(inputs(ts, equity=equity, day_return=day_ret, consecutive_losses=losses, db_ok=db_ok,
                            regime=regime), P, state)
        worst = max((t.severity.rank for t in d.trips), default=0)
        assert d.trading_state is [TradingState.ACTIVE, TradingState.HALTED, TradingState.REDUCING,
                                   TradingState.REDUCING][worst]
        assert d.allows_entries == (d.trips == ())
        assert all(t.code and t.detail for t in d.trips)
        assert len({t.code for t in d.trips}) == len(d.trips)
        state = replace(d.state)
