"""Aggregator [SC-2]..[SC-4]: module scores -> one smoothed, weighted score and an action.

Per market, with module weights ``w_i`` (normalised to sum 1 so scores stay on 0..100) and each
module's per-regime weight applied through [RG-3] ``a_i = 1 + (r_i - 1) * regime_score / 100``:

* long side  = sum_i w_i a_i s_i over modules pointing LONG or NONE,
  short side = the same over modules pointing SHORT or NONE; ``base_score`` = the larger side,
  ``direction`` = that side (NONE when both are 0).
* ``total``: EMA of the signed base (+ long, - short) with alpha 0.3 [SC-3]; the previous value
  per market comes in ``ema_state`` and the new one goes out, so the caller keeps it per trader
  and market across ticks. The first tick seeds the EMA with the base. ``total_score = |total|``.
* ``final_score = calibrate(total_score) * regime_weight * bandit_weight * risk_multiplier``,
  clipped to 0..100. ``calibrate`` is ``AggregatorParams.calibration`` (knots of
  ``strategies.engine.calibration``): the identity by default here; the risk profiles use the
  real-market rarity scale REAL_V1 [CA-2], so a threshold means the same on every market.
* Action [SC-4]: held market -> EXIT when the score on the held side <= ``exit_threshold``
  (40), else HOLD; not held -> ENTER when final >= ``entry_threshold`` (70), the regime allows
  entries [RG-4], the market passed the screener and the side is allowed, else SKIP. Risk
  checks run after this and may still refuse an ENTER.

Learning-layer additions (both empty by default, leaving the scores above unchanged):

* ``bandit_weights`` ``{regime: {module: w}}`` [AI-4]: in the scan's regime, a market's bandit
  weight is the mean of its modules' ``w`` (clipped to 0.5..1.5) weighted by each module's
  contribution to the chosen side (``strategies.engine.learning.bandit.market_weights``); it
  multiplies the ``bandit_weight`` argument. CHOP and PANIC always use 1.
* ``penalty_weights`` ``{term: w}`` [AI-3]: ``base_score *= 1 - min(1, sum_k w_k * p_k)`` with
  penalty terms ``p_k`` in 0..1 per market, before the EMA:

  - ``CONFLICT``: the share of the weighted module score that points against the chosen side
    (modules with a direction only); 0 when every module agrees.
  - ``EXTENSION``: how far the market already ran the chosen way, from MOM's ``move_atr``
    (move over 12 module bars in ATR): 0 up to 2 ATR, 1 at 4 ATR or more (chasing).

  Each non-zero term adds ``PENALTY_<TERM>`` to the reasons and ``penalty.<TERM>`` to the raw
  metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from regime.engine.classifier import applied_weight
from regime.engine.types import RegimeLabel, RegimeState
from strategies.engine.calibration import RAW, ScoreCalibration, calibrate
from strategies.engine.learning.bandit import NEUTRAL_REGIMES, market_weights
from strategies.engine.types import Action, Direction, MarketSignal, ModuleOutput

DEFAULT_WEIGHTS: dict[str, float] = {
    "TP": 0.30, "VCB": 0.25, "REGIME": 0.20, "LSR": 0.15, "LF": 0.10, "MR": 0.0, "MOM": 0.0, "MICRO": 0.0,
}

#: Per-module, per-regime weights r (applied through [RG-3]); missing entries mean 1.0.
DEFAULT_REGIME_MODULE_WEIGHTS: dict[str, dict[str, float]] = {
    "TP": {"TREND": 1.2, "RANGE": 0.8, "BREAKOUT_ROTATION": 1.0},
    "VCB": {"BREAKOUT_ROTATION": 1.2, "RANGE": 1.1, "TREND": 1.0},
    "LF": {"TREND": 1.1, "BREAKOUT_ROTATION": 1.1},
    "MR": {"RANGE": 1.3, "TREND": 0.6, "BREAKOUT_ROTATION": 0.7},
    "MOM": {"TREND": 1.2, "BREAKOUT_ROTATION": 1.2, "RANGE": 0.7},
}


PENALTY_TERMS: tuple[str, ...] = ("CONFLICT", "EXTENSION")


@dataclass(frozen=True, slots=True)
class AggregatorParams:
    """Per-profile aggregation settings (every weight configurable)."""

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    regime_module_weights: Mapping[str, Mapping[str, float]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_REGIME_MODULE_WEIGHTS.items()})
    regime_weights: Mapping[str, float] = field(default_factory=dict)   # label -> w, [RG-3]; default 1
    ema_alpha: float = 0.3
    entry_threshold: float = 70.0
    exit_threshold: float = 40.0
    risk_multiplier: float = 1.0
    bandit_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # regime -> module -> w
    penalty_weights: Mapping[str, float] = field(default_factory=dict)              # term -> w, see above
    calibration: tuple[tuple[float, float], ...] = RAW                             # raw -> score knots [CA-2]

    def __post_init__(self) -> None:
        if not 0 < self.ema_alpha <= 1:
            raise ValueError("ema_alpha must be in (0, 1]")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError("module weights must be >= 0")
        if self.exit_threshold >= self.entry_threshold:
            raise ValueError("exit_threshold must be below entry_threshold")
        unknown = set(self.penalty_weights) - set(PENALTY_TERMS)
        if unknown:
            raise ValueError(f"unknown penalty terms {sorted(unknown)}; known: {', '.join(PENALTY_TERMS)}")
        if any(not 0 <= w <= 1 for w in self.penalty_weights.values()):
            raise ValueError("penalty weights must be in [0, 1]")
        ScoreCalibration(tuple(self.calibration))   # validates the knots


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Whole-market arrays ``[markets]`` plus the signals and the new EMA state."""

    base_score: np.ndarray
    total_score: np.ndarray
    final_score: np.ndarray
    direction: np.ndarray
    actions: tuple[Action, ...]
    signals: tuple[MarketSignal, ...]
    ema_state: dict[str, float]


def aggregate(symbols: Sequence[str], ts: int, outputs: Sequence[ModuleOutput], regime: RegimeState,
              params: AggregatorParams, ema_state: Mapping[str, float] | None = None,
              held: Mapping[str, Direction] | None = None, candidates: np.ndarray | None = None,
              can_short: np.ndarray | None = None, bandit_weight: float | np.ndarray = 1.0,
              extra_reasons: Sequence[tuple[str, ...]] | None = None,
              signal_mask: np.ndarray | None = None) -> Aggregate:
    """Combine module outputs for every market; see the module docstring for the rules.

    ``held``: symbol -> held side. ``candidates``: bool ``[markets]`` (screener pass; default
    all). ``signal_mask``: markets that get a MarketSignal object (default all; the arrays cover
    every market either way). ``extra_reasons``: per-market codes to prepend (screener flags).
    """
    n = len(symbols)
    held = held or {}
    ema_state = ema_state or {}
    cand = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    shortable = np.zeros(n, bool) if can_short is None else np.asarray(can_short, bool)
    for o in outputs:
        if o.score.shape != (n,) or o.direction.shape != (n,):
            raise ValueError(f"module {o.module} output does not cover {n} markets")
        if np.isnan(o.score).any():
            raise ValueError(f"module {o.module} returned NaN scores")
    label = str(regime.label)
    w = np.array([params.weights.get(o.module, 0.0) for o in outputs], dtype=np.float64)
    r = np.array([params.regime_module_weights.get(o.module, {}).get(label, 1.0) for o in outputs])
    total_w = w.sum()
    eff = (w / total_w if total_w > 0 else w) * np.asarray(applied_weight(r, regime.regime_score))
    if outputs:
        s = np.stack([o.score for o in outputs])            # [modules x markets]
        d = np.stack([o.direction for o in outputs])
        long_side = (eff[:, None] * s * (d >= 0)).sum(axis=0)
        short_side = (eff[:, None] * s * (d <= 0)).sum(axis=0)
    else:
        s = np.zeros((0, n))
        long_side = short_side = np.zeros(n)
    is_long = long_side >= short_side
    base = np.clip(np.where(is_long, long_side, short_side), 0.0, 100.0)
    side = np.where(is_long, 1, -1)
    penalties = _penalties(params, outputs, s, d if outputs else None, eff, side) if params.penalty_weights else {}
    if penalties:
        load = sum(params.penalty_weights[k] * p for k, p in penalties.items())
        base = base * (1.0 - np.minimum(1.0, load))
    signed = np.where(is_long, base, -base)

    prev = np.array([ema_state.get(sym, np.nan) for sym in symbols], dtype=np.float64)
    a = params.ema_alpha
    total_signed = np.where(np.isnan(prev), signed, a * signed + (1 - a) * prev)
    total = np.abs(total_signed)
    direction = np.where(total_signed > 0, Direction.LONG, np.where(total_signed < 0, Direction.SHORT,
                                                                     Direction.NONE)).astype(np.int8)
    regime_w = float(applied_weight(params.regime_weights.get(label, 1.0), regime.regime_score))
    bw = np.broadcast_to(np.asarray(bandit_weight, dtype=np.float64), (n,))
    learned = params.bandit_weights.get(label)
    if learned and outputs and label not in NEUTRAL_REGIMES:
        b = np.array([float(learned.get(o.module, 1.0)) for o in outputs])
        bw = bw * market_weights(s, d, np.where(total_signed < 0, -1, 1), eff, b)
    calibrated = total if params.calibration == RAW else calibrate(tuple(params.calibration), total)
    final = np.clip(calibrated * regime_w * bw * params.risk_multiplier, 0.0, 100.0)

    held_dir = np.array([int(held.get(sym, 0)) for sym in symbols], dtype=np.int8)
    is_held = held_dir != 0
    held_side_score = np.where(direction == held_dir, final, 0.0)
    exit_now = is_held & (held_side_score <= params.exit_threshold)
    side_ok = (direction == Direction.LONG) | ((direction == Direction.SHORT) & shortable)
    entry_ok = (~is_held & (final >= params.entry_threshold) & regime.allows_entries & cand & side_ok)
    action_codes = np.where(is_held, np.where(exit_now, 1, 2), np.where(entry_ok, 0, 3))
    action_list = (Action.ENTER, Action.EXIT, Action.HOLD, Action.SKIP)
    actions = tuple(action_list[i] for i in action_codes.tolist())

    new_state = dict(zip(symbols, total_signed.tolist(), strict=True))
    mask = np.ones(n, bool) if signal_mask is None else np.asarray(signal_mask, bool) | is_held
    names = [o.module for o in outputs]
    signals = []
    for i in np.nonzero(mask)[0].tolist():  # objects only for the markets the caller stores
        codes: list[str] = list(extra_reasons[i]) if extra_reasons is not None else []
        for o in outputs:
            codes.extend(o.reasons[i])
        if not is_held[i]:
            if final[i] < params.entry_threshold:
                codes.append("BELOW_ENTRY_THRESHOLD")
            if not regime.allows_entries:
                codes.append(f"REGIME_{label}_NO_ENTRY")
            if not cand[i]:
                codes.append("NOT_A_CANDIDATE")
            if direction[i] == Direction.SHORT and not shortable[i]:
                codes.append("SHORT_NOT_ALLOWED")
        elif exit_now[i]:
            codes.append("EXIT_SCORE_AT_OR_BELOW_THRESHOLD")
        codes.extend(f"PENALTY_{k}" for k, p in penalties.items() if p[i] > 0 and params.penalty_weights[k] > 0)
        if regime.label is RegimeLabel.PANIC and is_held[i]:
            codes.append("REGIME_PANIC_MAY_REDUCE")
        raw = {f"{o.module}.{k}": float(v[i]) for o in outputs for k, v in o.raw.items()}
        raw.update({"raw_score": float(total[i]), "calibrated_score": float(calibrated[i]),
                    "regime_weight": regime_w, "bandit_weight": float(bw[i]),
                    "risk_multiplier": params.risk_multiplier})
        raw.update({f"penalty.{k}": float(p[i]) for k, p in penalties.items()})
        signals.append(MarketSignal(
            symbol=symbols[i], ts=ts, module_scores={m: float(s[j, i]) for j, m in enumerate(names)},
            base_score=float(base[i]), total_score=float(total[i]), final_score=float(final[i]),
            direction=Direction(int(direction[i])), reason_codes=tuple(codes), raw_metrics=raw,
            action=actions[i],
        ))
    return Aggregate(base, total, final, direction, actions, tuple(signals), new_state)


def _penalties(params: AggregatorParams, outputs: Sequence[ModuleOutput], s: np.ndarray, d: np.ndarray | None,
               eff: np.ndarray, side: np.ndarray) -> dict[str, np.ndarray]:
    """The configured penalty terms, each float64 ``[markets]`` in 0..1 (see the module docstring)."""
    n = len(side)
    out: dict[str, np.ndarray] = {}
    for term in params.penalty_weights:
        if term == "CONFLICT":
            if d is None:
                out[term] = np.zeros(n)
                continue
            contrib = eff[:, None] * s
            directed = (contrib * (d != 0)).sum(axis=0)
            against = (contrib * (d == -side[None, :])).sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[term] = np.where(directed > 0, against / np.where(directed > 0, directed, 1.0), 0.0)
        elif term == "EXTENSION":
            move = next((o.raw.get("move_atr") for o in outputs if o.module == "MOM" and "move_atr" in o.raw), None)
            if move is None:
                out[term] = np.zeros(n)
                continue
            run = np.nan_to_num(np.asarray(move, dtype=np.float64) * side, nan=0.0)
            out[term] = np.clip((run - 2.0) / 2.0, 0.0, 1.0)
    return out
