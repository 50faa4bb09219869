"""Risk profiles (SPEC section 7): the single source of truth for parameter names, defaults,
units and validation.

The Django layer stores a profile as JSON (``to_dict``) and loads it back with ``from_dict``;
forms and admin read ``PARAMETERS`` for labels, units and bounds. Every fraction is a plain
fraction (0.005 = 0.5 %), thresholds are score points 0..100, durations are seconds.

AI MODE takes its parameters from the live model version and falls back to STANDARD until one
exists (``ai_mode_profile``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from enum import StrEnum
from typing import Any


class ProfileName(StrEnum):
    SAFETY_FIRST = "SAFETY_FIRST"
    STANDARD = "STANDARD"
    PROFIT_FIRST = "PROFIT_FIRST"
    CRAZY = "CRAZY"
    AI_MODE = "AI_MODE"


class ProfileError(ValueError):
    """A profile with invalid or unknown parameters; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid risk profile: " + "; ".join(errors))


_CALIBRATION_NAMES = ("REAL_V1", "RAW")   # strategies.engine.calibration.CALIBRATIONS (tested equal)
ABSOLUTE_MAX_POSITIONS = 10          # [RG-5]: never more, whatever the profile says
DEFAULT_MODULE_WEIGHTS: dict[str, float] = {"TP": 0.30, "VCB": 0.25, "REGIME": 0.20, "LSR": 0.15, "LF": 0.10}
DEFAULT_TAKE_PROFIT_PLAN: tuple[tuple[float, float], ...] = ((1.0, 1 / 3), (2.0, 1 / 3))


def _p(default: Any, lo: float | None = None, hi: float | None = None, *, unit: str = "", doc: str = "",
       lo_open: bool = False) -> Any:
    """A profile field with its bounds and help text in the metadata (read by forms and admin)."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "unit": unit, "doc": doc}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RiskProfile:
    """Every tunable risk parameter of one profile. Immutable; ``replace()`` to derive one."""

    name: str = _p(ProfileName.STANDARD.value, doc="profile name")
    # --- SPEC section 7 table -----------------------------------------------------------------
    risk_per_trade: float = _p(0.005, 0.0, 0.10, lo_open=True, unit="fraction of equity",
                               doc="equity lost if one trade hits its stop (before the drawdown scale)")
    max_portfolio_risk: float = _p(0.05, 0.0, 0.50, lo_open=True, unit="fraction of equity",
                                   doc="sum of open stop-loss risk allowed at once [RK-3]")
    risk_multiplier: float = _p(1.0, 0.0, 3.0, lo_open=True, doc="multiplies the final score [SC-3]")
    entry_threshold: float = _p(70.0, 0.0, 100.0, unit="score", doc="enter when final score >= this")
    exit_threshold: float = _p(40.0, 0.0, 100.0, unit="score", doc="exit a held market when score <= this")
    score_calibration: str = _p("REAL_V1", doc="score scale [CA-2]: REAL_V1 (rarity on real markets: 70 = about "
                                               "one setup per market per day) or RAW (the uncalibrated composite)")
    score_exit_min_hold_seconds: int = _p(14_400, 0, 30 * 86_400, unit="s",
                                          doc="a score exit waits until the position is this old (stops, "
                                              "targets and the time stop apply from the start)")
    daily_loss_limit: float = _p(0.05, 0.0, 1.0, lo_open=True, unit="fraction of equity",
                                 doc="halt new entries until 00:00 UTC when the day's loss reaches this")
    weekly_loss_limit: float = _p(0.10, 0.0, 1.0, lo_open=True, unit="fraction of equity",
                                  doc="halt until Monday 00:00 UTC")
    monthly_loss_limit: float = _p(0.15, 0.0, 1.0, lo_open=True, unit="fraction of equity",
                                   doc="halt until the 1st of next month 00:00 UTC")
    consecutive_loss_limit: int = _p(5, 1, 100, unit="trades", doc="halt after this many losses in a row")
    consecutive_loss_cooldown_seconds: int = _p(86_400, 0, 30 * 86_400, unit="s",
                                                doc="pause after the consecutive-loss trip")
    max_positions_cap: int = _p(5, 0, ABSOLUTE_MAX_POSITIONS, unit="positions",
                                doc="profile cap on open positions (regime table and 10 also apply)")
    # --- drawdown -----------------------------------------------------------------------------
    max_drawdown: float = _p(0.15, 0.0, 1.0, lo_open=True, unit="fraction of peak equity",
                             doc="halt (manual reset) when equity falls this far below its peak")
    drawdown_scale_start: float = _p(0.05, 0.0, 1.0, unit="fraction of peak equity",
                                     doc="size starts shrinking at this drawdown")
    drawdown_scale_floor: float = _p(0.25, 0.0, 1.0, unit="multiplier",
                                     doc="size multiplier just before the drawdown limit")
    # --- sizing -------------------------------------------------------------------------------
    max_position_pct: float = _p(0.25, 0.0, 1.0, lo_open=True, unit="fraction of equity",
                                 doc="largest notional of one position")
    atr_period: int = _p(14, 2, 500, unit="bars", doc="ATR period for stops and trailing")
    atr_stop_mult: float = _p(2.0, 0.1, 20.0, unit="ATR", doc="initial stop distance")
    liquidity_min_ratio: float = _p(0.3, 0.0, 1.0, lo_open=True, unit="of top-5 depth",
                                    doc="order value <= this x average top-5 book depth")
    max_slippage: float = _p(0.005, 0.0, 0.10, lo_open=True, unit="fraction",
                             doc="expected slippage from walking the book; larger orders shrink or skip")
    max_spread: float = _p(0.005, 0.0, 0.10, lo_open=True, unit="fraction of mid",
                           doc="no entry when the spread is wider")
    kelly_fraction: float = _p(0.5, 0.0, 1.0, unit="of full Kelly", doc="fractional Kelly cap (0 = off)")
    kelly_min_trades: int = _p(30, 1, 100_000, unit="trades", doc="statistics needed before Kelly applies")
    use_monte_carlo: bool = _p(False, doc="rank and size candidates with the Monte Carlo evaluator [RK-6]")
    mc_paths: int = _p(2_000, 100, 200_000, unit="paths", doc="Monte Carlo paths per candidate")
    mc_horizon_bars: int = _p(240, 1, 10_000, unit="bars", doc="Monte Carlo horizon")
    # --- correlation [RK-2] -------------------------------------------------------------------
    corr_high: float = _p(0.7, -1.0, 1.0, doc="a pair above this correlation is 'highly correlated'")
    max_high_corr_positions: int = _p(2, 0, ABSOLUTE_MAX_POSITIONS, unit="positions",
                                      doc="open positions allowed above corr_high with the candidate")
    max_avg_corr: float = _p(0.8, -1.0, 1.0, doc="highest average correlation with open positions")
    # --- exits [RK-5] -------------------------------------------------------------------------
    take_profit_plan: tuple[tuple[float, float], ...] = _p(
        DEFAULT_TAKE_PROFIT_PLAN, unit="(R multiple, fraction of initial qty)",
        doc="scale-out levels; the rest is trailed")
    breakeven_after_first_tp: bool = _p(True, doc="move the stop to entry after the first scale-out")
    trailing_atr_mult: float = _p(3.0, 0.1, 20.0, unit="ATR", doc="trailing stop distance from the best price")
    trailing_activation_r: float = _p(1.0, 0.0, 20.0, unit="R", doc="trail once the best price reached this")
    time_stop_seconds: int = _p(86_400, 0, 90 * 86_400, unit="s", doc="0 = no time stop")
    time_stop_min_r: float = _p(0.5, -10.0, 20.0, unit="R",
                                doc="at the time stop, close unless the position is up at least this")
    panic_reduce_fraction: float = _p(0.5, 0.0, 1.0, unit="of position",
                                      doc="share of a winning position sold on PANIC (losers are closed)")
    # --- runtime guard [RK-4] -----------------------------------------------------------------
    volatility_spike_ratio: float = _p(2.5, 1.0, 100.0, lo_open=True, unit="x baseline ATR%",
                                       doc="halt when ATR% exceeds this multiple of its baseline")
    api_error_rate_limit: float = _p(0.2, 0.0, 1.0, lo_open=True, unit="fraction of calls",
                                     doc="halt when this share of exchange calls fails")
    slippage_anomaly_ratio: float = _p(3.0, 1.0, 100.0, unit="x expected",
                                       doc="halt when realised slippage exceeds this multiple of expected")
    slippage_anomaly_abs: float = _p(0.01, 0.0, 1.0, lo_open=True, unit="fraction",
                                     doc="and is above this absolute level")
    model_disagreement_limit: float = _p(0.5, 0.0, 1.0, lo_open=True, unit="fraction of signals",
                                         doc="halt when this share of strong signals conflict")
    max_leverage: float = _p(1.0, 0.0, 100.0, lo_open=True, unit="x equity",
                             doc="gross exposure / equity; above it positions are reduced")
    guard_min_hold_seconds: int = _p(900, 0, 86_400, unit="s",
                                     doc="a condition trip stays at least this long (no flapping)")
    # --- execution [EXE-1] and cadence --------------------------------------------------------
    allow_market_fallback: bool = _p(True, doc="market order after a limit order times out")
    limit_offset_bps: float = _p(5.0, 0.0, 500.0, unit="bp",
                                 doc="first entry limit this far inside the far touch (0 = at the touch)")
    order_timeout_seconds: int = _p(30, 1, 3_600, unit="s", doc="cancel/replace an unfilled limit after")
    split_legs: int = _p(1, 1, 10, unit="orders", doc="an entry is split into this many limit orders")
    leg_spacing_bps: float = _p(5.0, 0.0, 500.0, unit="bp", doc="each further leg this much deeper in the book")
    post_only_entries: bool = _p(False, doc="entry limits are post-only (maker) where the venue supports it")
    max_replaces: int = _p(2, 0, 10, unit="replaces",
                           doc="re-price an unfilled entry this often (each time nearer the touch)")
    cadence_seconds: int = _p(60, 1, 86_400, unit="s", doc="one tick per this many seconds")
    module_weights: dict[str, float] = _p(DEFAULT_MODULE_WEIGHTS, doc="score module weights [SC-2]")

    def __post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise ProfileError(errors)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists instead of tuples) that ``from_dict`` reads back unchanged."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "take_profit_plan":
                value = [[r, frac] for r, frac in value]
            elif f.name == "module_weights":
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: RiskProfile | None = None) -> RiskProfile:
        """Build a profile from stored JSON. Missing keys come from ``base`` (the profile of the
        same name, else STANDARD) so profiles stored before a parameter existed still load;
        unknown keys and wrong types are errors, all reported at once."""
        if not isinstance(data, Mapping):
            raise ProfileError([f"profile must be a mapping, got {type(data).__name__}"])
        if base is None:
            name = data.get("name")
            base = DEFAULTS.get(name, STANDARD) if isinstance(name, str) else STANDARD
        known = {f.name: f for f in fields(cls)}
        errors = [f"unknown parameter {key!r}" for key in data if key not in known]
        values: dict[str, Any] = {}
        for key, raw in data.items():
            if key not in known:
                continue
            try:
                values[key] = _coerce(key, raw, getattr(base, key))
            except (TypeError, ValueError) as exc:
                errors.append(f"{key}: {exc}")
        try:
            profile = replace(base, **values)
        except ProfileError as exc:
            errors.extend(exc.errors)
        if errors:
            raise ProfileError(errors)
        return profile

    @property
    def allows_trading(self) -> bool:
        """A profile with no position slots or zero risk cannot open anything."""
        return self.max_positions_cap > 0 and self.risk_per_trade > 0


PARAMETERS: dict[str, Mapping[str, Any]] = {f.name: f.metadata for f in fields(RiskProfile)}


def _coerce(key: str, raw: Any, template: Any) -> Any:
    """Convert a JSON value to the type of the template field, strictly (no bool-as-number)."""
    if isinstance(template, bool):
        if not isinstance(raw, bool):
            raise TypeError(f"expected true/false, got {raw!r}")
        return raw
    if isinstance(template, int):
        if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
            raise TypeError(f"expected an integer, got {raw!r}")
        if not float(raw).is_integer():
            raise ValueError(f"expected an integer, got {raw!r}")
        return int(raw)
    if isinstance(template, float):
        if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
            raise TypeError(f"expected a number, got {raw!r}")
        return float(raw)
    if isinstance(template, str):
        if not isinstance(raw, str):
            raise TypeError(f"expected a string, got {raw!r}")
        return raw
    if key == "take_profit_plan":
        if not isinstance(raw, list | tuple):
            raise TypeError("expected a list of [r_multiple, fraction] pairs")
        plan = []
        for level in raw:
            if isinstance(level, Mapping):
                level = (level.get("r"), level.get("fraction"))
            if not isinstance(level, list | tuple) or len(level) != 2:
                raise TypeError(f"level {level!r} is not a [r_multiple, fraction] pair")
            r, frac = (_coerce(key + ".level", v, 0.0) for v in level)
            plan.append((r, frac))
        return tuple(plan)
    if key == "module_weights":
        if not isinstance(raw, Mapping):
            raise TypeError("expected an object of module -> weight")
        return {str(k): _coerce(key + "." + str(k), v, 0.0) for k, v in raw.items()}
    raise TypeError(f"unsupported parameter type for {key}")


def _validate(p: RiskProfile) -> list[str]:
    """Every problem with ``p`` (empty when valid)."""
    errors: list[str] = []
    for f in fields(p):
        value = getattr(p, f.name)
        lo, hi, lo_open = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("lo_open")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{f.name} must be a finite number, got {value!r}")
            continue
        if type(f.default) is int and not isinstance(value, int):
            errors.append(f"{f.name} must be an integer, got {value!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            errors.append(f"{f.name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
        if hi is not None and value > hi:
            errors.append(f"{f.name} must be <= {hi}, got {value!r}")
    if not isinstance(p.name, str) or not p.name:
        errors.append("name must be a non-empty string")
    if p.score_calibration not in _CALIBRATION_NAMES:
        errors.append(f"score_calibration must be one of {', '.join(_CALIBRATION_NAMES)}, got {p.score_calibration!r}")
    if p.exit_threshold >= p.entry_threshold:
        errors.append(f"exit_threshold ({p.exit_threshold}) must be below entry_threshold ({p.entry_threshold})")
    if p.risk_per_trade > p.max_portfolio_risk:
        errors.append(f"risk_per_trade ({p.risk_per_trade}) cannot exceed max_portfolio_risk "
                      f"({p.max_portfolio_risk})")
    if p.drawdown_scale_start >= p.max_drawdown:
        errors.append(f"drawdown_scale_start ({p.drawdown_scale_start}) must be below max_drawdown "
                      f"({p.max_drawdown})")
    plan = p.take_profit_plan
    last_r, total = 0.0, 0.0
    for i, level in enumerate(plan):
        if not isinstance(level, tuple) or len(level) != 2:
            errors.append(f"take_profit_plan[{i}] must be a (r_multiple, fraction) pair")
            continue
        r, frac = level
        if not (math.isfinite(r) and r > last_r):
            errors.append(f"take_profit_plan[{i}] r_multiple {r} must be > 0 and ascending")
        if not (math.isfinite(frac) and 0.0 < frac <= 1.0):
            errors.append(f"take_profit_plan[{i}] fraction {frac} must be in (0, 1]")
        last_r, total = max(last_r, r), total + frac
    if total > 1.0 + 1e-9:
        errors.append(f"take_profit_plan fractions sum to {total:.4f} > 1")
    weights = p.module_weights
    if not isinstance(weights, dict) or not weights:
        errors.append("module_weights must be a non-empty mapping")
    else:
        bad = [k for k, w in weights.items() if not (isinstance(w, float | int) and math.isfinite(w) and w >= 0)]
        if bad:
            errors.append(f"module_weights must be finite and >= 0 (bad: {', '.join(bad)})")
        elif sum(weights.values()) <= 0:
            errors.append("module_weights must not all be zero")
    return errors


# The four profiles of SPEC section 7. The table fixes risk per trade, max portfolio risk, risk
# multiplier, entry threshold, daily loss limit, consecutive loss limit and the positions cap;
# the other parameters scale with the same appetite for risk.
SAFETY_FIRST = RiskProfile(
    name=ProfileName.SAFETY_FIRST.value,
    risk_per_trade=0.0025, max_portfolio_risk=0.02, risk_multiplier=0.8, entry_threshold=80.0,
    daily_loss_limit=0.02, weekly_loss_limit=0.04, monthly_loss_limit=0.06,
    consecutive_loss_limit=3, max_positions_cap=3,
    max_drawdown=0.08, drawdown_scale_start=0.03, drawdown_scale_floor=0.25, max_position_pct=0.15,
    atr_stop_mult=2.5, trailing_atr_mult=2.5, time_stop_seconds=12 * 3600,
    max_slippage=0.003, max_spread=0.003, kelly_fraction=0.25, panic_reduce_fraction=1.0,
    max_avg_corr=0.75, volatility_spike_ratio=2.0, max_leverage=1.0,
    allow_market_fallback=False, use_monte_carlo=True,
    split_legs=2, post_only_entries=True, max_replaces=3,
)
STANDARD = RiskProfile()
PROFIT_FIRST = RiskProfile(
    name=ProfileName.PROFIT_FIRST.value,
    risk_per_trade=0.01, max_portfolio_risk=0.08, risk_multiplier=1.15, entry_threshold=65.0,
    daily_loss_limit=0.07, weekly_loss_limit=0.14, monthly_loss_limit=0.20,
    consecutive_loss_limit=6, max_positions_cap=7,
    max_drawdown=0.20, drawdown_scale_start=0.07, drawdown_scale_floor=0.3, max_position_pct=0.35,
    atr_stop_mult=2.0, trailing_atr_mult=3.0, time_stop_seconds=36 * 3600,
    kelly_fraction=0.5, panic_reduce_fraction=0.5, volatility_spike_ratio=3.0, max_leverage=2.0,
    allow_market_fallback=True, use_monte_carlo=True,
    split_legs=2,
)
CRAZY = RiskProfile(
    name=ProfileName.CRAZY.value,
    risk_per_trade=0.02, max_portfolio_risk=0.15, risk_multiplier=1.3, entry_threshold=60.0,
    daily_loss_limit=0.10, weekly_loss_limit=0.20, monthly_loss_limit=0.30,
    consecutive_loss_limit=8, max_positions_cap=10,
    max_drawdown=0.30, drawdown_scale_start=0.10, drawdown_scale_floor=0.35, max_position_pct=0.5,
    atr_stop_mult=1.5, trailing_atr_mult=3.5, time_stop_seconds=48 * 3600,
    max_slippage=0.008, max_spread=0.008, kelly_fraction=0.75, panic_reduce_fraction=0.5,
    max_avg_corr=0.85, volatility_spike_ratio=4.0, max_leverage=3.0,
    allow_market_fallback=True, use_monte_carlo=False,
    limit_offset_bps=0.0, max_replaces=1,
)

DEFAULTS: dict[str, RiskProfile] = {
    p.name: p for p in (SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY)
}


def ai_mode_profile(live_params: Mapping[str, Any] | None) -> RiskProfile:
    """AI MODE: the live model version's parameters over STANDARD, or STANDARD itself (named
    AI_MODE) while no model version is live. Invalid live parameters raise ProfileError: a bad
    model version must not trade on silently substituted values."""
    fallback = replace(STANDARD, name=ProfileName.AI_MODE.value)
    if not live_params:
        return fallback
    data = dict(live_params)
    data["name"] = ProfileName.AI_MODE.value
    return RiskProfile.from_dict(data, base=fallback)


def profile_for(name: str, stored: Mapping[str, Any] | None = None,
                live_params: Mapping[str, Any] | None = None) -> RiskProfile:
    """The effective profile for ``name``: the stored JSON over the built-in default, or for
    AI_MODE the live model version's parameters (STANDARD fallback)."""
    if name == ProfileName.AI_MODE:
        return ai_mode_profile(live_params)
    if name not in DEFAULTS:
        raise ProfileError([f"unknown profile {name!r}; expected one of {', '.join(ProfileName)}"])
    if stored is None:
        return DEFAULTS[name]
    data = dict(stored)
    data.setdefault("name", name)
    return RiskProfile.from_dict(data, base=DEFAULTS[name])
