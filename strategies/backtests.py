"""Backtest runners shared by ``manage.py backtest``, the REST endpoint and the worker task [BT-4], [BT-5].

Strategies are runners in ``RUNNERS``: each takes the options (the command's parsed arguments, or
the same keys from a stored run) and an optional ``progress`` callback (fraction done, 0..1) and
returns the JSON-safe result. Every runner's result has ``strategy``, ``params``, ``data``,
``bars``, ``trades`` (the count), ``final_equity``, ``report``
(``strategies.engine.backtest.report``) and, unless ``no_trade_list``, ``trade_list``.
Bad options raise ``BacktestInputError`` with a message for the operator.

* ``sma_cross``: the reference strategy (``strategies.engine.backtest.reference``) on ONE candle
  file (CSV/JSON/feather, optionally gzip; see ``execution.adapters.replay.read_candle_file``).
  Rows are validated with ``execution.engine.validation.clean_ohlcv`` (bad rows dropped or
  repaired, counted under ``data.quality``); missing bars are not invented, the strategy runs
  on the rows as they are.
* ``pipeline``: the live trader's tick on history, every market on one clock
  (``strategies.engine.backtest.pipeline``): screener, regime, modules, aggregator, guard,
  position manager, checklist, sizing and the fill model, through the same decision core as
  the worker (``traders.engine.tick``). Data: the simulator (``source="sim"``, ``seed``,
  ``n_markets``, ``days``) or candle files (``data``: 1m, or 3m / 5m / 15m / 30m / 1h run by
  ``strategies.engine.backtest.bars``, one tick per bar; at least 2 markets of one timeframe);
  ``start``/``end`` bound the
  ticked bars (history before ``start`` is the warm-up); ``markets`` keeps some symbols.
  Profile: ``profile`` (built-in name; the stored profile of that name when the database has
  one) with ``params`` (explicit parameter overrides). Extra result keys: ``equity`` ([[bar
  open, equity at its close], ...], at most ``equity_points``), ``by_strategy`` and
  ``by_regime`` (closed-trade statistics by the entry signal's top module / the regime at
  entry), ``regime_bars`` (return and exposure by the regime of each bar), ``exit_reasons``,
  ``entry_reason_codes``, ``guard_trips``, ``fees_paid``, ``traded_value``, ``timing``,
  ``entries`` / ``entries_per_day`` and ``evidence`` (``strategies.engine.backtest.evidence``:
  calibration table, buy-and-hold, random-entry baseline, excess and percentile).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from execution.adapters.replay import read_candle_file
from execution.engine.types import TIMEFRAME_SECONDS
from execution.engine.validation import OhlcvSeries, clean_ohlcv
from strategies.engine.backtest.bars import bar_minutes, warmup_bars
from strategies.engine.backtest.reference import ReferenceResult, sma_cross
from strategies.engine.backtest.report import compute_report

Progress = Callable[[float], None]
Runner = Callable[..., dict[str, Any]]


class BacktestInputError(ValueError):
    """Options a runner cannot run with; the message is for the operator."""


def iso(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None, name: str) -> int | None:
    """Epoch seconds of an ISO date/time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestInputError(f"--{name} {value!r} is not an ISO date or date-time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def load_market(path_arg: str, start: int | None = None, end: int | None = None) -> tuple[OhlcvSeries, dict]:
    """Read, validate and cut one candle file to ``start <= bar open < end``."""
    path = Path(path_arg)
    if not path.is_file():
        raise BacktestInputError(f"data file not found: {path}")
    try:
        raw = read_candle_file(path)
        series, quality = clean_ohlcv(raw)
    except (ValueError, OSError, KeyError, EOFError) as exc:      # MarketDataError is a ValueError
        raise BacktestInputError(f"cannot read candles from {path}: {exc}") from None
    keep = np.ones(len(series), dtype=bool)
    if start is not None:
        keep &= series.ts >= start
    if end is not None:
        keep &= series.ts < end
    if not keep.all():
        series = OhlcvSeries(series.symbol, series.timeframe, *(a[keep] for a in (
            series.ts, series.open, series.high, series.low, series.close, series.volume)))
    info = {
        "file": str(path),
        "symbol": series.symbol,
        "timeframe": series.timeframe,
        "rows_in": quality.rows_in,
        "rows_valid": quality.rows_out,
        "quality": {k: v for k, v in quality.counts.items() if v},
    }
    if len(series):
        info["start"] = iso(series.ts[0])
        info["end"] = iso(series.ts[-1] + TIMEFRAME_SECONDS[series.timeframe])
    return series, info


def trade_list(result: ReferenceResult) -> list[dict[str, Any]]:
    return [{
        "entry_time": iso(t.entry_ts), "exit_time": iso(t.exit_ts),
        "entry_bar": t.entry_bar, "exit_bar": t.exit_bar,
        "entry_price": t.entry_price, "exit_price": t.exit_price, "qty": t.qty,
        "fees": t.entry_fee + t.exit_fee, "pnl": t.pnl, "return": t.return_, "is_open": t.is_open,
    } for t in result.trades]


def run_sma_cross(options: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """The reference strategy on one file (conventions: ``strategies.engine.backtest.reference``)."""
    fast, slow, fee, cash = options["fast"], options["slow"], options["fee"], options["cash"]
    if fast is None or slow is None:
        raise BacktestInputError("--strategy sma_cross needs --fast and --slow")
    if not 1 <= fast < slow:
        raise BacktestInputError(f"need 1 <= --fast < --slow, got --fast {fast} --slow {slow}")
    data = options["data"] or []
    if len(data) != 1:
        raise BacktestInputError(f"--strategy sma_cross needs exactly one --data file, got {len(data)}")
    start, end = parse_time(options["start"], "start"), parse_time(options["end"], "end")
    if start is not None and end is not None and start >= end:
        raise BacktestInputError("--start must be before --end")
    series, info = load_market(data[0], start, end)
    if len(series) < slow + 2:
        raise BacktestInputError(f"{len(series)} valid bars in {data[0]} (after --start/--end); "
                           f"--slow {slow} needs at least {slow + 2} for one trade")

    result = sma_cross(series.open, series.close, fast, slow, fee, cash, ts=series.ts)
    report = compute_report(result.equity, series.ts, result.trades,
                            bar_seconds=TIMEFRAME_SECONDS[series.timeframe], initial_equity=cash,
                            position_value=result.position_value, traded_value=result.traded_value)
    out: dict[str, Any] = {
        "strategy": "sma_cross",
        "params": {"fast": fast, "slow": slow, "fee": fee, "cash": cash},
        "data": info,
        "bars": result.bars,
        "trades": len(result.trades),
        "closed_trades": len(result.trades) - int(result.trades.has_open),
        "open_position": result.trades.has_open,
        "final_equity": result.final_equity,
        "fees_paid": result.fees_paid,
        "report": report.to_dict(),
    }
    if not options["no_trade_list"]:
        out["trade_list"] = trade_list(result)
    # [[bar-open ts, equity at that bar's close], ...]: the curve compute_report read (charts and
    # walk-forward). Left out with the trade list unless ``no_equity`` says otherwise.
    if not options.get("no_equity", options["no_trade_list"]):
        out["equity"] = [list(p) for p in zip(series.ts.tolist(), result.equity.tolist(), strict=True)]
    if progress is not None:
        progress(1.0)
    return out


# --------------------------------------------------------------------------- pipeline [BT-1]

PIPELINE_DEFAULTS: dict[str, Any] = {
    "profile": "STANDARD", "params": None, "source": None, "seed": 7, "n_markets": 30, "days": 3.0,
    "markets": None, "mode": "vector", "latency_ms": 0, "participation": 0.10, "spread_bps": 5.0,
    "depth_fraction": 0.25, "window_bars": 1000, "equity_points": 2000, "evidence_draws": 200,
}


def _opt(options: dict[str, Any], key: str) -> Any:
    value = options.get(key)
    return PIPELINE_DEFAULTS.get(key) if value is None else value


def pipeline_profile(name: str, overrides: dict[str, Any] | None = None, *, builtin: bool = False) -> tuple[Any, str]:
    """The risk profile to run: the stored profile of that name when the database has one (as a
    trader with it would run) unless ``builtin``, else the built-in defaults; ``overrides``
    (explicit parameters) on top. Returns the profile and where it came from."""
    from risk.engine.profiles import DEFAULTS, ProfileError, ProfileName, RiskProfile, profile_for

    if name not in set(ProfileName):
        raise BacktestInputError(f"unknown profile {name!r}; expected one of {', '.join(ProfileName)}")
    origin = "built-in"
    try:
        profile = None if builtin else _stored_profile(name)
        if profile is not None:
            origin = "stored"
        else:
            profile = profile_for(name)
    except ProfileError as exc:
        raise BacktestInputError(str(exc)) from None
    if overrides:
        try:
            profile = RiskProfile.from_dict({**profile.to_dict(), **overrides}, base=DEFAULTS.get(name))
        except ProfileError as exc:
            raise BacktestInputError(str(exc)) from None
        origin += " + overrides"
    return profile, origin


def _stored_profile(name: str) -> Any:
    """The effective profile of the stored StrategyProfile ``name``, or None without a database
    row (or without a database at all: the runner works on defaults alone)."""
    try:
        from django.db import DatabaseError

        from strategies.models import StrategyProfile
        from strategies.services import effective_profile
    except Exception:                 # noqa: BLE001 - no Django configured: defaults
        return None
    try:
        row = StrategyProfile.objects.filter(key=name).first()
    except DatabaseError:
        return None
    return effective_profile(row) if row is not None else None


def _pipeline_data(options: dict[str, Any], fee: float | None) -> tuple[Any, dict[str, Any], int | None, int | None]:
    """The market data (``MarketData``), its description, and the first / last ticked bar open."""
    from decimal import Decimal

    from execution.adapters.replay import default_market_info, load_candle_files
    from execution.engine.sim import SimConfig, SimMarket
    from strategies.engine.backtest.pipeline import MarketData

    start, end = parse_time(options.get("start"), "start"), parse_time(options.get("end"), "end")
    if start is not None and end is not None and start >= end:
        raise BacktestInputError("--start must be before --end")
    data_files = options.get("data") or []
    source = options.get("source") or ("files" if data_files else "sim")
    window = int(_opt(options, "window_bars"))
    from regime.engine.features import FeatureConfig

    warmup = max(window, FeatureConfig().leader_bars_needed)
    wanted = _parse_markets(options.get("markets"))
    if source == "sim":
        if data_files:
            raise BacktestInputError("--source sim takes no --data files")
        seed, n_mk, days = int(_opt(options, "seed")), int(_opt(options, "n_markets")), float(_opt(options, "days"))
        if not 1 <= n_mk <= 300:
            raise BacktestInputError(f"--sim-markets must be 1..300, got {n_mk}")
        if not 0 < days <= 366:
            raise BacktestInputError(f"--days must be in (0, 366], got {days}")
        first = start if start is not None else SimConfig().start_ts
        first -= first % 60
        bars = int(round(days * 1440))
        if end is not None:
            bars = min(bars, (end - first) // 60)
        if bars < 1:
            raise BacktestInputError("the period holds no bar")
        market = SimMarket(SimConfig(seed=seed, n_markets=n_mk, start_ts=first - (warmup - 1) * 60))
        candles = market.generate(warmup - 1 + bars).candles
        infos = {m.symbol: m for m in market.market_info()}
        info: dict[str, Any] = {"source": "sim", "seed": seed, "sim_markets": n_mk, "days": bars / 1440,
                                "warmup_bars": warmup - 1}
        start, end = first, first + bars * 60
    elif source == "files":
        if not data_files:
            raise BacktestInputError("--source files needs --data FILE...")
        for f in data_files:
            if not Path(f).is_file():
                raise BacktestInputError(f"data file not found: {f}")
        try:
            replay = load_candle_files(data_files)
        except (ValueError, OSError, KeyError, EOFError) as exc:
            if "different timeframes" in str(exc):
                raise BacktestInputError(f"the data files mix timeframes ({_file_timeframes(data_files)}); the "
                                         f"pipeline ticks every market on one clock: give files of one "
                                         f"timeframe") from None
            raise BacktestInputError(f"cannot read candles: {exc}") from None
        candles = replay.candles
        try:
            bar_minutes(candles.timeframe)
        except ValueError as exc:
            raise BacktestInputError(str(exc)) from None
        infos = {s: default_market_info(s, candles) for s in candles.symbols}
        info = {"source": "files", "files": [str(f) for f in data_files], "quality": replay.report.to_dict()}
    else:
        raise BacktestInputError(f"unknown --source {source!r} (sim or files)")
    if wanted:
        unknown = [s for s in wanted if s not in candles.symbols]
        if unknown:
            raise BacktestInputError(f"unknown market(s) {', '.join(unknown)}; the data has "
                                     f"{', '.join(candles.symbols[:20])}{'...' if len(candles.symbols) > 20 else ''}")
        candles = candles.select(tuple(s for s in candles.symbols if s in wanted))
    if source == "files" and len(candles.symbols) < 2:
        raise BacktestInputError(
            f"the pipeline needs at least 2 markets, the data has {len(candles.symbols)} "
            f"({', '.join(candles.symbols)}): the regime's breadth, dispersion and value share compare markets "
            f"and the screener ranks them; give several --data files")
    if fee is not None:
        from dataclasses import replace as dc_replace

        rate = Decimal(repr(float(fee)))
        if rate <= 0:
            raise BacktestInputError("--fee must be positive for the pipeline (the fill model charges every fill)")
        infos = {s: dc_replace(m, maker_fee=rate, taker_fee=rate) for s, m in infos.items()}
    try:
        data = MarketData(candles, {s: infos[s] for s in candles.symbols}, spread_bps=float(_opt(options, "spread_bps")),
                          depth_fraction=float(_opt(options, "depth_fraction")))
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from None
    info["markets"] = list(candles.symbols)
    return data, info, start, end


def _file_timeframes(files: list[str]) -> str:
    """``name: timeframe`` of each file, from its name (freqtrade names) or its rows."""
    from execution.adapters.replay import read_candle_file

    out = []
    for f in files:
        try:
            tf = read_candle_file(Path(f)).timeframe
        except (ValueError, OSError, KeyError, EOFError):
            tf = "?"
        out.append(f"{Path(f).name}: {tf}")
    return ", ".join(out)


def _cut(data: Any, a: int, b: int, spread_bps: float) -> Any:
    """``MarketData`` of bars ``[a, b)`` only (same rules and book settings)."""
    from execution.engine.types import Candles
    from strategies.engine.backtest.pipeline import MarketData

    a = max(0, a)
    if a == 0 and b >= data.n_bars:
        return data
    c, sl = data.candles, slice(a, b)
    cut = Candles(c.symbols, c.timeframe, c.ts[sl], c.open[:, sl], c.high[:, sl], c.low[:, sl], c.close[:, sl],
                  c.volume[:, sl])
    return MarketData(cut, data.markets, spread_bps=spread_bps, depth_fraction=data.depth_fraction,
                      book_depth=data.book_depth)


def _parse_markets(value: Any) -> list[str]:
    if not value:
        return []
    items = value if isinstance(value, list | tuple) else [value]
    out: list[str] = []
    for item in items:
        out.extend(s.strip() for s in str(item).split(",") if s.strip())
    return out


def run_pipeline(options: dict[str, Any], progress: Progress | None = None) -> dict[str, Any]:
    """The live pipeline on history (``strategies.engine.backtest.pipeline``), one global clock
    over many markets, on the simulator or on candle files (1m to 1h)."""
    from decimal import Decimal

    from execution.engine.fillmodel import FillConfig
    from strategies.engine.backtest.bars import MODULE_BARS, run_bar_backtest
    from strategies.engine.backtest.curves import chart_curves
    from strategies.engine.backtest.pipeline import BacktestConfig, run_backtest
    from strategies.engine.backtest.report import bar_breakdown, trade_breakdown

    params = options.get("params")
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except json.JSONDecodeError as exc:
            raise BacktestInputError(f"--params is not JSON: {exc}") from None
    if params is not None and not isinstance(params, dict):
        raise BacktestInputError("--params must be a JSON object of profile parameters")
    builtin = bool(options.get("builtin"))     # built-in profile and regime thresholds (no database)
    profile, origin = pipeline_profile(str(_opt(options, "profile")), params, builtin=builtin)
    cash = options.get("cash") or 10_000_000.0
    if not (math.isfinite(float(cash)) and float(cash) > 0):
        raise BacktestInputError(f"--cash must be positive, got {cash}")
    mode = str(_opt(options, "mode"))
    if mode not in ("vector", "bar"):
        raise BacktestInputError(f"--mode must be vector or bar, got {mode!r}")
    try:
        fill = FillConfig(latency_ms=int(_opt(options, "latency_ms")), participation=float(_opt(options, "participation")))
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from None
    data, info, start, end = _pipeline_data(options, options.get("fee"))
    ts = data.candles.ts
    window = int(_opt(options, "window_bars"))
    bar_s = data.bar_seconds
    tf = data.candles.timeframe
    from regime.engine.features import FeatureConfig

    if bar_s == 60:
        first = max(window, FeatureConfig().leader_bars_needed) - 1 if info["source"] == "sim" else window - 1
        warm = window
    else:       # coarse bars (strategies.engine.backtest.bars): the module window / leader history
        warm = warmup_bars(tf)
        first = warm - 1
    if start is not None:
        first = max(first, int(np.searchsorted(ts, start)))
    last = int(np.searchsorted(ts, end)) if end is not None else len(ts)
    if last - first < 2:
        raise BacktestInputError(
            f"{len(ts)} bars of {tf} in the data; with {warm} bars of warm-up before the first tick and the "
            f"--start/--end given, fewer than 2 bars are left to tick")
    if bar_s != 60:
        # the coarse path precomputes every bar of the data it gets: keep only the warm-up and the period
        a = first - warm + 1
        data, first, last = _cut(data, a, last, float(_opt(options, "spread_bps"))), first - a, last - a
        info["bar_cadence"] = {"timeframe": tf, "tick_seconds": bar_s, "module_bar_minutes": bar_s // 60,
                               "module_bars": MODULE_BARS, "warmup_bars": warm}
    try:
        config = BacktestConfig(profile=profile, cash=Decimal(repr(float(cash))), window_bars=window, fill=fill,
                                spread_bps=float(_opt(options, "spread_bps")),
                                depth_fraction=float(_opt(options, "depth_fraction")),
                                start_index=first, end_index=last, mode=mode, seed=int(_opt(options, "seed")),
                                regime_thresholds=None if builtin else _regime_thresholds())
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from None
    import time

    started = time.perf_counter()
    if bar_s == 60:
        result = run_backtest(data, config, progress=progress)
    else:
        try:
            result = run_bar_backtest(data, config, progress=progress)
        except ValueError as exc:
            raise BacktestInputError(str(exc)) from None
    report = compute_report(result.equity, result.ts, result.trades, bar_seconds=bar_s,
                            initial_equity=float(config.cash), position_value=result.position_value,
                            traded_value=float(result.traded_value))
    c_ts, c_eq, _ = chart_curves(result.ts, result.equity, max_points=int(_opt(options, "equity_points")))
    info["start"], info["end"] = iso(result.ts[0]), iso(result.ts[-1] + bar_s)
    run_seconds = time.perf_counter() - started
    ev_started = time.perf_counter()
    ev = pipeline_evidence(data, result, fee=options.get("fee"), cash=float(config.cash), seed=config.seed,
                           n_draws=int(_opt(options, "evidence_draws")))
    ev_seconds = time.perf_counter() - ev_started
    out: dict[str, Any] = {
        "strategy": "pipeline",
        "params": {"profile": profile.to_dict(), "profile_source": origin, "cash": float(config.cash), "mode": mode,
                   "window_bars": window, "latency_ms": fill.latency_ms, "participation": fill.participation,
                   "spread_bps": config.spread_bps, "depth_fraction": config.depth_fraction,
                   "fee": options.get("fee"), "seed": config.seed},
        "data": info,
        "bars": result.bars,
        "markets": len(result.markets),
        "trades": len(result.trades),
        "entries": len(result.trades),
        "entries_per_day": report.trades_per_day if math.isfinite(report.trades_per_day) else None,
        "closed_trades": sum(1 for t in result.trades if not t.is_open),
        "open_positions": sum(1 for t in result.trades if t.is_open),
        "final_equity": float(result.final_equity),
        "fees_paid": float(result.fees_paid),
        "traded_value": float(result.traded_value),
        "fills": result.fills,
        "orders": result.orders,
        "report": report.to_dict(),
        "by_strategy": trade_breakdown(result.trades, "strategy"),
        "by_regime": trade_breakdown(result.trades, "regime"),
        "regime_bars": bar_breakdown(result.equity, result.regime, initial_equity=float(config.cash),
                                     position_value=result.position_value),
        "exit_reasons": dict(sorted(result.exit_reasons.items())),
        "entry_reason_codes": dict(sorted(result.reason_counts.items(), key=lambda kv: -kv[1])),
        "guard_trips": dict(sorted(result.guard_trips.items())),
        "timing": {"seconds": round(result.seconds, 3), "run_seconds": round(run_seconds, 3),
                   "evidence_seconds": round(ev_seconds, 3),
                   "bars_per_second": round(result.bars / result.seconds, 1) if result.seconds > 0 else None,
                   "market_bars_per_second": round(result.bars * len(result.markets) / result.seconds, 1)
                   if result.seconds > 0 else None},
        "equity": [[int(t), float(e)] for t, e in zip(c_ts.tolist(), c_eq.tolist(), strict=True)],
        "evidence": ev,
    }
    if not options.get("no_trade_list"):
        out["trade_list"] = [{**t.to_dict(), "entry_value": t.entry_value, "exit_value": t.exit_value,
                              "pnl": float(t.pnl), "fees": float(t.fees)} for t in result.trades]
    return out


def pipeline_evidence(data: Any, result: Any, *, fee: float | None, cash: float, seed: int = 0,
                      n_draws: int = 200) -> dict[str, Any]:
    """``strategies.engine.backtest.evidence.evidence`` of a pipeline run: on the closes of the
    ticked bars, with the run's per-bar scores; ``fee`` per side (default: the markets' mean
    taker fee)."""
    from strategies.engine.backtest.evidence import evidence

    if not len(result.ts):
        return {}
    a = int(np.searchsorted(data.candles.ts, result.ts[0]))
    close = data.candles.close[:, a:a + len(result.ts)]
    rate = float(fee) if fee is not None else float(np.mean([float(data.markets[s].taker_fee) for s in data.symbols]))
    scores = result.scores.T if result.scores is not None else None
    enter = result.enter.T if result.enter is not None else None
    try:
        return evidence(close, result.ts, data.symbols, result.trades, cash=cash, fee=rate,
                        bar_seconds=data.bar_seconds, scores=scores, enter=enter, n_draws=n_draws, seed=seed)
    except ValueError as exc:
        raise BacktestInputError(str(exc)) from None


RUNNERS: dict[str, Runner] = {
    "sma_cross": run_sma_cross,
    "pipeline": run_pipeline,
}


def _regime_thresholds():
    """The regime thresholds in force (stored versions [RG-2]; code defaults when none)."""
    from regime.thresholds import current_thresholds

    return current_thresholds()
