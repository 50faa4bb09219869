"""The pipeline backtest on bars longer than a minute (5m, 15m, 30m, 1h candle files) [BT-1].

The live scan reads 1-minute candles: it builds 200 five-minute module bars from its last 1,000
minutes, and the regime judges the leader on 15-minute bars and the market on 1-hour windows.
A coarser file cannot rebuild those, so the run adapts the inputs to the file's bar, with the
tuner's machinery (``strategies.engine.learning.evaluator.build_panel`` and
``tick_evaluator.PanelScanner``, which already run the full tick on hourly bars):

* **tick cadence**: one tick per bar of the file (the profile's ``cadence_seconds`` becomes the
  bar, so the guard's per-tick clocks, e.g. the volatility baseline over a day of ticks, count
  bars); resting entries time out after ``max(order_timeout_seconds, bar)``;
* **module bars**: the file's bars themselves, ``module_bars`` (200) of them per scan. On 5m
  files that is exactly the live module timeframe (200 x 5 min); on 15m / 30m / 1h files the
  modules see 200 bars of that length (their look-backs, counted in module bars, cover 3x to
  12x more time than live);
* **regime**: the regime engine with its minute windows converted to whole bars
  (``evaluator.bar_feature_config``): the 15-minute leader bars become 3 bars on 5m and 1 bar
  on 15m and longer, the 1-hour return / value windows 12 / 4 / 2 / 1 bars, the whipsaw's
  5-minute bars 1 bar;
* **screener, ATR, returns**: per bar from the same arrays (``build_panel``), the screener's
  24 h traded value over a day of bars;
* everything after the scan (guard, position manager, checklist, Monte Carlo, sizing,
  execution policy, fill model, books) is ``run_backtest``'s, unchanged.

Bars longer than one hour are refused: the regime's 1-hour windows (breadth, dispersion, value
share) would have to stretch to a whole bar of several hours, and a 1-minute-tuned profile's
cadence and time stops would no longer mean what they say. The first tick needs ``warmup_bars``
bars of history (``module_bars``, or the regime's leader history when longer).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from execution.engine.types import TIMEFRAME_SECONDS, Candles, MarketInfo
from strategies.engine.backtest.pipeline import BacktestConfig, BacktestResult, MarketData, run_backtest
from strategies.engine.pipeline import ScanParams

if TYPE_CHECKING:
    from strategies.engine.learning.evaluator import Panel

#: Bar lengths (minutes) the pipeline backtest runs on: 1 (the live scan) and the coarser bars
#: that divide an hour evenly.
BAR_MINUTES = (1, 3, 5, 15, 30, 60)
MODULE_BARS = 200                 # module bars per scan (the live scan sees 200 five-minute bars)
RETURNS_BARS = 199                # returns for the correlation check (the live tick sees 199)
FRAME_BARS = 32                   # candles in each tick's frame (last prices, the bar's high / low)


def bar_minutes(timeframe: str) -> int:
    """Minutes per bar of ``timeframe``; ValueError (operator message) when the pipeline cannot
    run on it."""
    seconds = TIMEFRAME_SECONDS.get(timeframe)
    if seconds is None:
        raise ValueError(f"unknown timeframe {timeframe!r}")
    minutes = seconds // 60
    if seconds % 60 or minutes not in BAR_MINUTES:
        raise ValueError(
            f"the pipeline runs on {', '.join(f'{m}m' if m < 60 else '1h' for m in BAR_MINUTES)} candles; "
            f"{timeframe} bars cannot serve the regime's 1-hour windows and 15-minute leader bars")
    return minutes


def warmup_bars(timeframe: str, module_bars: int = MODULE_BARS) -> int:
    """Bars of history the first tick needs on a coarse file (module window or the regime's
    leader history, whichever is longer)."""
    from strategies.engine.learning.evaluator import bar_feature_config

    minutes = bar_minutes(timeframe)
    return max(module_bars, bar_feature_config(minutes).leader_bars_needed)


def run_bar_backtest(data: MarketData, config: BacktestConfig, progress: Callable[[float], None] | None = None,
                     *, module_bars: int = MODULE_BARS) -> BacktestResult:
    """Tick every bar from ``config.start_index`` (at least the first full module window) to
    ``config.end_index`` of coarse candles through the live tick core (module docstring).
    ``config.profile`` is the trader's profile; its cadence is set to the bar here."""
    from strategies.engine import indicators as ind
    from strategies.engine.learning.tick_evaluator import PanelScanner
    from traders.engine.tick import scan_params

    bar_minutes(data.candles.timeframe)
    if data.bar_seconds == 60:
        raise ValueError("1-minute candles run the live scan: use run_backtest")
    profile = replace(config.profile, cadence_seconds=data.bar_seconds)
    params = scan_params(profile)             # the score EMA follows the bar cadence (tick.tick_ema_alpha)
    if getattr(config, "regime_thresholds", None) is not None:       # the stored thresholds in force [RG-2]
        params = replace(params, thresholds=config.regime_thresholds)
    panel = bar_panel(data.candles, data.markets, params, module_bars=module_bars,
                      start=config.start_index, end=config.end_index)
    start = panel.first if config.start_index is None else max(config.start_index, panel.first)
    cfg = replace(config, profile=profile, window_bars=FRAME_BARS, leader_bars=FRAME_BARS, start_index=start,
                  mode="vector")
    atr = panel.atr if profile.atr_period == 14 else ind.atr(panel.high, panel.low, panel.close, profile.atr_period)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_returns = np.diff(np.log(panel.close), axis=1)
    scanner = PanelScanner(data, cfg, panel, params, atr, log_returns, RETURNS_BARS)
    return run_backtest(data, cfg, progress, scanner=scanner)


def bar_panel(candles: Candles, markets: Mapping[str, MarketInfo], params: ScanParams, *,
              module_bars: int = MODULE_BARS, start: int | None = None, end: int | None = None,
              block_bars: int = 256) -> Panel:
    """``evaluator.build_panel`` with the module outputs computed for blocks of bars at once:
    the regime, screens and ATR come from ``build_panel`` itself (without modules); the
    row-wise modules (``precompute.ROW_WISE_MODULES``: one market's score reads only its own
    rows) score the stacked windows of a block as one ``[bars x markets, module_bars]`` array,
    the others (LF, REGIME) run per bar on the bar's window, as in ``build_panel``. Each row goes
    through the same numpy operations as in ``build_panel``, so the outputs are equal
    (``tests/engine/test_backtest_bars.py``); only bars in ``[start, end)`` (default: every bar
    with a full window) get outputs, the others keep None."""
    from regime.engine.features import Bars, filled_bars
    from strategies.engine.backtest.precompute import MAX_ROWS, ROW_WISE_MODULES
    from strategies.engine.learning.evaluator import EvaluatorConfig, build_panel
    from strategies.engine.modules.base import ScanContext
    from strategies.engine.types import ModuleOutput

    panel = build_panel(candles, markets, EvaluatorConfig(window_bars=module_bars, thresholds=params.thresholds),
                        modules=())
    mods = tuple(params.modules)
    n, m = panel.n_bars, len(panel.symbols)
    a0 = panel.first if start is None else max(start, panel.first)
    b0 = n if end is None else min(end, n)
    bars, _ = filled_bars(candles)
    arrays = (bars.open, bars.high, bars.low, bars.close, bars.volume)
    minutes = max(1, panel.bar_seconds // 60)
    row_mods = [mod for mod in mods if mod.name in ROW_WISE_MODULES]
    block = max(1, min(block_bars, MAX_ROWS // max(m, 1)))
    outputs: list[tuple[ModuleOutput, ...] | None] = [None] * n
    offsets = np.arange(module_bars)[None, :] - module_bars + 1
    for a in range(a0, b0, block):
        b = min(a + block, b0)
        k = b - a
        idx = np.arange(a, b)[:, None] + offsets                                  # [k x W]
        stacked = Bars(*(np.ascontiguousarray(x[:, idx].transpose(1, 0, 2)).reshape(k * m, module_bars)
                         for x in arrays))
        stacked_out: dict[str, ModuleOutput] = {}
        if row_mods:
            big = ScanContext(symbols=panel.symbols * k, ts=0, bars=stacked, bars_1m=stacked,
                              timeframe_minutes=minutes, leader_index=0, regime=None,  # type: ignore[arg-type]
                              can_short=np.tile(panel.can_short, k), books=None)
            stacked_out = {mod.name: mod.score(big) for mod in row_mods}
        for j, t in enumerate(range(a, b)):
            rows = slice(j * m, (j + 1) * m)
            ctx = None
            outs = []
            for mod in mods:
                o = stacked_out.get(mod.name)
                if o is not None:
                    outs.append(ModuleOutput(o.module, o.score[rows], o.direction[rows], o.reasons[rows],
                                             {key: v[rows] for key, v in o.raw.items()}))
                    continue
                if ctx is None:
                    s = slice(t - module_bars + 1, t + 1)
                    window = Bars(*(x[:, s] for x in arrays))
                    ctx = ScanContext(symbols=panel.symbols, ts=int(candles.ts[t]), bars=window, bars_1m=window,
                                      timeframe_minutes=minutes, leader_index=0, regime=panel.regimes[t],
                                      can_short=panel.can_short)
                outs.append(mod.score(ctx))
            outputs[t] = tuple(outs)
    return replace(panel, outputs=tuple(outputs))
