"""Risk profiles: SPEC section 7 defaults, JSON round trip, validation, AI MODE fallback."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk.engine.profiles import (
    ABSOLUTE_MAX_POSITIONS,
    CRAZY,
    DEFAULTS,
    PARAMETERS,
    PROFIT_FIRST,
    SAFETY_FIRST,
    STANDARD,
    ProfileError,
    ProfileName,
    RiskProfile,
    ai_mode_profile,
    profile_for,
)

SPEC_TABLE = {
    # name: (risk/trade, max portfolio risk, multiplier, entry, daily loss, consecutive, cap)
    "SAFETY_FIRST": (0.0025, 0.02, 0.8, 80.0, 0.02, 3, 3),
    "STANDARD": (0.005, 0.05, 1.0, 70.0, 0.05, 5, 5),
    "PROFIT_FIRST": (0.01, 0.08, 1.15, 65.0, 0.07, 6, 7),
    "CRAZY": (0.02, 0.15, 1.3, 60.0, 0.10, 8, 10),
}


@pytest.mark.parametrize("name", list(SPEC_TABLE))
def test_defaults_match_the_spec_table(name):
    p = DEFAULTS[name]
    assert (p.risk_per_trade, p.max_portfolio_risk, p.risk_multiplier, p.entry_threshold,
            p.daily_loss_limit, p.consecutive_loss_limit, p.max_positions_cap) == SPEC_TABLE[name]
    assert p.exit_threshold == 40.0
    assert p.cadence_seconds == 60
    assert p.name == name


def test_profiles_order_by_appetite_for_risk():
    chain = [SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY]
    for field_name in ("risk_per_trade", "max_portfolio_risk", "daily_loss_limit", "weekly_loss_limit",
                       "monthly_loss_limit", "max_drawdown", "max_positions_cap"):
        values = [getattr(p, field_name) for p in chain]
        assert values == sorted(values), field_name
    assert SAFETY_FIRST.allow_market_fallback is False
    assert max(p.max_positions_cap for p in chain) == ABSOLUTE_MAX_POSITIONS


@pytest.mark.parametrize("profile", [SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY])
def test_to_dict_is_json_and_round_trips(profile):
    data = json.loads(json.dumps(profile.to_dict()))
    back = RiskProfile.from_dict(data)
    assert back == profile
    assert hash(back) == hash(profile)


def test_every_field_documents_its_bounds_for_the_forms():
    assert set(PARAMETERS) == set(STANDARD.to_dict())
    assert PARAMETERS["risk_per_trade"]["unit"] == "fraction of equity"
    assert PARAMETERS["entry_threshold"]["hi"] == 100.0


def test_missing_keys_come_from_the_named_default():
    p = RiskProfile.from_dict({"name": "CRAZY", "entry_threshold": 75})
    assert p.entry_threshold == 75.0 and isinstance(p.entry_threshold, float)
    assert p.risk_per_trade == CRAZY.risk_per_trade


def test_all_problems_are_reported_at_once():
    with pytest.raises(ProfileError) as exc:
        RiskProfile.from_dict({"risk_per_trade": -0.01, "entry_threshold": 150, "foo": 1,
                               "consecutive_loss_limit": True, "allow_market_fallback": "yes"})
    errors = exc.value.errors
    assert "unknown parameter 'foo'" in errors
    assert "consecutive_loss_limit: expected an integer, got True" in errors
    assert "allow_market_fallback: expected true/false, got 'yes'" in errors
    assert "risk_per_trade must be > 0.0, got -0.01" in errors
    assert "entry_threshold must be <= 100.0, got 150.0" in errors


@pytest.mark.parametrize("changes, message", [
    ({"exit_threshold": 70.0}, "exit_threshold (70.0) must be below entry_threshold (70.0)"),
    ({"risk_per_trade": 0.06}, "risk_per_trade (0.06) cannot exceed max_portfolio_risk (0.05)"),
    ({"entry_threshold": -1.0}, "entry_threshold must be >= 0.0, got -1.0"),
    ({"max_positions_cap": 11}, "max_positions_cap must be <= 10, got 11"),
    ({"take_profit_plan": ((2.0, 0.5), (1.0, 0.5))}, "take_profit_plan[1] r_multiple 1.0 must be > 0 and ascending"),
    ({"take_profit_plan": ((1.0, 0.6), (2.0, 0.6))}, "take_profit_plan fractions sum to 1.2000 > 1"),
    ({"module_weights": {"TP": -1.0}}, "module_weights must be finite and >= 0 (bad: TP)"),
    ({"risk_multiplier": float("nan")}, "risk_multiplier must be a finite number, got nan"),
    ({"consecutive_loss_limit": 2.5}, "consecutive_loss_limit must be an integer, got 2.5"),
    ({"drawdown_scale_start": 0.2}, "drawdown_scale_start (0.2) must be below max_drawdown (0.15)"),
])
def test_invalid_values_raise_clear_errors(changes, message):
    with pytest.raises(ProfileError) as exc:
        replace(STANDARD, **changes)
    assert message in exc.value.errors


def test_take_profit_plan_accepts_pairs_and_objects():
    p = RiskProfile.from_dict({"take_profit_plan": [[1.5, 0.5], {"r": 3, "fraction": 0.25}]})
    assert p.take_profit_plan == ((1.5, 0.5), (3.0, 0.25))


def test_ai_mode_falls_back_to_standard_until_a_model_is_live():
    fallback = ai_mode_profile(None)
    assert fallback.name == "AI_MODE"
    assert replace(fallback, name="STANDARD") == STANDARD
    live = ai_mode_profile({"entry_threshold": 72.5, "risk_per_trade": 0.004})
    assert (live.name, live.entry_threshold, live.risk_per_trade) == ("AI_MODE", 72.5, 0.004)
    assert live.max_portfolio_risk == STANDARD.max_portfolio_risk
    with pytest.raises(ProfileError):
        ai_mode_profile({"entry_threshold": 300})


def test_profile_for_resolves_stored_json_and_rejects_unknown_names():
    assert profile_for("PROFIT_FIRST") is PROFIT_FIRST
    edited = profile_for("SAFETY_FIRST", {"entry_threshold": 85})
    assert (edited.name, edited.entry_threshold, edited.max_positions_cap) == ("SAFETY_FIRST", 85.0, 3)
    assert profile_for(ProfileName.AI_MODE).name == "AI_MODE"
    with pytest.raises(ProfileError):
        profile_for("YOLO")


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True))
def test_a_constructed_profile_is_always_valid(risk, entry):
    """Either construction fails with ProfileError or every bound holds."""
    try:
        p = replace(STANDARD, risk_per_trade=risk, entry_threshold=entry)
    except ProfileError as exc:
        assert exc.errors
        return
    assert 0 < p.risk_per_trade <= p.max_portfolio_risk
    assert p.exit_threshold < p.entry_threshold <= 100
