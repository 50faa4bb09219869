"""Thompson-sampling bandit over the score modules, per regime [AI-4].

Each (regime, module) arm keeps a Beta(alpha, beta) posterior of "a trade this module led in
this regime pays". A closed trade (its module is the one that contributed most at entry,
``Position.strategy``; its regime the one at entry) updates one arm with a fractional reward::

    reward = clip(0.5 + r_net / (2 * reward_scale), 0, 1)        (reward_scale 2 %)
    alpha += reward ; beta += 1 - reward

so +2 % net or better counts as a full success, -2 % or worse as a full failure, and break-even
as half of each. Before each update both parameters decay toward the prior
(``a = a0 + decay * (a - a0)``) so old evidence fades and the bandit follows a market that
changes. The prior Beta(5, 5) keeps weights near 1 until evidence accumulates.

Weights: at each sampling, one theta ~ Beta(alpha, beta) per arm from a seeded generator, and
``bandit_weight = 0.5 + theta`` in [0.5, 1.5] (the posterior mean 0.5 gives 1.0). In CHOP and
PANIC the weight is 1 (no new entries there [RG-4]; the bandit stays out of it). Same seed,
same posteriors -> same weights.

The aggregator applies a market's module weights as the contribution-weighted mean of its
modules' bandit weights (``strategies.engine.aggregator``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

WEIGHT_MIN, WEIGHT_MAX = 0.5, 1.5
NEUTRAL_REGIMES: tuple[str, ...] = ("CHOP", "PANIC")
BANDIT_REGIMES: tuple[str, ...] = ("TREND", "RANGE", "BREAKOUT_ROTATION", "CHOP", "PANIC")


@dataclass(frozen=True, slots=True)
class BanditConfig:
    prior_alpha: float = 5.0
    prior_beta: float = 5.0
    decay: float = 0.995          # per update of the arm
    reward_scale: float = 0.02    # r_net giving a full success / failure

    def __post_init__(self) -> None:
        if not (self.prior_alpha > 0 and self.prior_beta > 0):
            raise ValueError("prior parameters must be positive")
        if not 0 < self.decay <= 1:
            raise ValueError("decay must be in (0, 1]")
        if not self.reward_scale > 0:
            raise ValueError("reward_scale must be positive")


@dataclass(frozen=True, slots=True)
class Arm:
    alpha: float
    beta: float
    n: int = 0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def prior_arm(config: BanditConfig) -> Arm:
    return Arm(config.prior_alpha, config.prior_beta, 0)


def reward_of(r_net: float, config: BanditConfig) -> float:
    """Fractional reward in [0, 1] of one realised net return."""
    if not math.isfinite(r_net):
        raise ValueError(f"r_net must be finite, got {r_net!r}")
    return float(min(1.0, max(0.0, 0.5 + r_net / (2.0 * config.reward_scale))))


def update(arm: Arm, r_net: float, config: BanditConfig) -> Arm:
    """The arm after one realised trade (decay toward the prior, then the reward)."""
    reward = reward_of(r_net, config)
    a = config.prior_alpha + config.decay * (arm.alpha - config.prior_alpha)
    b = config.prior_beta + config.decay * (arm.beta - config.prior_beta)
    return Arm(a + reward, b + 1.0 - reward, arm.n + 1)


def sample_weights(arms: Mapping[tuple[str, str], Arm], seed: int, regimes: Iterable[str] = BANDIT_REGIMES,
                   modules: Iterable[str] = ()) -> dict[str, dict[str, float]]:
    """One Thompson draw per arm -> ``{regime: {module: weight}}`` in [0.5, 1.5].

    Arms missing from ``arms`` use the prior (``BanditConfig()``). Draws happen in sorted
    (regime, module) order, so the result depends only on ``seed`` and the posteriors."""
    rng = np.random.Generator(np.random.PCG64(seed))
    prior = prior_arm(BanditConfig())
    names = sorted(set(modules) | {m for _, m in arms})
    out: dict[str, dict[str, float]] = {}
    for regime in sorted(set(regimes) | {r for r, _ in arms}):
        row: dict[str, float] = {}
        for module in names:
            arm = arms.get((regime, module), prior)
            theta = float(rng.beta(arm.alpha, arm.beta))
            row[module] = 1.0 if regime in NEUTRAL_REGIMES else float(
                min(WEIGHT_MAX, max(WEIGHT_MIN, WEIGHT_MIN + theta)))
        out[regime] = row
    return out


def market_weights(scores: np.ndarray, directions: np.ndarray, side: np.ndarray, module_weights: np.ndarray,
                   bandit: np.ndarray) -> np.ndarray:
    """Per-market bandit weight: the mean of the modules' bandit weights weighted by each
    module's contribution to the chosen side (``module_weights[i] * score[i]`` for modules
    pointing that way or neither); 1 where nothing contributes.

    ``scores`` / ``directions``: ``[modules x markets]``; ``side``: ``[markets]`` +1 / -1;
    ``module_weights`` / ``bandit``: ``[modules]``."""
    on_side = np.where(side[None, :] >= 0, directions >= 0, directions <= 0)
    contrib = module_weights[:, None] * scores * on_side
    total = contrib.sum(axis=0)
    weighted = (contrib * np.clip(bandit, WEIGHT_MIN, WEIGHT_MAX)[:, None]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / np.where(total > 0, total, 1.0), 1.0)
