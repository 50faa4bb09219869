"""Pure risk engine [RK-1]..[RK-6]: profiles, sizing, pre-trade checks, portfolio limits, runtime
guard, position manager and Monte Carlo evaluator. Standard library, numpy and pandas only; the
clock and all data are passed in."""
