"""``manage.py regime_eval``: judge the regime classifier [RG-2] on the simulator (against its
true regime) or on real candle files (by what follows each label).

    python manage.py regime_eval --seed 1 --days 7 [--markets 30] [--skip-hours 24]
                                 [--thresholds '{"trend_adx": [22, 35]}'] [--features '{"leader_tf": 5}']
    python manage.py regime_eval --data ../shared/data/upbit_azuremooni/upbit_KRW-*_1m.csv.gz
                                 [--leader KRW-BTC] [--horizon-minutes 240] [--skip-hours 24]

Real data has no ground truth. ``--data`` loads the files as one multi-market universe (one
market per file, same timeframe; the leader is ``--leader``, else the BTC market, else the first
file), labels every bar with the vectorised path and reports per label its share of bars and
the median / mean over its bars of what the universe did over the next ``--horizon-minutes``:
realised volatility, directional efficiency and worst drawdown (``regime.engine.forward``).
5m / 15m / 1h files work: the regime windows are scaled to whole bars
(``strategies.engine.learning.evaluator.bar_feature_config``).

No database: the simulator (``execution.engine.sim``) generates ``days`` of 1-minute bars, the
vectorised path (``compute_input_series`` -> ``classify_series``) labels every bar, and
``regime.engine.evaluate.evaluate`` compares the labels with ``SimHistory.true_regime``. The
first ``skip_hours`` (warm-up: the leader's 4 h ADX needs ~25 h to settle) and any bar whose
inputs are still missing are not scored. Prints one JSON object; the confusion matrix has the
true label on the rows and the predicted label on the columns, both in ``labels`` order.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from execution.engine.sim import SimConfig, SimMarket
from regime.engine.classifier import RegimeThresholds, classify_series
from regime.engine.evaluate import evaluate
from regime.engine.features import FeatureConfig, compute_input_series, filled_bars
from regime.engine.forward import forward_metrics, label_outcomes

MINUTES_PER_DAY = 1440
CONFUSION_AXES = "rows = true label, columns = predicted label, both in `labels` order"


def _overrides(raw: str | None, base: Any, what: str) -> Any:
    """``base`` (a frozen dataclass) with the fields named in the JSON object ``raw`` replaced.
    Two-element lists become ramps ``(zero_at, one_at)``."""
    if not raw:
        return base
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--{what} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError(f"--{what} must be a JSON object of field: value")
    known = {f.name: getattr(base, f.name) for f in fields(base)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise CommandError(f"--{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        current = known[name]
        if isinstance(current, tuple):
            if not (isinstance(value, list) and len(value) == len(current)
                    and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
                raise CommandError(f"--{what}: {name} must be a list of {len(current)} numbers, got {value!r}")
            values[name] = tuple(float(v) for v in value)
        elif isinstance(current, int) and not isinstance(current, bool):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CommandError(f"--{what}: {name} must be a positive integer, got {value!r}")
            values[name] = value
        else:
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise CommandError(f"--{what}: {name} must be a number, got {value!r}")
            values[name] = float(value)
    try:
        return replace(base, **values)
    except ValueError as exc:
        raise CommandError(f"--{what}: {exc}") from None


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def evaluate_on_sim(seed: int, days: int, markets: int = 30, skip_hours: float = 24.0,
                    thresholds: RegimeThresholds | None = None,
                    features: FeatureConfig | None = None) -> dict[str, Any]:
    """Simulate, classify every bar, score against the true regime; the command's JSON report."""
    th = thresholds or RegimeThresholds()
    cfg = features or FeatureConfig()
    n_bars = days * MINUTES_PER_DAY
    skip = int(round(skip_hours * 60))
    if skip >= n_bars:
        raise CommandError(f"--skip-hours {skip_hours:g} leaves no bar of a {days}-day run to score")

    started = time.perf_counter()
    history = SimMarket(SimConfig(seed=seed, n_markets=markets)).generate(n_bars)
    simulated = time.perf_counter()
    inputs = compute_input_series(history.candles, config=cfg)
    series = classify_series(inputs, th)
    classified = time.perf_counter()

    after_warmup = np.arange(n_bars) >= skip
    mask = after_warmup & inputs.valid
    result = evaluate(series.labels, history.true_regime, mask)
    finished = time.perf_counter()

    predicted = np.asarray(series.labels[mask]).astype(str)
    recalls = {lab: r for lab, r in result.recall.items() if r is not None}
    worst = min(recalls, key=recalls.__getitem__) if recalls else None
    return {
        "seed": seed, "days": days, "markets": markets, "skip_hours": skip_hours,
        "bars": {"generated": n_bars, "warmup_skipped": int(skip),
                 "inputs_missing": int((after_warmup & ~inputs.valid).sum()), "evaluated": result.n},
        "accuracy": _rounded(result.accuracy),
        "labels": list(result.labels),
        "precision": {lab: _rounded(v) for lab, v in result.precision.items()},
        "recall": {lab: _rounded(v) for lab, v in result.recall.items()},
        "support": result.support,
        "predicted": {lab: int((predicted == lab).sum()) for lab in result.labels},
        "lowest_recall": {"label": worst, "recall": _rounded(recalls[worst])} if worst else None,
        "confusion": result.confusion,
        "confusion_axes": CONFUSION_AXES,
        "thresholds": th.to_json(),
        "features": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "duration_seconds": {"simulate": round(simulated - started, 3), "classify": round(classified - simulated, 3),
                             "score": round(finished - classified, 3), "total": round(finished - started, 3)},
    }


def _leader_symbol(symbols: tuple[str, ...], leader: str | None) -> str:
    if leader:
        if leader not in symbols:
            raise CommandError(f"--leader {leader!r} is not among the files' markets: {', '.join(symbols)}")
        return leader
    for s in symbols:
        parts = s.replace("/", "-").split(":")[0].split("-")
        base = parts[1] if len(parts) > 1 and parts[0].upper() == "KRW" else parts[0]   # Upbit: KRW-BTC
        if base.upper() in ("BTC", "XBT"):
            return s
    return symbols[0]


def real_targets(labels: dict[str, dict[str, Any]], min_bars: int = 30) -> dict[str, Any]:
    """The issue-14 targets on one real data set. A comparison needs ``min_bars`` labelled bars
    with a complete forward window on both sides; otherwise it is None (nothing to compare)."""
    def med(label: str, metric: str) -> float | None:
        row = labels[label]
        return row[f"{metric}_median"] if row["forward_bars"] >= min_bars else None

    p_dd, r_dd = med("PANIC", "drawdown"), med("RANGE", "drawdown")
    t_eff, r_eff = med("TREND", "efficiency"), med("RANGE", "efficiency")
    return {
        "panic_share": labels["PANIC"]["share"], "chop_share": labels["CHOP"]["share"],
        "panic_range_drawdown_ratio": (p_dd / r_dd) if p_dd is not None and r_dd else None,
        "trend_minus_range_efficiency": (t_eff - r_eff) if t_eff is not None and r_eff is not None else None,
        "min_bars": min_bars,
    }


def evaluate_on_candles(candles, leader: str | None = None, skip_hours: float = 24.0, horizon_minutes: int = 240,
                        thresholds: RegimeThresholds | None = None, features: FeatureConfig | None = None,
                        ) -> dict[str, Any]:
    """Label every bar of ``candles`` (any timeframe of whole minutes) and report what follows
    each label; the command's JSON report for ``--data``."""
    from execution.engine.types import TIMEFRAME_SECONDS, Candles
    from strategies.engine.learning.evaluator import bar_feature_config

    th = thresholds or RegimeThresholds()
    minutes = max(1, TIMEFRAME_SECONDS[candles.timeframe] // 60)
    cfg = features or bar_feature_config(minutes)
    lead = _leader_symbol(candles.symbols, leader)
    as_1m = candles if candles.timeframe == "1m" else Candles(candles.symbols, "1m", candles.ts, candles.open,
                                                             candles.high, candles.low, candles.close, candles.volume)
    started = time.perf_counter()
    inputs = compute_input_series(as_1m, leader=lead, config=cfg)
    series = classify_series(inputs, th)
    horizon = max(2, int(round(horizon_minutes / minutes)))
    bars, _ = filled_bars(candles)
    fwd = forward_metrics(bars.close, horizon, bar_minutes=minutes)
    n = candles.n_bars
    skip = int(round(skip_hours * 60 / minutes))
    after = np.arange(n) >= skip
    mask = after & inputs.valid
    labels = label_outcomes(series.labels, fwd, mask)
    complete = np.isfinite(fwd.drawdown)
    for name, row in labels.items():
        row["forward_bars"] = int((mask & complete & (np.asarray(series.labels).astype(str) == name)).sum())
    finished = time.perf_counter()
    return {
        "symbols": list(candles.symbols), "leader": lead, "timeframe": candles.timeframe,
        "first": int(candles.ts[0]) if n else None, "last": int(candles.ts[-1]) if n else None,
        "skip_hours": skip_hours, "horizon_minutes": horizon * minutes,
        "bars": {"total": n, "warmup_skipped": int(min(skip, n)), "inputs_missing": int((after & ~inputs.valid).sum()),
                 "evaluated": int(mask.sum())},
        "metrics": {"vol": "std of bar log returns over the horizon, scaled to 1 h, %",
                    "efficiency": "|net move| / path length on 15-minute steps over the horizon",
                    "drawdown": "worst peak-to-trough fall over the horizon, %",
                    "universe": "each metric averaged over the markets, then median / mean over the label's bars"},
        "labels": labels,
        "targets": real_targets(labels),
        "thresholds": th.to_json(),
        "features": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "duration_seconds": round(finished - started, 3),
    }


class Command(BaseCommand):
    help = ("--data FILE...: label real candles and report, per label, the share of bars and what followed "
            "(volatility, efficiency, drawdown over the next hours). --seed S --days D: run the market simulator, "
            "classify every bar with the regime engine and print JSON with the "
            "accuracy, per-label precision / recall / support and the confusion matrix against the true regime.")
    requires_system_checks: list[str] = []   # pure computation: no database, no checks needed

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, help="simulator seed (the simulator truth check)")
        parser.add_argument("--days", type=int, help="days of 1-minute bars to simulate (with --seed)")
        parser.add_argument("--data", nargs="+", metavar="FILE",
                            help="real candle files, one market each, same timeframe: one universe")
        parser.add_argument("--leader", help="with --data: the leader's symbol (default: the BTC market, else the first)")
        parser.add_argument("--horizon-minutes", type=int, default=240,
                            help="with --data: the forward window of the outcome metrics (240)")
        parser.add_argument("--stored", action="store_true",
                            help="start from the thresholds stored in the database (the version in force)")
        parser.add_argument("--markets", type=int, default=30, help="markets in the simulated universe (30)")
        parser.add_argument("--skip-hours", type=float, default=24.0,
                            help="warm-up hours at the start that are not scored (24)")
        parser.add_argument("--thresholds", help="JSON object overriding RegimeThresholds fields, "
                                                 "e.g. '{\"trend_adx\": [22, 35], \"min_membership\": 0.2}'")
        parser.add_argument("--features", help="JSON object overriding FeatureConfig fields, e.g. '{\"leader_tf\": 5}'")
        parser.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")

    def handle(self, *args, **options):
        base = RegimeThresholds()
        if options["stored"]:
            from regime.thresholds import current_thresholds

            base = current_thresholds()
        th = _overrides(options["thresholds"], base, "thresholds")
        if options["data"]:
            if options["seed"] is not None:
                raise CommandError("give either --seed (simulator) or --data (real files), not both")
            if options["skip_hours"] < 0:
                raise CommandError("--skip-hours must not be negative")
            if options["horizon_minutes"] < 2:
                raise CommandError("--horizon-minutes must be at least 2")
            from execution.adapters.replay import load_candle_files
            from execution.engine.types import MarketDataError

            try:
                data = load_candle_files(options["data"])
            except (MarketDataError, OSError, ValueError) as exc:
                raise CommandError(f"cannot load --data: {exc}") from None
            feats = _overrides(options["features"], FeatureConfig(), "features") if options["features"] else None
            report = evaluate_on_candles(data.candles, leader=options["leader"], skip_hours=options["skip_hours"],
                                         horizon_minutes=options["horizon_minutes"], thresholds=th, features=feats)
            report["files"] = [str(p) for p in options["data"]]
            self.stdout.write(json.dumps(report, indent=options["indent"] or None))
            return
        if options["seed"] is None or options["days"] is None:
            raise CommandError("give --seed S --days D (simulator) or --data FILE... (real candles)")
        if options["days"] < 1:
            raise CommandError("--days must be at least 1")
        if options["markets"] < 2:
            raise CommandError("--markets must be at least 2 (breadth and dispersion need a cross-section)")
        if options["skip_hours"] < 0:
            raise CommandError("--skip-hours must not be negative")
        report = evaluate_on_sim(
            seed=options["seed"], days=options["days"], markets=options["markets"], skip_hours=options["skip_hours"],
            thresholds=th,
            features=_overrides(options["features"], FeatureConfig(), "features"),
        )
        self.stdout.write(json.dumps(report, indent=options["indent"] or None))
