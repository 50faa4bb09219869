"""Benchmark of the Monte Carlo evaluator [RK-6]: simulated paths per second.

    .venv/bin/python bench/mc.py --paths 10000 --horizon 240 --candidates 50

Synthetic fat-tailed 1m returns (seeded) for each candidate; prints one JSON object with the
wall time, paths/s and path-steps/s for each method.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from risk.engine.montecarlo import MCMethod, evaluate_candidates  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--horizon", type=int, default=240)
    ap.add_argument("--candidates", type=int, default=50)
    ap.add_argument("--history", type=int, default=2_000, help="bars of returns per candidate")
    ap.add_argument("--seed", type=int, default=20250312)
    ap.add_argument("--methods", default="block_bootstrap,student_t")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    returns = 0.0001 + 0.002 * rng.standard_t(5.0, size=(args.candidates, args.history))
    result: dict[str, object] = {
        "benchmark": "risk.engine.montecarlo", "paths": args.paths, "horizon": args.horizon,
        "candidates": args.candidates, "numpy": np.__version__, "python": platform.python_version(),
        "methods": {},
    }
    for name in args.methods.split(","):
        method = MCMethod(name)
        t0 = time.perf_counter()
        reports = evaluate_candidates(returns, np.random.default_rng(args.seed), n_paths=args.paths,
                                      horizon=args.horizon, method=method, stop_loss=0.03)
        seconds = time.perf_counter() - t0
        total_paths = args.paths * args.candidates
        result["methods"][name] = {  # type: ignore[index]
            "seconds": round(seconds, 3),
            "paths_per_second": round(total_paths / seconds),
            "path_steps_per_second": round(total_paths * args.horizon / seconds),
            "seconds_per_candidate": round(seconds / args.candidates, 4),
            "candidates_with_edge": sum(1 for r in reports if r.t_star_bars > 0),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
