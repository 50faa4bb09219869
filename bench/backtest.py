"""Backtest benchmarks [BT-5]/issue 8 item 6; prints JSON.

    .venv/bin/python bench/backtest.py [--bars 525600] [--fast 10] [--slow 30] [--repeats 7]
                                       [--bt-repeats 1] [--part reference]

Part (a), ``reference``: the reference SMA crossover (``strategies.engine.backtest.reference``)
on one year of one-minute bars of ONE simulated market (``SimMarket``, seed 7: 525,600 bars),
timed in the same run, on the same arrays, against backtesting.py and vectorbt configured the
same way (docs/backtesting.md; the same configuration as tests/strategies/
test_backtest_reference.py). Each engine goes from in-memory prices to the equity curve and the
trade list:

* ours: ``sma_cross`` (SMAs, signals, fills, equity curve, trade columns);
* vectorbt: ``MA.run`` x2, ``ma_crossed_above/below``, ``Portfolio.from_signals``, ``value()``,
  ``trades.records``; "cold" is the first call in the process (numba compilation or loading
  numba's on-disk cache), "warm" the later calls;
* backtesting.py: ``FractionalBacktest(...)`` + ``run()`` (its run also computes its stats).

Building the pandas inputs of the libraries is outside the timers. Warm timings are the best
(minimum) of ``--repeats`` runs, the least noisy estimate on a shared machine; medians are
printed too. Targets: >= 10x backtesting.py, within 2x of vectorbt warm
(``ours_seconds <= 2 * vectorbt_warm_seconds``).

Part (b), ``pipeline``: the full pipeline backtest (``strategies.engine.backtest.pipeline``,
the live tick core on every bar) on ``--pipeline-markets`` (100) simulated markets x
``--pipeline-days`` (30) days of one-minute bars with the STANDARD profile, after the warm-up
the first tick needs (1,484 bars). Reports the backtest's wall time (the simulator's generation
apart), bars (clock ticks) and market-bars per second, peak resident memory of this process and
of the precompute workers (``--pipeline-workers``), the CPU time of this process and the
machine's load average around the run (the machine is shared: wall time alone overstates the
cost when other work runs), and the result (trades, final equity). Target: under 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.engine.sim import SimConfig, SimMarket  # noqa: E402
from strategies import crosscheck  # noqa: E402
from strategies.engine.backtest.reference import sma_cross  # noqa: E402
from strategies.engine.backtest.report import compute_report  # noqa: E402

FEE = 0.0005
CASH = 10_000_000.0


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _speed(bars: int, times: list[float]) -> dict[str, float]:
    best = min(times)
    return {"seconds": round(best, 5), "median_seconds": round(statistics.median(times), 5),
            "runs": len(times), "bars_per_second": round(bars / best, 1)}


def bench_reference(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    hist = SimMarket(SimConfig(seed=7, n_markets=1)).generate(args.bars)
    gen_seconds = time.perf_counter() - t0
    cd = hist.candles
    ts, o, h, lo, c, v = cd.ts, cd.open[0], cd.high[0], cd.low[0], cd.close[0], cd.volume[0]
    bars = len(ts)
    out: dict[str, Any] = {"bars": bars, "timeframe": cd.timeframe, "fast": args.fast, "slow": args.slow,
                           "fee": FEE, "cash": CASH, "sim_generate_seconds": round(gen_seconds, 3)}

    def ours() -> Any:
        return sma_cross(o, c, args.fast, args.slow, FEE, CASH, ts=ts)

    cold, result = _timed(ours, 1)
    warm, result = _timed(ours, args.repeats)
    out["ours"] = {"cold_seconds": round(cold[0], 5), **_speed(bars, warm),
                   "trades": len(result.trades), "final_equity": result.final_equity}
    t0 = time.perf_counter()
    compute_report(result.equity, ts, result.trades, initial_equity=CASH, position_value=result.position_value,
                   traded_value=result.traded_value)
    out["ours"]["report_seconds"] = round(time.perf_counter() - t0, 5)

    try:
        vbt_run = crosscheck.vectorbt_runner(ts, o, c, args.fast, args.slow, FEE, CASH)

        def run_vbt() -> tuple[int, float]:
            r = vbt_run()
            return r.trades, r.final_equity
    except ImportError as exc:
        out["vectorbt"] = {"error": f"not installed: {exc}"}
    else:
        import vectorbt

        cold, _ = _timed(run_vbt, 1)
        warm, (n, final) = _timed(run_vbt, args.repeats)
        out["vectorbt"] = {"version": vectorbt.__version__, "cold_seconds": round(cold[0], 4),
                           **_speed(bars, warm), "trades": n, "final_equity": final}

    try:
        bt_run = crosscheck.backtesting_py_runner(ts, o, h, lo, c, v, args.fast, args.slow, FEE, CASH)

        def run_bt() -> tuple[int, float]:
            r = bt_run()
            return r.trades, r.final_equity
    except ImportError as exc:
        out["backtesting_py"] = {"error": f"not installed: {exc}"}
    else:
        import backtesting

        times, (n, final) = _timed(run_bt, args.bt_repeats)
        out["backtesting_py"] = {"version": backtesting.__version__, **_speed(bars, times), "trades": n,
                                 "final_equity": final}

    ours_s = out["ours"]["seconds"]
    ratios: dict[str, Any] = {}
    for name in ("backtesting_py", "vectorbt"):
        ref = out[name]
        if "seconds" not in ref:
            continue
        ratios[f"speedup_vs_{name}"] = round(ref["seconds"] / ours_s, 2)
        ratios[f"same_trades_as_{name}"] = ref["trades"] == out["ours"]["trades"]
        ratios[f"final_equity_rel_diff_vs_{name}"] = float(f"{out['ours']['final_equity'] / ref['final_equity'] - 1:.3g}")
    if "speedup_vs_backtesting_py" in ratios:
        ratios["target_10x_backtesting_py"] = ratios["speedup_vs_backtesting_py"] >= 10
    if "speedup_vs_vectorbt" in ratios:
        ratios["target_within_2x_vectorbt_warm"] = ratios["speedup_vs_vectorbt"] >= 0.5
    out["ratios"] = ratios
    return out


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux >= 4.0), so the peak measured after it is
    the run's own and not the simulator's generation."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from risk.engine.profiles import STANDARD
    from strategies.engine.backtest.pipeline import BacktestConfig, MarketData, run_backtest

    warmup = 1484
    bars = int(round(args.pipeline_days * 1440))
    t0 = time.perf_counter()
    sim = SimMarket(SimConfig(seed=7, n_markets=args.pipeline_markets))
    hist = sim.generate(warmup + bars)
    data = MarketData(hist.candles, {m.symbol: m for m in sim.market_info()})
    gen_seconds = time.perf_counter() - t0
    peak_generation = _peak_rss_mb()
    reset = _reset_peak_rss()
    load_before = os.getloadavg()
    config = BacktestConfig(profile=STANDARD, start_index=warmup, mode=args.pipeline_mode,
                            workers=args.pipeline_workers)
    cpu0 = time.process_time()
    result = run_backtest(data, config)
    cpu_seconds = time.process_time() - cpu0
    seconds = result.seconds
    market_bars = result.bars * len(result.markets)
    return {
        "markets": len(result.markets), "days": bars / 1440, "bars": result.bars, "market_bars": market_bars,
        "warmup_bars": warmup, "mode": config.mode, "workers": config.workers, "window_bars": config.window_bars,
        "profile": config.profile.name, "sim_generate_seconds": round(gen_seconds, 3),
        "seconds": round(seconds, 2), "cpu_seconds_main_process": round(cpu_seconds, 2),
        "bars_per_second": round(result.bars / seconds, 1),
        "bars_per_cpu_second": round(result.bars / cpu_seconds, 1) if cpu_seconds > 0 else None,
        "market_bars_per_second": round(market_bars / seconds, 1),
        "ms_per_bar": round(seconds / result.bars * 1000, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_mb_is_the_runs_own": reset,
        "peak_rss_mb_with_sim_generation": round(peak_generation, 1),
        "peak_rss_mb_workers": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "trades": len(result.trades), "fills": result.fills, "final_equity": float(result.final_equity),
        "target_under_60s": seconds < 60,
    }


PARTS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "reference": bench_reference,
    "pipeline": bench_pipeline,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="*", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--bars", type=int, default=525_600, help="one-minute bars (default: one year)")
    parser.add_argument("--fast", type=int, default=10)
    parser.add_argument("--slow", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7, help="warm runs of ours and vectorbt (best is reported)")
    parser.add_argument("--bt-repeats", type=int, default=1, help="runs of backtesting.py")
    parser.add_argument("--pipeline-markets", type=int, default=100, help="part (b): simulated markets")
    parser.add_argument("--pipeline-days", type=float, default=30.0, help="part (b): days of 1-minute bars")
    parser.add_argument("--pipeline-mode", choices=["vector", "bar"], default="vector")
    parser.add_argument("--pipeline-workers", type=int, default=1,
                        help="part (b): processes precomputing the scans ahead of the event loop")
    args = parser.parse_args()
    result: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                              "numpy": np.__version__, "pandas": pd.__version__}
    for part in args.part:
        result[part] = PARTS[part](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
