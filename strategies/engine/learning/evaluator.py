"""The tuner's evaluator [AI-3]: a model's parameters on a stretch of history -> its trades.

Built for speed on the live strategy's own pieces, so that K = 60 trials over 20 markets and
three months of bars take minutes:

* Once per data set (``build_panel``): at every bar, what the live scan computes before the
  aggregation and does not depend on the tuned parameters: the regime (``regime.engine``
  ``compute_input_series`` + ``classify_series``), the eight score modules
  (``strategies.engine.modules`` on the last ``window_bars`` bars, exactly as in a scan), the
  screener's checks with every market ranked (``strategies.engine.screener.screen``) and the
  ATR(14) for stops.
* Per trial (``PanelEvaluator``): the aggregation with the trial's parameters
  (``strategies.engine.aggregator.aggregate`` through ``params.apply_scan_params``: module
  weights, entry threshold, penalty weights, regime multipliers; the screener's ``top_n``
  applied to the ranks) carries the score EMA and the held markets bar by bar, and a portfolio
  simulation trades the proposals:

  - entry: an ENTER proposal, best final score first, while the regime's position limit
    ([RG-5], ``max_positions`` with the profile cap) has room; filled at the next bar's open
    plus ``slippage``; each position gets ``1 / max_positions_cap`` of equity;
  - exit: the aggregator's EXIT (score <= exit threshold on the held side) at the next open,
    the ATR stop (``entry - atr_stop_mult * ATR``; at the stop, or the open when it gaps
    through), or the time stop after ``max_hold_bars``;
  - costs as the fill model charges them: each market's taker fee (``MarketInfo.taker_fee``) on
    both sides, and ``slippage`` per side: ``r_net = exit / entry - 1 - (2 * fee + 2 * slippage)``;
    ``mae`` = lowest low while held / entry - 1 - cost.

Bars of any timeframe work (1-minute candles run the regime engine exactly as live; longer bars
use the same engine with its minute windows converted to whole bars, e.g. the 15-minute leader
bars and the 1-hour return window become 1 bar on 1-hour data; see ``bar_feature_config``).
What this is not: the full tick (pre-trade checklist, sizing by risk, partial fills, the guard,
scale-outs). Tuning runs score trials with ``tick_evaluator.TickEvaluator``, which runs the full
tick on this same panel; ``PanelEvaluator`` stays as the quick approximation (a fixed
``1 / max_positions_cap`` of equity per position, one exit rule set) for comparisons and tests.

Interface: ``PanelEvaluator.evaluate(params, window) -> WindowResult`` with ``window`` a
``Window(start, end)`` in epoch seconds (entries at bars in ``[start, end)``). One simulation
per parameter set covers every window (memoised), so asking for several windows costs one run;
positions opened in a window may close after it, and belong to the window of their entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from execution.engine.types import TIMEFRAME_SECONDS, Candles, MarketInfo, Ticker
from regime.engine.classifier import RegimeThresholds, classify_series, max_positions
from regime.engine.features import Bars, FeatureConfig, compute_input_series, filled_bars
from regime.engine.types import RegimeLabel, RegimeState
from risk.engine.profiles import STANDARD, ProfileName, RiskProfile
from strategies.engine import indicators as ind
from strategies.engine.aggregator import aggregate
from strategies.engine.learning.params import apply_scan_params, split
from strategies.engine.modules import default_modules
from strategies.engine.modules.base import ScanContext, ScoreModule
from strategies.engine.pipeline import ScanParams
from strategies.engine.screener import ScreenerParams, ScreenResult, screen
from strategies.engine.types import Action, ModuleOutput
from traders.engine.tick import scan_params

DAY = 86_400


@dataclass(frozen=True, slots=True)
class Window:
    """Entries at bars opening in ``[start, end)`` (epoch seconds)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a window must end after it starts")

    @property
    def days(self) -> float:
        return (self.end - self.start) / DAY


@dataclass(frozen=True)
class WindowResult:
    """One parameter set's trades entered in a window and its daily portfolio returns."""

    r_net: np.ndarray            # per trade
    mae: np.ndarray              # per trade (<= 0 usually)
    entry_ts: np.ndarray
    daily_returns: np.ndarray    # one value per day of the window (0 on flat days)
    days: float
    #: per trade, for the random-entry baseline (``baseline``): market row, bars held, the share
    #: of the equity it put in (None from evaluators that do not track them)
    market: np.ndarray | None = None
    hold_bars: np.ndarray | None = None
    weight: np.ndarray | None = None

    @property
    def n_trades(self) -> int:
        return len(self.r_net)

    @property
    def total_return(self) -> float:
        return float(np.prod(1.0 + self.daily_returns) - 1.0) if len(self.daily_returns) else 0.0

    @property
    def sharpe_daily(self) -> float:
        d = self.daily_returns
        if len(d) < 2 or d.std(ddof=1) == 0:
            return 0.0
        return float(d.mean() / d.std(ddof=1))

    def summary(self) -> dict[str, float | int]:
        return {"trades": self.n_trades, "days": self.days, "total_return": self.total_return,
                "sharpe_daily": self.sharpe_daily,
                "mean_r_net": float(self.r_net.mean()) if self.n_trades else 0.0}


class Evaluator(Protocol):
    """What the tuner needs: a parameter set's results in one window."""

    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult: ...


@dataclass(frozen=True, slots=True)
class EvaluatorConfig:
    window_bars: int = 200          # module bars per scan (the live scan sees 200 five-minute bars)
    max_hold_bars: int = 48
    atr_stop_mult: float = 2.0
    slippage: float = 0.0005        # per side
    default_fee: float = 0.0005     # per side, for markets without rules
    thresholds: RegimeThresholds = field(default_factory=RegimeThresholds)

    def __post_init__(self) -> None:
        if self.window_bars < 60:
            raise ValueError("window_bars must be at least 60")
        if self.max_hold_bars < 1 or not self.atr_stop_mult > 0 or self.slippage < 0:
            raise ValueError("max_hold_bars >= 1, atr_stop_mult > 0 and slippage >= 0 are required")


def bar_feature_config(bar_minutes: int) -> FeatureConfig:
    """The regime engine's windows (minutes) in whole bars of ``bar_minutes`` (identity on 1m)."""
    base = FeatureConfig()
    if bar_minutes == 1:
        return base

    def bars(minutes: int) -> int:
        return max(1, round(minutes / bar_minutes))

    return replace(base, leader_tf=bars(base.leader_tf), return_window=bars(base.return_window),
                   value_window=bars(base.value_window), whipsaw_tf=bars(base.whipsaw_tf))


@dataclass(frozen=True)
class Panel:
    """Everything about a data set that no tuned parameter changes (see the module docstring).

    Arrays are ``[markets x bars]`` unless noted; ``first`` is the first bar with a full window."""

    symbols: tuple[str, ...]
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    atr: np.ndarray
    fee: np.ndarray                                  # [markets]
    can_short: np.ndarray                            # [markets]
    first: int
    regimes: tuple[RegimeState, ...]                 # [bars]
    outputs: tuple[tuple[ModuleOutput, ...] | None, ...]   # [bars]; None before ``first``
    base_candidate: np.ndarray                       # [bars x markets]: every screener check but top-N
    rank: np.ndarray                                 # [bars x markets]: rank by traded value
    flags: tuple[tuple[tuple[str, ...], ...] | None, ...]
    bar_seconds: int
    screens: tuple[ScreenResult | None, ...] = ()     # [bars]: the screen with every market ranked

    @property
    def n_bars(self) -> int:
        return len(self.ts)


def _candles_as_1m(c: Candles) -> Candles:
    """The same arrays labelled as 1-minute bars (the regime engine counts bars, not minutes)."""
    return c if c.timeframe == "1m" else Candles(c.symbols, "1m", c.ts, c.open, c.high, c.low, c.close, c.volume)


def build_panel(candles: Candles, markets: Mapping[str, MarketInfo] | None = None,
                config: EvaluatorConfig | None = None, modules: Sequence[ScoreModule] | None = None) -> Panel:
    """Precompute the parameter-free part of every bar's scan (module docstring)."""
    cfg = config or EvaluatorConfig()
    markets = markets or {}
    mods = tuple(modules) if modules is not None else default_modules()
    bar_seconds = TIMEFRAME_SECONDS[candles.timeframe]
    minutes = max(1, bar_seconds // 60)
    n_mk, n = candles.n_markets, candles.n_bars
    if n <= cfg.window_bars + 1:
        raise ValueError(f"need more than {cfg.window_bars + 1} bars, got {n}")
    bars, missing = filled_bars(candles)
    series = compute_input_series(_candles_as_1m(candles), config=bar_feature_config(minutes))
    classified = classify_series(series, cfg.thresholds)
    regimes = tuple(RegimeState(RegimeLabel(str(classified.labels[i])), float(classified.regime_score[i]),
                                float(classified.confidence[i]), series.at(i)) for i in range(n))
    atr = ind.atr(bars.high, bars.low, bars.close, 14)
    with np.errstate(invalid="ignore", divide="ignore"):
        atr_pct = atr / bars.close * 100.0
    fee = np.array([float(markets[s].taker_fee) if s in markets else cfg.default_fee for s in candles.symbols])
    can_short = np.array([bool(markets[s].can_short) if s in markets else False for s in candles.symbols])
    value = np.nan_to_num(bars.close * bars.volume)
    day_bars = max(1, DAY // bar_seconds)
    cum = np.concatenate([np.zeros((n_mk, 1)), np.cumsum(value, axis=1)], axis=1)
    first = cfg.window_bars - 1
    outputs: list[tuple[ModuleOutput, ...] | None] = [None] * n
    flags: list[tuple[tuple[str, ...], ...] | None] = [None] * n
    screens: list[ScreenResult | None] = [None] * n
    base_candidate = np.zeros((n, n_mk), bool)
    rank = np.zeros((n, n_mk), np.int64)
    every = ScreenerParams(top_n=n_mk)
    hour = max(1, 3600 // bar_seconds)
    for t in range(first, n):
        s = slice(t - cfg.window_bars + 1, t + 1)
        window = Bars(bars.open[:, s], bars.high[:, s], bars.low[:, s], bars.close[:, s], bars.volume[:, s])
        ctx = ScanContext(symbols=candles.symbols, ts=int(candles.ts[t]), bars=window, bars_1m=window,
                          timeframe_minutes=minutes, leader_index=0, regime=regimes[t], can_short=can_short)
        outputs[t] = tuple(m.score(ctx) for m in mods)
        v24 = cum[:, t + 1] - cum[:, max(0, t + 1 - day_bars)]
        close_t = bars.close[:, t]
        tickers = {sym: Ticker(sym, int(candles.ts[t]), float(close_t[i]), float(close_t[i]) * (1 - 5e-5),
                               float(close_t[i]) * (1 + 5e-5), float(v24[i]), 0.0)
                   for i, sym in enumerate(candles.symbols) if math.isfinite(close_t[i])}
        miss = missing[:, max(0, t + 1 - hour):t + 1].mean(axis=1)
        scr = screen(candles.symbols, close_t, atr_pct[:, t], miss, every, tickers=tickers, markets=markets)
        base_candidate[t] = scr.candidate
        rank[t] = scr.rank
        flags[t] = scr.flags
        screens[t] = scr
    return Panel(candles.symbols, candles.ts.astype(np.int64), bars.open, bars.high, bars.low, bars.close, atr, fee,
                 can_short, first, regimes, tuple(outputs), base_candidate, rank, tuple(flags), bar_seconds,
                 tuple(screens))


@dataclass(frozen=True)
class Simulation:
    """One parameter set over the whole panel: its trades and its per-bar portfolio returns."""

    entry_bar: np.ndarray
    r_net: np.ndarray
    mae: np.ndarray
    bar_returns: np.ndarray       # [bars] portfolio return of each bar
    market: np.ndarray | None = None      # [trades] market row
    hold_bars: np.ndarray | None = None   # [trades] exit bar - entry bar
    weight: np.ndarray | None = None      # [trades] entry value / equity (cash)


def trial_profile(params: Mapping[str, Any]) -> tuple[RiskProfile, dict[str, Any]]:
    """A model's params -> (the AI MODE risk profile over STANDARD, the scan keys)."""
    profile_keys, scan_keys = split(params)
    base = replace(STANDARD, name=ProfileName.AI_MODE.value)
    return RiskProfile.from_dict({**profile_keys, "name": ProfileName.AI_MODE.value}, base=base), scan_keys


def scan_settings(profile: RiskProfile, scan_keys: Mapping[str, Any]) -> ScanParams:
    """The ScanParams a trader with this profile and these scan keys runs (as the live tick)."""
    return apply_scan_params(scan_params(profile), scan_keys)


def simulate(panel: Panel, params: Mapping[str, Any], config: EvaluatorConfig | None = None,
             start_bar: int | None = None) -> Simulation:
    """Run one parameter set over the panel from ``start_bar`` (default ``panel.first``)."""
    cfg = config or EvaluatorConfig()
    profile, scan_keys = trial_profile(params)
    sp = scan_settings(profile, scan_keys)
    agg_params = sp.aggregator
    top_n = sp.screener.top_n
    cap = max(1, profile.max_positions_cap)
    weight = 1.0 / cap
    n = panel.n_bars
    start = panel.first if start_bar is None else max(start_bar, panel.first)
    ema: dict[str, float] = {}
    held: dict[int, dict[str, float]] = {}
    entries, r_out, mae_out, mk_out, hold_out = [], [], [], [], []
    bar_ret = np.zeros(n)
    o, lo, c = panel.open, panel.low, panel.close
    cost = 2.0 * panel.fee + 2.0 * cfg.slippage
    pending_exit: set[int] = set()
    pending_entry: list[int] = []
    for t in range(start, n):
        # 1. orders decided at the previous bar's close fill at this bar's open
        for i in sorted(pending_exit):
            p = held.pop(i)
            px = o[i, t] * (1.0 - cfg.slippage)
            bar_ret[t] += weight * (px / p["mark"] - 1.0) - weight * (panel.fee[i] + cfg.slippage)
            entries.append(p["bar"])
            mk_out.append(i)
            hold_out.append(t - p["bar"])
            r_out.append(px / p["entry"] - 1.0 - cost[i])
            mae_out.append(min(p["low"], px) / p["entry"] - 1.0 - cost[i])
        pending_exit.clear()
        for i in pending_entry:
            entry = o[i, t] * (1.0 + cfg.slippage)
            if not (math.isfinite(entry) and entry > 0):
                continue
            atr = panel.atr[i, t - 1]
            stop = entry - cfg.atr_stop_mult * atr if math.isfinite(atr) else entry * 0.95
            held[i] = {"entry": entry, "stop": stop, "bar": t, "mark": entry, "low": entry}
            bar_ret[t] -= weight * (panel.fee[i] + cfg.slippage)
        pending_entry = []
        # 2. stops and marks during this bar
        for i in list(held):
            p = held[i]
            if lo[i, t] <= p["stop"]:
                px = min(o[i, t], p["stop"]) * (1.0 - cfg.slippage)
                bar_ret[t] += weight * (px / p["mark"] - 1.0) - weight * (panel.fee[i] + cfg.slippage)
                entries.append(p["bar"])
                mk_out.append(i)
                hold_out.append(t - p["bar"])
                r_out.append(px / p["entry"] - 1.0 - cost[i])
                mae_out.append(min(p["low"], lo[i, t]) / p["entry"] - 1.0 - cost[i])
                del held[i]
                continue
            if math.isfinite(c[i, t]):
                bar_ret[t] += weight * (c[i, t] / p["mark"] - 1.0)
                p["mark"] = c[i, t]
            p["low"] = min(p["low"], lo[i, t])
        # 3. the scan at this bar's close
        outs = panel.outputs[t]
        if outs is None:
            continue
        symbols = panel.symbols
        cand = panel.base_candidate[t] & (panel.rank[t] < top_n)
        held_dirs = {symbols[i]: 1 for i in held}
        agg = aggregate(symbols, int(panel.ts[t]), outs, panel.regimes[t], agg_params, ema_state=ema,
                        held=held_dirs, candidates=cand, can_short=panel.can_short,
                        signal_mask=np.zeros(len(symbols), bool))
        ema = agg.ema_state
        for i in list(held):
            if agg.actions[i] is Action.EXIT or t - held[i]["bar"] + 1 >= cfg.max_hold_bars:
                pending_exit.add(i)
        room = max_positions(panel.regimes[t].label, cap) - (len(held) - len(pending_exit))
        if room > 0 and t + 1 < n:
            enter = [i for i, a in enumerate(agg.actions) if a is Action.ENTER and i not in held]
            enter.sort(key=lambda i: -agg.final_score[i])
            pending_entry = enter[:room]
    # positions still open at the end are marked at the last close (no exit cost)
    for i, p in held.items():
        entries.append(p["bar"])
        mk_out.append(i)
        hold_out.append(n - 1 - p["bar"])
        last = c[i, n - 1] if math.isfinite(c[i, n - 1]) else p["mark"]
        r_out.append(last / p["entry"] - 1.0 - cost[i] / 2)
        mae_out.append(p["low"] / p["entry"] - 1.0 - cost[i] / 2)
    order = np.argsort(np.array(entries, dtype=np.int64), kind="stable")
    return Simulation(np.array(entries, dtype=np.int64)[order], np.array(r_out)[order], np.array(mae_out)[order],
                      bar_ret, np.array(mk_out, dtype=np.int64)[order], np.array(hold_out, dtype=np.int64)[order],
                      np.full(len(entries), weight))


class PanelEvaluator:
    """``Evaluator`` over a ``Panel``: one memoised simulation per parameter set."""

    def __init__(self, panel: Panel, config: EvaluatorConfig | None = None, cache_size: int = 4) -> None:
        self.panel, self.config = panel, config or EvaluatorConfig()
        self._cache: dict[str, Simulation] = {}
        self._cache_size = cache_size
        self.simulations = 0

    def simulation(self, params: Mapping[str, Any]) -> Simulation:
        key = json.dumps(params, sort_keys=True)
        sim = self._cache.get(key)
        if sim is None:
            sim = self._simulate(params)
            self.simulations += 1
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = sim
        return sim

    def _simulate(self, params: Mapping[str, Any]) -> Simulation:
        return simulate(self.panel, params, self.config)

    def evaluate(self, params: Mapping[str, Any], window: Window) -> WindowResult:
        sim = self.simulation(params)
        ts = self.panel.ts
        in_window = (ts[sim.entry_bar] >= window.start) & (ts[sim.entry_bar] < window.end)
        bars = (ts >= window.start) & (ts < window.end)
        day = (ts[bars] - window.start) // DAY
        n_days = max(1, int(math.ceil(window.days)))
        daily = np.zeros(n_days)
        np.add.at(daily, np.minimum(day, n_days - 1), sim.bar_returns[bars])

        def part(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[in_window]

        return WindowResult(sim.r_net[in_window], sim.mae[in_window], ts[sim.entry_bar][in_window], daily,
                            window.days, part(sim.market), part(sim.hold_bars), part(sim.weight))

    def baseline(self, params: Mapping[str, Any], window: Window, *, n_draws: int = 200, seed: int = 0
                 ) -> dict[str, Any] | None:
        """The random-entry baseline of the trades entered in ``window``
        (``strategies.engine.backtest.evidence``, the backtest report's figures): the same
        number of trades, on the same markets, with the same holding times and weights, their
        entry bars drawn uniformly over the window's bars (a holding may run past the window's
        end, as the trade's own did), ``n_draws`` times. Returns the baseline's mean and 5-95 %
        band, the candidate's excess over its mean (total and per trade) and the candidate's
        percentile among the draws; None when the evaluator does not track trades' markets."""
        from strategies.engine.backtest.evidence import percentile_of, random_baseline

        r = self.evaluate(params, window)
        if r.market is None or r.hold_bars is None or r.weight is None:
            return None
        ts, p = self.panel.ts, self.panel
        a = int(np.searchsorted(ts, window.start))
        b = int(np.searchsorted(ts, window.end))
        end = min(p.n_bars, b + (int(r.hold_bars.max()) if r.n_trades else 0))
        fee = float(np.mean(p.fee)) if len(p.fee) else 0.0
        if r.n_trades == 0 or b <= a:
            return {"trades": 0, "draws": n_draws, "seed": seed, "fee": fee, "excess_total": None,
                    "excess_trade_mean": None, "percentile": None}
        hold = np.minimum(r.hold_bars, end - a - 1)
        base = random_baseline(p.close[:, a:end], r.market, hold, r.weight, fee=fee, n_draws=n_draws, seed=seed)
        totals = base.pop("totals")
        total = float(r.weight @ r.r_net)
        mean = float(r.r_net.mean())
        return {**base, "fee": fee, "strategy_total": total, "strategy_trade_mean": mean,
                "excess_total": total - base["total_return_mean"],
                "excess_trade_mean": mean - base["trade_return_mean"],
                "percentile": percentile_of(total, totals)}

    def span(self) -> Window:
        """The window every bar with a full scan window covers."""
        return Window(int(self.panel.ts[self.panel.first]), int(self.panel.ts[-1]) + self.panel.bar_seconds)
