"""Benchmark a tuning run [AI-3]: K optuna TPE trials over M markets x D days of bars.

    python bench/tune.py [--trials 60] [--markets 20] [--days 90] [--timeframe 1h] [--seed 0]
                         [--sim-seed 7]                                  # the embedded simulator
    python bench/tune.py --real [--bar 1h] [--markets 20] [--days 90]    # shared real data
    python bench/tune.py --data FILE... [--bar 15m] [--markets N] [--days D]

Data: the embedded simulator (seeded, ``--sim-seed``) at ``--timeframe``; or candle files
(``--data``, one market per file, one timeframe; 1m or 5m real files are resampled to ``--bar``,
by default the finest bar whose markets x bars fit the runtime budget (``realdata.auto_bar``),
and cropped to the ``--markets`` most traded markets and the last ``--days`` days by
``strategies.engine.learning.realdata.load_real``); ``--real`` takes the default real universe
(``realdata.REAL_DEFAULT``: ``binance_selskas_2021``, 22 USDT markets x 133 days of 5-minute
bars, under ``--data-root``, default ``../shared/data``). Runs exactly what a tuning run's
worker runs (``strategies.engine.learning``: the evaluator's panel, TPE over the walk-forward
windows with every trial scored by a full-tick backtest (``tick_evaluator.TickEvaluator``:
guard, position manager, checklist, sizing, fill model), the hold-out gate with DSR and PBO,
the hold-out random-entry baseline), without the database. Prints JSON: wall time split into
the panel (once per data set) and the trials, trials per minute, how many of the K candidates
PASS, HOLD or REJECT and why (the deciding rule per decision, and every failing rule), the
hold-out trade counts against the gate's N_MIN, the PBO and the best trial. Target: under 5
minutes for the simulator defaults on the development machine (docs/learning.md gives the
real-data figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.engine.sim import SimConfig, SimMarket  # noqa: E402
from strategies.engine.learning.evaluator import build_panel  # noqa: E402
from strategies.engine.learning.realdata import REAL_DEFAULT, load_real, real_files  # noqa: E402
from strategies.engine.learning.tick_evaluator import TickEvaluator  # noqa: E402
from strategies.engine.learning.tuning import TuningConfig, tune  # noqa: E402

TIMEFRAMES = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--markets", type=int, default=None, help="default 20 (simulator, --real); files: all")
    ap.add_argument("--days", type=float, default=None, help="default 90 (simulator, --real); files: all")
    ap.add_argument("--timeframe", choices=sorted(TIMEFRAMES), default="1h")
    ap.add_argument("--seed", type=int, default=0, help="TPE seed")
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument("--data", nargs="*", default=[], help="candle files instead of the simulator")
    ap.add_argument("--real", action="store_true",
                    help=f"the default real universe ({REAL_DEFAULT[0]}, {REAL_DEFAULT[1]} files) under --data-root")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--bar", choices=sorted(TIMEFRAMES), default=None,
                    help="resample candle files to this bar (default: the finest bar within the K = 60 "
                         "runtime budget, realdata.auto_bar: 1h for --real)")
    args = ap.parse_args()

    started = time.perf_counter()
    files = [str(p) for p in real_files(args.data_root)] if args.real else list(args.data)
    if files:
        bar = args.bar or "auto"
        markets_opt = args.markets if args.markets is not None else (20 if args.real else None)
        days_opt = args.days if args.days is not None else (90.0 if args.real else None)
        candles, markets, source = load_real(files, timeframe=bar, days=days_opt, markets=markets_opt)
        source = {k: v for k, v in source.items() if k not in ("files", "quality")} | {"files": len(files)}
    else:
        seconds = TIMEFRAMES[args.timeframe]
        sim = SimMarket(SimConfig(seed=args.sim_seed, n_markets=args.markets or 20, bar_seconds=seconds))
        candles = sim.generate(int(round((args.days or 90.0) * 86400 / seconds))).candles
        markets = {m.symbol: m for m in sim.market_info()}
        source = {"sim_seed": args.sim_seed}
    data_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    panel = build_panel(candles, markets)
    panel_seconds = time.perf_counter() - t0
    evaluator = TickEvaluator(panel, candles, markets)
    result = tune(evaluator, evaluator.span(), candles.n_markets, TuningConfig(n_trials=args.trials, seed=args.seed))
    total = time.perf_counter() - started
    summary = result.summary()
    best = next(t for t in result.trials if t.number == result.best) if result.best is not None else None
    print(json.dumps({
        "benchmark": "tune",
        "trials": len(result.trials),
        "markets": candles.n_markets,
        "bars": candles.n_bars,
        "timeframe": candles.timeframe,
        "days": round(candles.n_bars * (candles.ts[1] - candles.ts[0]) / 86400, 2) if candles.n_bars > 1 else 0,
        "source": source,
        "wall_seconds": round(total, 2),
        "data_seconds": round(data_seconds, 2),
        "panel_seconds": round(panel_seconds, 2),
        "trial_seconds": round(result.seconds, 2),
        "trials_per_minute": round(len(result.trials) / total * 60, 2),
        "trials_per_minute_excluding_panel": summary["trials_per_minute"],
        "target_seconds": 300,
        "within_target": total < 300,
        "decisions": summary["decisions"],
        "decisive_rules": summary["decisive_rules"],
        "failing_rules": summary["failing_rules"],
        "gate_n_min": result.gate_min,
        "oos_trades": summary["oos_trades"],
        "holdout_days": round(result.plan.holdout.days, 2),
        "baseline_percentile_oos": _quartiles([t.baseline.get("percentile") for t in result.trials if t.baseline]),
        "excess_total_oos": _quartiles([t.baseline.get("excess_total") for t in result.trials if t.baseline]),
        "pbo": (summary["pbo"] or {}).get("pbo"),
        "best_trial": {"number": best.number, "objective": round(best.objective, 4),
                       "decision": best.gate.decision.value, "rule": best.gate.rule,
                       "oos_trades": best.holdout.n_trades,
                       "baseline_percentile": (best.baseline or {}).get("percentile"),
                       "excess_total": (best.baseline or {}).get("excess_total")} if best else None,
        "oos_trades_max": max((t.holdout.n_trades for t in result.trials), default=0),
        "evaluator": "strategies.engine.learning.tick_evaluator.TickEvaluator (full tick per trial)",
        "folds": len(result.plan.folds),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }, indent=2))


def _quartiles(values: list) -> dict | None:
    """min / quartiles / max of the finite values (None when there are none)."""
    import math

    v = sorted(float(x) for x in values if isinstance(x, int | float) and math.isfinite(x))
    if not v:
        return None

    def q(p: float) -> float:
        return round(v[min(len(v) - 1, int(round(p * (len(v) - 1))))], 5)

    return {"n": len(v), "min": q(0), "q25": q(0.25), "median": q(0.5), "q75": q(0.75), "max": q(1)}


if __name__ == "__main__":
    main()
