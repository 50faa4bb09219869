"""The tuner's evaluator on the full tick [AI-3]: a model's parameters -> the trades the live
tick would make with them.

Per parameter set, one pipeline backtest over the whole panel
(``strategies.engine.backtest.pipeline.run_backtest``): the live tick's decision core
(``traders.engine.tick.run_core``) with the runtime guard (including model disagreement against
the deterministic profile), the position manager (ATR stop, take-profit scale-outs, trailing
stop, time stop, score exit, PANIC reduction), the pre-trade checklist, Monte Carlo where the
profile asks for it, sizing by risk with every cap, the execution policy, and the fill model
(fees, spread, depth slippage, partial fills, resting limit orders) on Decimal books.

Only the scan's source differs from a live tick. The regime, the eight module outputs and the
screen of every bar do not depend on the tuned parameters; ``evaluator.build_panel`` computes
them once per data set, and ``PanelScanner`` runs the trial's aggregation on them each bar
(module weights, entry / exit thresholds, penalty weights, regime multipliers, ``top_n``) with
the score EMA and the held markets, exactly as the last step of the live scan. ATR and the
returns for the correlation check come from the panel's bars.

Bars of any length work; the tuner runs on 1-hour bars of the simulator and on 15-minute bars
of real files (``bench/tune.py``, ``realdata.load_real``; docs/learning.md gives the trade counts
and runtimes behind that choice). The books are the
backtester's ladders with the depth of a minute's traded value (``MarketData``), orders that
rest longer than a bar are cancelled at the next tick (``max(order_timeout_seconds, bar)``), and
the profile ticks once per bar (``cadence_seconds`` = the bar), so the guard's volatility
baseline spans a day of bars.

``TickEvaluator`` has ``PanelEvaluator``'s interface (``evaluate(params, window)``, ``span()``):
one memoised run per parameter set covers every walk-forward window; a trade belongs to the
window of its entry, its ``r_net`` is the booked round trip net of fees and of the prices the
fill model gave (spread and depth), its MAE the lowest low while held against the entry price,
less the fees.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import numpy as np

from execution.engine.types import Candles, MarketInfo
from regime.engine.classifier import max_positions
from strategies.engine import indicators as ind
from strategies.engine.backtest.pipeline import (
    BacktestConfig,
    BacktestResult,
    MarketData,
    Scanner,
    run_backtest,
    tick_aggregate,
)
from strategies.engine.learning.evaluator import (
    Panel,
    PanelEvaluator,
    Simulation,
    scan_settings,
    trial_profile,
)
from strategies.engine.pipeline import ScanParams, ScanResult
from strategies.engine.screener import candidates_for_top_n
from strategies.engine.types import Direction
from traders.engine.tick import Derived, MarketFrame


@dataclass(frozen=True, slots=True)
class TickEvaluatorConfig:
    cash: Decimal = Decimal("10000000")
    returns_bars: int = 199            # returns for the correlation check (the live tick sees 199)
    frame_bars: int = 32               # candles in each tick's frame (last prices, the bar's high / low)
    spread_bps: float = 5.0
    depth_fraction: float = 0.25
    #: compare each trial with the deterministic profile (STANDARD) for the guard's model
    #: disagreement, as an AI MODE trader running it would be [RK-4]
    second_opinion: bool = True

    def __post_init__(self) -> None:
        if self.returns_bars < 2 or self.frame_bars < 2:
            raise ValueError("returns_bars and frame_bars must be at least 2")


class PanelScanner(Scanner):
    """The scan of bar ``t`` from the panel: the trial's aggregation of the precomputed module
    outputs, with the screen's ``top_n`` of the trial."""

    def __init__(self, data: MarketData, config: BacktestConfig, panel: Panel, params: ScanParams,
                 atr: np.ndarray, log_returns: np.ndarray, returns_bars: int) -> None:
        self.data, self.config, self.params, self.panel = data, config, params, panel
        self.atr, self.log_returns, self.returns_bars = atr, log_returns, returns_bars

    def scan(self, t: int, frame: MarketFrame, held: dict[str, Direction], ema: dict[str, float] | None
             ) -> ScanResult:
        panel, p = self.panel, self.params
        screen = panel.screens[t]
        outputs = panel.outputs[t]
        if screen is None or outputs is None:
            raise ValueError(f"bar {t} is before the panel's first full window ({panel.first})")
        symbols = panel.symbols
        candidates = candidates_for_top_n(screen, p.screener.top_n)
        regime = panel.regimes[t]
        agg = tick_aggregate(symbols, int(panel.ts[t]), outputs, regime, p, ema=ema, held=held, candidates=candidates,
                             can_short=panel.can_short, flags=screen.flags)
        return ScanResult(int(panel.ts[t]), symbols, replace(screen, candidate=candidates), regime,
                          max_positions(regime.label, p.profile_max_positions), outputs, agg, agg.signals,
                          agg.ema_state)

    def derived(self, t: int) -> Derived:
        a = max(0, t - self.returns_bars)
        return Derived(self.atr[:, t], self.log_returns[:, a:t], bar_seconds=self.panel.bar_seconds)


class TickEvaluator(PanelEvaluator):
    """``Evaluator`` that scores a parameter set by the full tick (module docstring)."""

    def __init__(self, panel: Panel, candles: Candles, markets: Mapping[str, MarketInfo],
                 config: TickEvaluatorConfig | None = None, cache_size: int = 4) -> None:
        super().__init__(panel, cache_size=cache_size)
        if candles.n_bars != panel.n_bars or tuple(candles.symbols) != tuple(panel.symbols):
            raise ValueError("the candles are not the panel's")
        self.tick_config = cfg = config or TickEvaluatorConfig()
        self.data = MarketData(candles, markets, spread_bps=cfg.spread_bps, depth_fraction=cfg.depth_fraction)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_returns = np.diff(np.log(panel.close), axis=1)
        self._atr: dict[int, np.ndarray] = {14: panel.atr}
        self.last_run: BacktestResult | None = None

    def atr(self, period: int) -> np.ndarray:
        if period not in self._atr:
            p = self.panel
            self._atr[period] = ind.atr(p.high, p.low, p.close, period)
        return self._atr[period]

    def backtest(self, params: Mapping[str, Any]) -> BacktestResult:
        """The full-tick backtest of one parameter set over the panel."""
        cfg = self.tick_config
        profile, scan_keys = trial_profile(params)
        # one tick per bar: the guard's per-tick clocks (volatility baseline, outage hold) count bars
        profile = replace(profile, cadence_seconds=self.panel.bar_seconds)
        settings = scan_settings(profile, scan_keys)
        base_profile, base_keys = trial_profile({})
        base_profile = replace(base_profile, cadence_seconds=self.panel.bar_seconds)   # same score EMA
        second = scan_settings(base_profile, base_keys) if cfg.second_opinion else None
        config = BacktestConfig(profile=profile, cash=cfg.cash, window_bars=cfg.frame_bars, leader_bars=cfg.frame_bars,
                                spread_bps=cfg.spread_bps, depth_fraction=cfg.depth_fraction,
                                start_index=self.panel.first, second_params=second)
        # a baseline trial is its own second opinion: nothing to compare
        if second is not None and second == settings:
            config = replace(config, second_params=None)
        scanner = PanelScanner(self.data, config, self.panel, settings, self.atr(profile.atr_period),
                               self.log_returns, cfg.returns_bars)
        result = run_backtest(self.data, config, scanner=scanner)
        self.last_run = result
        return result

    def _simulate(self, params: Mapping[str, Any]) -> Simulation:
        return simulation_of(self.backtest(params), self.panel)


def simulation_of(result: BacktestResult, panel: Panel) -> Simulation:
    """A backtest as the tuner's ``Simulation``: per trade the entry bar, ``r_net`` and MAE;
    per bar the portfolio return (0 before the first tick)."""
    ts = panel.ts
    n = panel.n_bars
    bar_returns = np.zeros(n)
    if len(result.equity):
        first = int(np.searchsorted(ts, result.ts[0]))
        eq = np.concatenate([[float(result.initial_cash)], result.equity])
        bar_returns[first:first + len(result.equity)] = eq[1:] / eq[:-1] - 1.0
    index = {s: i for i, s in enumerate(panel.symbols)}
    entry_bar, r_net, mae, market, hold, weight = [], [], [], [], [], []
    cash = float(result.initial_cash) or 1.0
    for tr in result.trades:
        if tr.entry_value <= 0:
            continue
        i = index[tr.symbol]
        a = max(0, int(np.searchsorted(ts, tr.entry_ts - 1, side="right")) - 1)
        b = max(a, int(np.searchsorted(ts, tr.exit_ts - 1, side="right")) - 1)
        lows = panel.low[i, a + 1:b + 1] if b > a else panel.low[i, b:b + 1]
        low = float(np.nanmin(lows)) if len(lows) and np.isfinite(lows).any() else float(tr.entry_price)
        entry = float(tr.entry_price)
        fees = float(tr.fees) / tr.entry_value
        entry_bar.append(a)
        market.append(i)
        hold.append(b - a)
        weight.append(float(tr.entry_value) / cash)
        r_net.append(tr.return_)
        mae.append(min(low / entry - 1.0, 0.0) - fees if entry > 0 and math.isfinite(low) else -fees)
    order = np.argsort(np.array(entry_bar, dtype=np.int64), kind="stable")
    return Simulation(np.array(entry_bar, dtype=np.int64)[order], np.array(r_net, dtype=np.float64)[order],
                      np.array(mae, dtype=np.float64)[order], bar_returns, np.array(market, dtype=np.int64)[order],
                      np.array(hold, dtype=np.int64)[order], np.array(weight, dtype=np.float64)[order])
