"""Score-module registry [SC-1]: name -> module class, and the default set run every scan."""

from __future__ import annotations

from strategies.engine.modules.base import ScanContext, ScoreModule, linear, logistic
from strategies.engine.modules.leader_follower import LeaderFollower
from strategies.engine.modules.liquidity_sweep import LiquiditySweepReversal
from strategies.engine.modules.mean_reversion import MeanReversion
from strategies.engine.modules.microstructure import Microstructure
from strategies.engine.modules.momentum import Momentum
from strategies.engine.modules.regime_modifier import RegimeModifier
from strategies.engine.modules.trend_pullback import TrendPullback
from strategies.engine.modules.vol_contraction_breakout import VolContractionBreakout

REGISTRY: dict[str, type] = {
    "TP": TrendPullback,
    "VCB": VolContractionBreakout,
    "LSR": LiquiditySweepReversal,
    "LF": LeaderFollower,
    "REGIME": RegimeModifier,
    "MR": MeanReversion,
    "MOM": Momentum,
    "MICRO": Microstructure,
}

MODULE_NAMES: tuple[str, ...] = tuple(REGISTRY)


def default_modules() -> tuple[ScoreModule, ...]:
    """One instance of every registered module with its documented defaults."""
    return tuple(cls() for cls in REGISTRY.values())


__all__ = [
    "MODULE_NAMES", "REGISTRY", "LeaderFollower", "LiquiditySweepReversal", "MeanReversion", "Microstructure",
    "Momentum", "RegimeModifier", "ScanContext", "ScoreModule", "TrendPullback", "VolContractionBreakout",
    "default_modules", "linear", "logistic",
]
