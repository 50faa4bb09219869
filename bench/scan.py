"""Benchmark one full scan [SC-5]: features, regime, every score module, aggregation.

    python bench/scan.py --markets 500 --bars 1000 [--repeat 15] [--no-scaling]

Input is synthetic: correlated geometric random walks (a leader plus markets with a beta to
it and their own noise), log-normal volumes, a top-of-book history for 50 markets, tickers for
all. The leader also gets ``FeatureConfig.leader_bars_needed`` bars of history. Prints JSON
with the median / p90 milliseconds and a scaling table over markets and bars, including
ns per market-bar (flat = linear cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.engine.types import Candles, OrderBook, Ticker  # noqa: E402
from strategies.engine.pipeline import ScanParams, scan  # noqa: E402


def synthetic(n_markets: int, n_bars: int, seed: int = 0, leader_bars: int = 0) -> dict[str, object]:
    """Random-walk market: returns candles, leader history, books and tickers."""
    rng = np.random.default_rng(seed)
    total = max(n_bars, leader_bars)
    lead = np.cumsum(rng.normal(0, 0.001, total))
    beta = rng.uniform(0.6, 1.4, (n_markets, 1))
    r = beta * np.diff(np.r_[0.0, lead])[None, -n_bars:] + rng.normal(0, 0.0015, (n_markets, n_bars))
    r[0] = np.diff(np.r_[0.0, lead])[-n_bars:]
    close = 100.0 * np.exp(np.cumsum(r, axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    wig = np.abs(rng.normal(0, 0.0007, (2, n_markets, n_bars)))
    high = np.maximum(open_, close) * (1 + wig[0])
    low = np.minimum(open_, close) * (1 - wig[1])
    volume = rng.lognormal(3, 1, (n_markets, n_bars))
    ts = (1_767_225_600 + 60 * np.arange(total, dtype=np.int64))
    symbols = tuple(f"M{i:04d}" for i in range(n_markets))
    candles = Candles(symbols, "1m", ts[-n_bars:], open_, high, low, close, volume)
    lc = 100.0 * np.exp(lead)
    lo = np.r_[lc[0], lc[:-1]]
    leader_hist = Candles((symbols[0],), "1m", ts, lo[None], np.maximum(lo, lc)[None] * 1.0005,
                          np.minimum(lo, lc)[None] * 0.9995, lc[None], rng.lognormal(3, 1, (1, total)))
    # patch the leader row to equal its history's tail
    candles = Candles(symbols, "1m", ts[-n_bars:], *(np.vstack([getattr(leader_hist, k)[:, -n_bars:],
                                                               a[1:]]) for k, a in
                                                     (("open", open_), ("high", high), ("low", low),
                                                      ("close", close), ("volume", volume))))
    books: dict[str, list[OrderBook]] = {}
    for i in range(min(50, n_markets)):
        px = close[i, -1]
        snaps = []
        for j in range(10):
            q = rng.uniform(1, 10, 4)
            snaps.append(OrderBook(symbols[i], int(ts[-1]) - 10 + j,
                                   np.array([[px * 0.9995, q[0]], [px * 0.999, q[1]]]),
                                   np.array([[px * 1.0005, q[2]], [px * 1.001, q[3]]])))
        books[symbols[i]] = snaps
    tickers = {s: Ticker(s, int(ts[-1]), float(close[i, -1]), float(close[i, -1]) * 0.9995,
                         float(close[i, -1]) * 1.0005, float(rng.lognormal(20, 1)), 0.0)
               for i, s in enumerate(symbols)}
    return {"candles": candles, "leader_history": leader_hist, "books": books, "tickers": tickers}


def time_scan(n_markets: int, n_bars: int, repeat: int) -> dict[str, float]:
    params = ScanParams(min_bars=min(300, n_bars))
    data = synthetic(n_markets, n_bars, leader_bars=params.features.leader_bars_needed)
    run = lambda: scan(data["candles"], books=data["books"], tickers=data["tickers"], params=params,  # noqa: E731
                       leader_history=data["leader_history"])
    run()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    med = statistics.median(times)
    return {"markets": n_markets, "bars": n_bars, "median_ms": round(med, 2),
            "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 2),
            "ns_per_market_bar": round(med * 1e6 / (n_markets * n_bars), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--markets", type=int, default=500)
    ap.add_argument("--bars", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--no-scaling", action="store_true")
    a = ap.parse_args()
    main_run = time_scan(a.markets, a.bars, a.repeat)
    out: dict[str, object] = {
        "benchmark": "strategies.engine.pipeline.scan",
        "input": "synthetic correlated random walks (bench/scan.py:synthetic), books for 50 markets",
        "python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
        **main_run, "target_ms": 100, "meets_target": main_run["median_ms"] < 100,
    }
    if not a.no_scaling:
        rows = [time_scan(m, a.bars, max(5, a.repeat // 2)) for m in (50, 500, 2000)]
        rows += [time_scan(a.markets, b, max(5, a.repeat // 2)) for b in (500, 2000)]
        out["scaling"] = rows
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
