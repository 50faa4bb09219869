"""Benchmark a tuning run [AI-3]: K optuna TPE trials over M markets x D days of bars.

    python bench/tune.py [--trials 60] [--markets 20] [--days 90] [--timeframe 1h] [--seed 0]
                         [--sim-seed 7] [--data FILE...]

Data: the embedded simulator (seeded, ``--sim-seed``) at the given timeframe, or candle files
(``--data``, one market per file, one timeframe). Runs exactly what a tuning run's worker runs
(``strategies.engine.learning``: the evaluator's panel, TPE over the walk-forward windows with
every trial scored by a full-tick backtest (``tick_evaluator.TickEvaluator``: guard, position
manager, checklist, sizing, fill model), the hold-out gate with DSR and PBO), without the
database. Prints JSON: wall time split into the
panel (once per data set) and the trials, trials per minute, the gate's decisions, the PBO and
the best trial. Target: under 5 minutes for the defaults on the development machine.
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
from strategies.engine.learning.tick_evaluator import TickEvaluator  # noqa: E402
from strategies.engine.learning.tuning import TuningConfig, tune  # noqa: E402

TIMEFRAMES = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--markets", type=int, default=20)
    ap.add_argument("--days", type=float, default=90.0)
    ap.add_argument("--timeframe", choices=sorted(TIMEFRAMES), default="1h")
    ap.add_argument("--seed", type=int, default=0, help="TPE seed")
    ap.add_argument("--sim-seed", type=int, default=7)
    ap.add_argument("--data", nargs="*", default=[], help="candle files instead of the simulator")
    args = ap.parse_args()

    started = time.perf_counter()
    if args.data:
        from execution.adapters.replay import default_market_info, load_candle_files

        candles = load_candle_files(args.data).candles
        markets = {s: default_market_info(s, candles) for s in candles.symbols}
        source = {"files": args.data}
    else:
        seconds = TIMEFRAMES[args.timeframe]
        sim = SimMarket(SimConfig(seed=args.sim_seed, n_markets=args.markets, bar_seconds=seconds))
        candles = sim.generate(int(round(args.days * 86400 / seconds))).candles
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
        "pbo": (summary["pbo"] or {}).get("pbo"),
        "best_trial": {"number": best.number, "objective": round(best.objective, 4),
                       "decision": best.gate.decision.value, "rule": best.gate.rule,
                       "oos_trades": best.holdout.n_trades} if best else None,
        "oos_trades_max": max((t.holdout.n_trades for t in result.trials), default=0),
        "evaluator": "strategies.engine.learning.tick_evaluator.TickEvaluator (full tick per trial)",
        "folds": len(result.plan.folds),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }, indent=2))


if __name__ == "__main__":
    main()
