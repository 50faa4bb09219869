"""Parameter tuning with optuna TPE [AI-3], scored by walk-forward windows, gated out of sample.

Layout of the data (``plan_windows``): the evaluable span is split into a tuning part and a
hold-out part (the last ``holdout_fraction``, 30 %). The tuning part is cut into walk-forward
windows by ``strategies.engine.backtest.walkforward.split_windows`` (rolling: ``train_days`` of
history, then ``test_days`` scored, stepping by ``test_days``); the hold-out is never shown to
the optimizer.

Per trial:

1. TPE (``optuna.samplers.TPESampler(seed=seed)``, one process, so the same seed and data give
   the same trials) proposes parameters from ``SearchSpace``: module weights (feature weights),
   penalty weights, the entry (score) threshold, ``top_n`` and the regime policy multipliers.
2. The evaluator scores every walk-forward test window (``Evaluator.evaluate(params, window)``);
   the objective is ``mean(window Sharpe) - 0.5 * std(window Sharpe)`` with the daily Sharpe of
   each window (stable edge over time beats one lucky window); fewer than ``min_trades`` (10)
   trades over the tuning part score ``-1 + trades / min_trades`` (a graded penalty that leads
   the search toward parameters that trade at all).
3. The same parameters on the hold-out give the gate's samples (``gate.evaluate_gate``).

After the K trials: the probability of backtest overfitting (CSCV) over the ``[days x trials]``
matrix of tuning-part daily returns, and the variance of the trials' hold-out Sharpe ratios for
the deflated Sharpe ratio; then every trial is gated with both. The Django side keeps only the
PASS trials as ModelCandidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from strategies.engine.backtest.walkforward import split_windows
from strategies.engine.learning.evaluator import DAY, Evaluator, Window, WindowResult
from strategies.engine.learning.gate import (
    GateConfig,
    GateResult,
    TrialStats,
    evaluate_gate,
    json_safe,
    pbo_cscv,
    sample_metrics,
)

TUNED_MODULES: tuple[str, ...] = ("TP", "VCB", "LSR", "LF", "REGIME", "MR", "MOM")   # MICRO needs books
TUNED_REGIMES: tuple[str, ...] = ("TREND", "RANGE", "BREAKOUT_ROTATION")              # CHOP/PANIC: no entries


@dataclass(frozen=True, slots=True)
class SearchSpace:
    """Ranges TPE samples from (module weights are renormalised by the aggregator)."""

    weight: tuple[float, float] = (0.0, 1.0)
    entry_threshold: tuple[float, float] = (25.0, 80.0)
    top_n: tuple[int, int] = (3, 30)
    penalty: tuple[float, float] = (0.0, 0.8)
    regime_weight: tuple[float, float] = (0.6, 1.4)
    exit_ratio: float = 0.5           # exit_threshold = entry_threshold * exit_ratio (not tuned)

    def suggest(self, trial: Any, n_markets: int) -> dict[str, Any]:
        """Model params (``params`` module schema) for one optuna trial."""
        weights = {m: round(trial.suggest_float(f"w_{m}", *self.weight), 4) for m in TUNED_MODULES}
        if sum(weights.values()) <= 0:
            weights["REGIME"] = 0.01
        entry = round(trial.suggest_float("entry_threshold", *self.entry_threshold), 2)
        top_hi = max(self.top_n[0], min(self.top_n[1], n_markets))
        return {
            "module_weights": {**weights, "MICRO": 0.0},
            "entry_threshold": entry,
            "exit_threshold": round(entry * self.exit_ratio, 2),
            "top_n": trial.suggest_int("top_n", self.top_n[0], top_hi),
            "penalty_weights": {t: round(trial.suggest_float(f"penalty_{t}", *self.penalty), 4)
                                for t in ("CONFLICT", "EXTENSION")},
            "regime_weights": {r: round(trial.suggest_float(f"regime_{r}", *self.regime_weight), 4)
                               for r in TUNED_REGIMES},
        }


@dataclass(frozen=True, slots=True)
class TuningConfig:
    n_trials: int = 60
    seed: int = 0
    holdout_fraction: float = 0.3
    train_days: float = 14.0
    test_days: float = 7.0
    min_trades: int = 10
    pbo_blocks: int = 10
    gate: GateConfig = field(default_factory=GateConfig)
    space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        if not 1 <= self.n_trials <= 1000:
            raise ValueError("n_trials must be 1..1000")
        if not 0.05 <= self.holdout_fraction <= 0.8:
            raise ValueError("holdout_fraction must be in [0.05, 0.8]")
        if not (self.train_days >= 0 and self.test_days > 0):
            raise ValueError("train_days >= 0 and test_days > 0 are required")


@dataclass(frozen=True)
class Plan:
    folds: tuple[Window, ...]
    holdout: Window
    tuning: Window

    def to_dict(self) -> dict[str, Any]:
        return {"folds": [[w.start, w.end] for w in self.folds], "holdout": [self.holdout.start, self.holdout.end],
                "tuning": [self.tuning.start, self.tuning.end]}


def plan_windows(span: Window, config: TuningConfig) -> Plan:
    """Walk-forward test windows over the tuning part and the hold-out (module docstring)."""
    cut = span.start + int((span.end - span.start) * (1.0 - config.holdout_fraction))
    cut -= (cut - span.start) % 3600
    tuning = Window(span.start, cut)
    holdout = Window(cut, span.end)
    windows = split_windows(span.start, cut, train=int(config.train_days * DAY), test=int(config.test_days * DAY))
    folds = tuple(Window(w.test_start, w.test_end) for w in windows)
    return Plan(folds, holdout, tuning)


@dataclass
class TrialRecord:
    number: int
    params: dict[str, Any]
    objective: float
    folds: list[dict[str, Any]]
    holdout: WindowResult
    tuning_daily: np.ndarray          # daily returns over the tuning part's folds
    seconds: float
    gate: GateResult | None = None
    baseline: dict[str, Any] | None = None   # hold-out random-entry baseline (evaluator.baseline)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the gate's metrics included)."""
        out = {"number": self.number, "objective": self.objective if math.isfinite(self.objective) else None,
               "params": self.params, "folds": self.folds, "holdout": json_safe(self.holdout.summary()),
               "seconds": round(self.seconds, 3)}
        if self.gate is not None:
            out["gate"] = self.gate.to_dict()
        if self.baseline is not None:
            out["baseline"] = json_safe(self.baseline)
        return out


@dataclass
class TuningResult:
    trials: list[TrialRecord]
    plan: Plan
    pbo: dict[str, Any] | None
    sharpe_variance: float
    seconds: float
    best: int | None                  # trial number with the best objective
    gate_min: int = GateConfig().min_samples

    @property
    def passed(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.gate is not None and t.gate.decision.value == "PASS"]

    def summary(self) -> dict[str, Any]:
        counts = {"PASS": 0, "HOLD": 0, "REJECT": 0}
        rules: dict[str, dict[str, int]] = {"PASS": {}, "HOLD": {}, "REJECT": {}}
        failures: dict[str, int] = {}
        for t in self.trials:
            if t.gate is not None:
                d = t.gate.decision.value
                counts[d] += 1
                rules[d][t.gate.rule] = rules[d].get(t.gate.rule, 0) + 1
                for f in t.gate.failures:
                    failures[f] = failures.get(f, 0) + 1
        oos = np.array([t.holdout.n_trades for t in self.trials], dtype=float)
        return {"pbo": self.pbo, "sharpe_variance": self.sharpe_variance, "seconds": round(self.seconds, 2),
                "trials_per_minute": round(len(self.trials) / self.seconds * 60, 2) if self.seconds > 0 else None,
                "best_trial": self.best, "decisions": counts,
                # why: the deciding rule per decision, and how many trials fail each rule at all
                "decisive_rules": {k: dict(sorted(v.items())) for k, v in rules.items()},
                "failing_rules": dict(sorted(failures.items())),
                "oos_trades": ({"min": int(oos.min()), "median": float(np.median(oos)), "max": int(oos.max()),
                                "reaching_n_min": int((oos >= self.gate_min).sum())} if len(oos) else None),
                "plan": self.plan.to_dict()}


def _fold_score(result: WindowResult) -> float:
    return result.sharpe_daily if result.n_trades else 0.0


def tune(evaluator: Evaluator, span: Window, n_markets: int, config: TuningConfig | None = None,
         on_trial: Callable[[TrialRecord, int], None] | None = None, base_params: Mapping[str, Any] | None = None
         ) -> TuningResult:
    """Run the K trials and gate them (module docstring). ``on_trial(record, done)`` after each
    trial (progress); ``base_params`` are fixed model params under the tuned ones."""
    import optuna

    c = config or TuningConfig()
    plan = plan_windows(span, c)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=c.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    records: list[TrialRecord] = []
    started = time.perf_counter()

    def objective(trial: Any) -> float:
        t0 = time.perf_counter()
        params = {**(base_params or {}), **c.space.suggest(trial, n_markets)}
        results = [evaluator.evaluate(params, w) for w in plan.folds]
        scores = np.array([_fold_score(r) for r in results])
        trades = sum(r.n_trades for r in results)
        # too few trades: a graded penalty in [-1, 0) (more trades is better), so TPE is steered
        # out of the regions where nothing trades instead of facing a flat -1
        value = float(scores.mean() - 0.5 * scores.std()) if trades >= c.min_trades else -1.0 + trades / c.min_trades
        holdout = evaluator.evaluate(params, plan.holdout)
        # the backtest report's random-entry baseline on the hold-out trades (reporting only;
        # computed now while the evaluator still holds this parameter set's run)
        base = getattr(evaluator, "baseline", None)
        baseline = base(params, plan.holdout, seed=c.seed) if callable(base) else None
        record = TrialRecord(trial.number, params, value,
                             [{"start": w.start, "end": w.end, **json_safe(r.summary())}
                              for w, r in zip(plan.folds, results, strict=True)],
                             holdout, np.concatenate([r.daily_returns for r in results]),
                             time.perf_counter() - t0, baseline=baseline)
        records.append(record)
        if on_trial is not None:
            on_trial(record, len(records))
        return value

    study.optimize(objective, n_trials=c.n_trials, n_jobs=1, gc_after_trial=False)
    matrix = np.stack([r.tuning_daily for r in records], axis=1) if records else np.zeros((0, 0))
    pbo = None
    if matrix.shape[1] >= 2:
        blocks = min(c.pbo_blocks, (matrix.shape[0] // 2) - (matrix.shape[0] // 2) % 2)
        if blocks >= 2:
            pbo = pbo_cscv(matrix, n_blocks=blocks)
    sharpes = []
    for r in records:
        h = r.holdout
        if h.n_trades > 1 and np.std(h.r_net, ddof=1) > 0:
            sharpes.append(float(np.mean(h.r_net) / np.std(h.r_net, ddof=1)))
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    stats = TrialStats(n_trials=len(records), sharpe_variance=variance)
    for r in records:
        h = r.holdout
        r.gate = evaluate_gate(h.r_net, h.mae, max(h.days, 1e-9), c.gate, trials=stats,
                               pbo=pbo["pbo"] if pbo else None, baseline=r.baseline)
    best = max(records, key=lambda r: r.objective).number if records else None
    return TuningResult(records, plan, pbo, variance, time.perf_counter() - started, best, c.gate.min_samples)


def holdout_metrics(record: TrialRecord) -> dict[str, Any]:
    """The hold-out sample's gate metrics (recomputed, for display without the gate)."""
    h = record.holdout
    return json_safe(sample_metrics(h.r_net, h.mae, max(h.days, 1e-9)))


def best_passing(result: TuningResult, k: int) -> list[TrialRecord]:
    """The ``k`` PASS trials with the best objective."""
    return sorted(result.passed, key=lambda r: -r.objective)[:k]


def describe(records: Sequence[TrialRecord]) -> list[dict[str, Any]]:
    """One row per trial for the run's summary table."""
    return [{"number": r.number, "objective": r.objective if math.isfinite(r.objective) else None,
             "decision": r.gate.decision.value if r.gate else None, "rule": r.gate.rule if r.gate else None,
             "trades_oos": r.holdout.n_trades,
             "excess_oos": _finite((r.baseline or {}).get("excess_total")),
             "percentile_oos": _finite((r.baseline or {}).get("percentile"))} for r in records]


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and math.isfinite(x) else None
