"""Pre-trade checklist [RK-2]: the eight checks, no short-circuit, fail-closed inputs."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.engine.types import MarketInfo, OrderBook
from regime.engine.types import RegimeInputs, RegimeLabel, RegimeState
from risk.engine.checks import CHECK_NAMES, CheckContext, ExchangeHealth, check_correlation, run_checklist
from risk.engine.correlation import correlation_matrix, correlations_with, log_returns
from risk.engine.guard import GuardInputs, evaluate
from risk.engine.portfolio import PortfolioState
from risk.engine.positions import PositionState
from risk.engine.profiles import STANDARD
from strategies.engine.types import Direction, MarketSignal

T0 = 1_741_793_400
MARKET = MarketInfo("KRW-ETH", "ETH", "KRW", min_notional=Decimal("5000"))
BOOK = OrderBook("KRW-ETH", T0, np.array([[4_999_000.0, 2.0]] * 5), np.array([[5_001_000.0, 2.0]] * 5))
REGIME = RegimeState(RegimeLabel.TREND, 70.0, 0.8, RegimeInputs(30, 2, 0.6, 0.02, 0.5, 0.2))
ACTIVE = evaluate(GuardInputs(now_ts=T0, equity=10_000_000.0), STANDARD)


def signal(score: float = 80.0, direction: Direction = Direction.LONG, symbol: str = "KRW-ETH") -> MarketSignal:
    return MarketSignal(symbol, T0, {"TP": score}, score, score, score, direction, ("TP_PULLBACK",))


def held(symbol: str, risk: float = 10_000.0) -> PositionState:
    return PositionState.open(symbol, Direction.LONG, 100_000.0, risk / 5_000.0, 95_000.0, opened_ts=T0 - 600)


def ctx(**kw) -> CheckContext:
    base = dict(signal=signal(), profile=STANDARD, regime=REGIME, market=MARKET, book=BOOK,
                portfolio=PortfolioState(10_000_000.0, 10_000_000.0), guard=ACTIVE, now_ts=T0,
                order_value=1_000_000.0)
    base.update(kw)
    return CheckContext(**base)


def denial_codes(**kw) -> tuple[str, ...]:
    return run_checklist(ctx(**kw)).reason_codes


def test_everything_in_order_passes_all_eight():
    result = run_checklist(ctx())
    assert result.passed
    assert tuple(r.check for r in result.results) == CHECK_NAMES
    assert [r.code for r in result.results] == ["SCORE_OK", "REGIME_OK", "LIQUIDITY_OK", "RISK_BUDGET_OK", "CORR_OK",
                                                "HEALTH_OK", "MARKET_OK", "GUARD_OK"]


@pytest.mark.parametrize("kw, code", [
    ({"signal": signal(69.9)}, "SCORE_BELOW_THRESHOLD"),
    ({"signal": signal(float("nan"))}, "SCORE_INVALID"),
    ({"signal": signal(direction=Direction.NONE)}, "NO_DIRECTION"),
    ({"signal": signal(direction=Direction.SHORT)}, "SHORT_NOT_ALLOWED"),
    ({"book": None}, "NO_ORDER_BOOK"),
    ({"book": replace(BOOK, asks=np.array([[5_100_000.0, 2.0]]))}, "SPREAD_TOO_WIDE"),
    ({"order_value": 3_000_001.0 * 5}, "LIQUIDITY_TOO_THIN"),
    ({"health": ExchangeHealth(exchange_ok=False)}, "EXCHANGE_DOWN"),
    ({"health": ExchangeHealth(data_age_seconds=600)}, "MARKET_DATA_STALE"),
    ({"health": ExchangeHealth(api_error_rate=0.3, api_calls=50)}, "API_ERROR_RATE_HIGH"),
    ({"health": ExchangeHealth(maintenance=True)}, "EXCHANGE_MAINTENANCE"),
    ({"market": replace(MARKET, caution=True)}, "MARKET_CAUTION"),
    ({"blacklist": {"KRW-ETH": T0 + 600}}, "SYMBOL_BLACKLISTED"),
    ({"guard": None}, "GUARD_NO_DECISION"),
])
def test_each_denial_has_its_code(kw, code):
    assert denial_codes(**kw) == (code,)


@pytest.mark.parametrize("regime, code", [(RegimeLabel.CHOP, "REGIME_NO_ENTRIES"),
                                           (replace(REGIME, label=RegimeLabel.PANIC), "REGIME_NO_ENTRIES"),
                                           (None, "REGIME_UNKNOWN")])
def test_chop_panic_and_unknown_regimes_deny_and_leave_no_slots(regime, code):
    # [RG-5]: these regimes also allow 0 positions, which the budget check reports as well
    assert denial_codes(regime=regime) == (code, "MAX_POSITIONS_REACHED")


def test_an_expired_blacklist_entry_no_longer_denies():
    assert run_checklist(ctx(blacklist={"KRW-ETH": T0})).passed


def test_liquidity_ratio_boundary():
    depth = BOOK.depth_value(5)          # 5 x 2 ETH a side, ~50M KRW
    assert run_checklist(ctx(order_value=0.3 * depth)).passed
    assert denial_codes(order_value=0.3 * depth * 1.001) == ("LIQUIDITY_TOO_THIN",)


def test_portfolio_checks():
    full = PortfolioState(10_000_000.0, 0.0, tuple(held(f"KRW-C{i}", 1_000.0) for i in range(5)))
    assert denial_codes(portfolio=full) == ("MAX_POSITIONS_REACHED",)
    spent = PortfolioState(10_000_000.0, 0.0, (held("KRW-A", 460_000.0),))   # 40k of 500k budget left
    assert denial_codes(portfolio=spent) == ("RISK_BUDGET_EXHAUSTED",)
    dup = PortfolioState(10_000_000.0, 0.0, (held("KRW-ETH"),))
    assert denial_codes(portfolio=dup) == ("ALREADY_IN_POSITION",)


def test_correlation_limits():
    three = PortfolioState(10_000_000.0, 0.0, tuple(held(f"KRW-C{i}") for i in range(3)))
    assert denial_codes(portfolio=three, correlations=np.array([0.9, 0.8, 0.75])) == ("CORR_TOO_MANY_HIGH",)
    assert run_checklist(ctx(portfolio=three, correlations=np.array([0.9, 0.8, 0.1]))).passed
    two = PortfolioState(10_000_000.0, 0.0, tuple(held(f"KRW-C{i}") for i in range(2)))
    assert denial_codes(portfolio=two, correlations=np.array([0.85, 0.82])) == ("CORR_AVG_TOO_HIGH",)
    unknown = check_correlation(ctx(portfolio=two, correlations=np.array([np.nan, np.nan])))
    assert unknown.passed and unknown.code == "CORR_NO_DATA"


def test_correlation_from_returns():
    rng = np.random.default_rng(0)
    lead = rng.normal(0, 0.01, 500)
    cand = lead + rng.normal(0, 0.002, 500)
    others = np.vstack([lead + rng.normal(0, 0.002, 500) for _ in range(3)])
    three = PortfolioState(10_000_000.0, 0.0, tuple(held(f"KRW-C{i}") for i in range(3)))
    assert denial_codes(portfolio=three, candidate_returns=cand, open_returns=others) == ("CORR_TOO_MANY_HIGH",)
    corr = correlations_with(cand, others)
    assert corr.shape == (3,) and np.all(corr > 0.9)


def test_correlation_matrix_matches_pandas_with_gaps():
    import pandas as pd

    rng = np.random.default_rng(1)
    close = np.exp(np.cumsum(rng.normal(0, 0.01, (4, 300)), axis=1))
    close[2, :40] = np.nan
    r = log_returns(close)
    r[0, 0] = r[0, 0] + r[1, 0]
    expected = pd.DataFrame(r.T).corr(min_periods=30).to_numpy()
    np.testing.assert_allclose(correlation_matrix(r), expected, atol=1e-12)
    short = correlation_matrix(r[:, :20])
    assert np.isnan(short).all()          # 19 returns < min_periods: unknown, not a number


def test_all_failures_are_reported_not_just_the_first():
    halted = evaluate(GuardInputs(now_ts=T0, equity=1.0, day_return=-0.5), STANDARD)
    codes = denial_codes(signal=signal(10.0), regime=RegimeLabel.CHOP, book=None, guard=halted,
                         health=ExchangeHealth(exchange_ok=False, maintenance=True))
    assert codes == ("SCORE_BELOW_THRESHOLD", "REGIME_NO_ENTRIES", "NO_ORDER_BOOK", "MAX_POSITIONS_REACHED",
                     "EXCHANGE_DOWN",
                     "EXCHANGE_MAINTENANCE", "GUARD_HALTED")


def test_guard_reducing_denies_with_the_trip_codes_in_the_detail():
    panic = evaluate(GuardInputs(now_ts=T0, equity=1.0, regime=RegimeLabel.PANIC), STANDARD)
    (denial,) = run_checklist(ctx(guard=panic)).denials
    assert (denial.code, denial.detail) == ("GUARD_REDUCING", "PANIC_REGIME")


@settings(max_examples=200, deadline=None)
@given(score=st.floats(0, 100), day_ret=st.floats(-0.2, 0.0), losses=st.integers(0, 10),
       master=st.booleans(), db_ok=st.booleans(), regime=st.sampled_from(list(RegimeLabel)),
       order_value=st.floats(0, 1e8), atr=st.floats(0.5, 8.0))
def test_a_halted_trader_never_opens_and_every_denial_has_a_reason(score, day_ret, losses, master, db_ok, regime,
                                                                   order_value, atr):
    guard = evaluate(GuardInputs(now_ts=T0, equity=10_000_000.0, day_return=day_ret, consecutive_losses=losses,
                                 master_kill=master, db_ok=db_ok, regime=regime, atr_pct=atr,
                                 atr_pct_baseline=2.0), STANDARD)
    result = run_checklist(ctx(signal=signal(score), regime=replace(REGIME, label=regime), guard=guard,
                               order_value=order_value))
    if not guard.allows_entries:
        assert not result.passed
        assert any(d.code in ("GUARD_HALTED", "GUARD_REDUCING") for d in result.denials)
    for r in result.results:
        assert r.code and r.check in CHECK_NAMES
    assert len(result.results) == 8
    assert result.passed == (not result.denials)
