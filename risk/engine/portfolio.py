"""Portfolio limits [RK-3]: open stop-loss risk, the risk budget and position slots.

Portfolio risk is the sum over open positions of ``qty * (entry - stop)`` for a long
(``stop - entry`` for a short), floored at 0 per position: what the book loses versus entry if
every stop is hit. A position whose stop has moved past break-even carries no risk and frees
budget. Max positions is the smallest of the regime table [RG-5], the profile cap and
ABSOLUTE_MAX_POSITIONS. Duplicate buys of one coin across traders are allowed: each trader's
portfolio is its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from regime.engine.types import RegimeLabel
from risk.engine.positions import PositionState
from risk.engine.profiles import ABSOLUTE_MAX_POSITIONS, RiskProfile

#: [RG-5] maximum concurrent positions by regime (CHOP and PANIC allow no new ones).
REGIME_MAX_POSITIONS: Mapping[RegimeLabel, int] = {
    RegimeLabel.BREAKOUT_ROTATION: 7,
    RegimeLabel.TREND: 5,
    RegimeLabel.RANGE: 3,
    RegimeLabel.CHOP: 0,
    RegimeLabel.PANIC: 0,
}


def open_risk(positions: Iterable[PositionState]) -> float:
    """Sum of open stop-loss risk in quote currency."""
    return float(sum(p.open_risk for p in positions))


def max_positions(regime: RegimeLabel | None, profile: RiskProfile,
                  regime_table: Mapping[RegimeLabel, int] = REGIME_MAX_POSITIONS) -> int:
    """min(regime table, profile cap, 10); an unknown regime (None) allows none."""
    regime_cap = regime_table.get(regime, 0) if regime is not None else 0
    return max(0, min(regime_cap, profile.max_positions_cap, ABSOLUTE_MAX_POSITIONS))


@dataclass(frozen=True, slots=True)
class PortfolioState:
    """One trader's book at the tick: equity and cash in quote currency, open positions."""

    equity: float
    cash: float
    positions: tuple[PositionState, ...] = ()

    def __post_init__(self) -> None:
        if not (math.isfinite(self.equity) and math.isfinite(self.cash)):
            raise ValueError("equity and cash must be finite")

    @property
    def open_count(self) -> int:
        return sum(1 for p in self.positions if p.qty > 0)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(p.symbol for p in self.positions if p.qty > 0)

    @property
    def open_risk(self) -> float:
        return open_risk(self.positions)

    def portfolio_risk(self) -> float:
        """Open stop-loss risk as a fraction of equity (inf when equity <= 0)."""
        return self.open_risk / self.equity if self.equity > 0 else math.inf

    def risk_budget(self, profile: RiskProfile) -> float:
        """MAX_PORTFOLIO_RISK in quote currency."""
        return max(self.equity, 0.0) * profile.max_portfolio_risk

    def remaining_risk_budget(self, profile: RiskProfile) -> float:
        """Budget left for new stop-loss risk, never negative."""
        return max(self.risk_budget(profile) - self.open_risk, 0.0)

    def remaining_slots(self, regime: RegimeLabel | None, profile: RiskProfile) -> int:
        return max(max_positions(regime, profile) - self.open_count, 0)

    def gross_exposure(self, prices: Mapping[str, float]) -> float:
        """Sum of |position value| at ``prices`` (entry price where a price is missing)."""
        return float(sum(abs(p.qty * prices.get(p.symbol, p.entry_price)) for p in self.positions))

    def leverage(self, prices: Mapping[str, float]) -> float:
        return self.gross_exposure(prices) / self.equity if self.equity > 0 else math.inf

    def summary(self, regime: RegimeLabel | None, profile: RiskProfile) -> dict[str, float | int]:
        """Numbers for the UI (JSON-safe)."""
        return {
            "equity": self.equity,
            "open_positions": self.open_count,
            "max_positions": max_positions(regime, profile),
            "remaining_slots": self.remaining_slots(regime, profile),
            "open_risk": self.open_risk,
            "portfolio_risk": self.portfolio_risk() if self.equity > 0 else -1.0,
            "max_portfolio_risk": profile.max_portfolio_risk,
            "remaining_risk_budget": self.remaining_risk_budget(profile),
        }
