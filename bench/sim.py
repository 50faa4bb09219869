"""Benchmark of the simulator and the fill model; prints JSON.

    .venv/bin/python bench/sim.py [--markets 500] [--bars 5000] [--orders 20000]

* ``sim_bars_per_second``: bars per second ``SimMarket.generate`` produces for all markets at
  once (one "bar" = one timestamp across every market); ``sim_market_bars_per_second`` counts
  market-bars. ``sim_step_bars_per_second`` is the real-time path (one ``step()`` per bar).
* ``fills_per_second``: market orders walking a 15-level book (several fills each) plus resting
  limit orders matched against bars, through ``FillModel``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from execution.engine.fillmodel import Bar, FillModel  # noqa: E402
from execution.engine.precision import round_krw_price  # noqa: E402
from execution.engine.sim import SimConfig, SimMarket  # noqa: E402
from execution.engine.types import OrderRequest, OrderType, Side  # noqa: E402


def bench_sim(markets: int, bars: int) -> dict[str, float]:
    market = SimMarket(SimConfig(seed=7, n_markets=markets))
    market.generate(10)                                   # warm caches
    t0 = time.perf_counter()
    market.generate(bars)
    block = time.perf_counter() - t0
    steps = max(50, bars // 20)
    t0 = time.perf_counter()
    for _ in range(steps):
        market.step()
    stepped = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(markets):
        market.order_book(i)
    books = time.perf_counter() - t0
    return {"sim_markets": markets, "sim_bars": bars, "sim_seconds": round(block, 4),
            "sim_bars_per_second": round(bars / block, 1),
            "sim_market_bars_per_second": round(bars * markets / block, 1),
            "sim_step_bars_per_second": round(steps / stepped, 1),
            "order_books_per_second": round(markets / books, 1)}


def bench_fills(orders: int) -> dict[str, float]:
    market = SimMarket(SimConfig(seed=7, n_markets=30))
    hist = market.generate(200)
    infos = market.market_info()
    books = [market.order_book(i) for i in range(market.n_markets)]
    model = FillModel()
    n_fills = 0
    t0 = time.perf_counter()
    for k in range(orders):
        i = k % market.n_markets
        book, info = books[i], infos[i]
        mid = Decimal(repr(book.mid))
        if k % 2 == 0:       # market buy sweeping a few levels
            value = Decimal(repr(float(book.asks[:4, 0] @ book.asks[:4, 1])))
            req = OrderRequest(f"m{k}", info.symbol, Side.BUY, OrderType.MARKET, quote_amount=value.quantize(Decimal(1)))
            n_fills += len(model.submit(req, book, book.ts, info).fills)
        else:                # resting limit buy, filled by a bar that trades through it
            price = round_krw_price(mid * Decimal("0.995"), Side.BUY, book.ts)
            qty = (Decimal(20000) / price).quantize(Decimal("1e-8"))
            state = model.submit(OrderRequest(f"l{k}", info.symbol, Side.BUY, OrderType.LIMIT, qty=qty, price=price),
                                 book, book.ts, info)
            p = float(price)
            bar = Bar(book.ts, 60, p * 1.004, p * 1.005, p * 0.99, p * 1.001, 1e9 / p)
            n_fills += len(model.on_bar(state, bar, None, info))
    elapsed = time.perf_counter() - t0
    assert hist.candles.n_bars == 200
    return {"fill_orders": orders, "fills": n_fills, "fill_seconds": round(elapsed, 4),
            "orders_per_second": round(orders / elapsed, 1), "fills_per_second": round(n_fills / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=500)
    parser.add_argument("--bars", type=int, default=5000)
    parser.add_argument("--orders", type=int, default=20000)
    args = parser.parse_args()
    result = {"python": platform.python_version(), **bench_sim(args.markets, args.bars), **bench_fills(args.orders)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
