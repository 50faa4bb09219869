"""``manage.py regime_eval``: classify every simulated minute and score it against the
simulator's true regime [RG-2] (issue 4 item 3).

    python manage.py regime_eval --seed 1 --days 7 [--markets 30] [--skip-hours 24]
                                 [--thresholds '{"trend_adx": [22, 35]}'] [--features '{"leader_tf": 5}']

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
from regime.engine.features import FeatureConfig, compute_input_series

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
    return replace(base, **values)


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
        "thresholds": {k: list(v) if isinstance(v, tuple) else v for k, v in th.as_dict().items()},
        "features": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "duration_seconds": {"simulate": round(simulated - started, 3), "classify": round(classified - simulated, 3),
                             "score": round(finished - classified, 3), "total": round(finished - started, 3)},
    }


class Command(BaseCommand):
    help = ("Run the market simulator, classify every bar with the regime engine and print JSON with the "
            "accuracy, per-label precision / recall / support and the confusion matrix against the true regime.")
    requires_system_checks: list[str] = []   # pure computation: no database, no checks needed

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, required=True, help="simulator seed")
        parser.add_argument("--days", type=int, required=True, help="days of 1-minute bars to simulate")
        parser.add_argument("--markets", type=int, default=30, help="markets in the simulated universe (30)")
        parser.add_argument("--skip-hours", type=float, default=24.0,
                            help="warm-up hours at the start that are not scored (24)")
        parser.add_argument("--thresholds", help="JSON object overriding RegimeThresholds fields, "
                                                 "e.g. '{\"trend_adx\": [22, 35], \"min_membership\": 0.2}'")
        parser.add_argument("--features", help="JSON object overriding FeatureConfig fields, e.g. '{\"leader_tf\": 5}'")
        parser.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")

    def handle(self, *args, **options):
        if options["days"] < 1:
            raise CommandError("--days must be at least 1")
        if options["markets"] < 2:
            raise CommandError("--markets must be at least 2 (breadth and dispersion need a cross-section)")
        if options["skip_hours"] < 0:
            raise CommandError("--skip-hours must not be negative")
        report = evaluate_on_sim(
            seed=options["seed"], days=options["days"], markets=options["markets"], skip_hours=options["skip_hours"],
            thresholds=_overrides(options["thresholds"], RegimeThresholds(), "thresholds"),
            features=_overrides(options["features"], FeatureConfig(), "features"),
        )
        self.stdout.write(json.dumps(report, indent=options["indent"] or None))
