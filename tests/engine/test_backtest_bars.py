"""``strategies.engine.backtest.bars``: the stacked module outputs equal ``build_panel``'s, and
the coarse run's tick cadence (no Django)."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from execution.adapters.replay import default_market_info, load_candle_files
from execution.engine.types import Candles
from risk.engine.profiles import profile_for
from strategies.engine.backtest.bars import bar_panel, run_bar_backtest
from strategies.engine.backtest.pipeline import BacktestConfig, MarketData
from strategies.engine.learning.evaluator import EvaluatorConfig, build_panel
from tests.conftest import require_shared_data
from traders.engine.tick import scan_params


def real(tf: str, a: int, b: int) -> Candles:
    root = require_shared_data("binance_andresciancio_2023")
    c = load_candle_files([root / f"binance_{x}-USDT_{tf}.csv.gz" for x in ("BTC", "ETH", "SOL", "DOGE")]).candles
    s = slice(a, b)
    return Candles(c.symbols, c.timeframe, c.ts[s], c.open[:, s], c.high[:, s], c.low[:, s], c.close[:, s],
                   c.volume[:, s])


def same(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "f" or y.dtype.kind == "f":
        return x.shape == y.shape and bool(np.all((x == y) | (np.isnan(x) & np.isnan(y))))
    return x.shape == y.shape and bool(np.all(x == y))


@pytest.mark.parametrize(("tf", "a", "b"), [("5m", 4000, 4300), ("1h", 300, 560)])
def test_stacked_module_outputs_equal_build_panel(tf, a, b):
    candles = real(tf, a, b)
    markets = {s: default_market_info(s, candles) for s in candles.symbols}
    params = scan_params(profile_for("STANDARD"))
    ref = build_panel(candles, markets, EvaluatorConfig(window_bars=200, thresholds=params.thresholds),
                      modules=params.modules)
    got = bar_panel(candles, markets, params, module_bars=200, block_bars=37)      # blocks cut anywhere
    assert got.first == ref.first
    assert [(r.label, r.regime_score) for r in got.regimes] == [(r.label, r.regime_score) for r in ref.regimes]
    for t in range(ref.first, ref.n_bars):
        for o, r in zip(got.outputs[t], ref.outputs[t], strict=True):
            assert o.module == r.module
            assert same(o.score, r.score) and same(o.direction, r.direction), (t, o.module)
            assert tuple(map(tuple, o.reasons)) == tuple(map(tuple, r.reasons)), (t, o.module)
            assert o.raw.keys() == r.raw.keys() and all(same(o.raw[k], r.raw[k]) for k in o.raw), (t, o.module)
    assert all(x is None for x in got.outputs[:ref.first])
    part = bar_panel(candles, markets, params, start=ref.first + 10, end=ref.first + 20)
    assert part.outputs[ref.first + 9] is None and part.outputs[ref.first + 20] is None
    assert part.outputs[ref.first + 10] is not None


def test_a_coarse_run_ticks_once_per_bar_with_the_cadence_of_the_bar():
    candles = real("1h", 0, 300)
    data = MarketData(candles, {s: default_market_info(s, candles) for s in candles.symbols})
    profile = profile_for("CRAZY")
    res = run_bar_backtest(data, BacktestConfig(profile=profile, cash=Decimal("1000000"), start_index=250))
    assert res.bars == 50 and np.array_equal(res.ts, candles.ts[250:300])
    assert np.all(np.diff(res.ts) == 3600)
    assert res.scores.shape == (50, 4) and res.enter.shape == (50, 4)
    assert float(res.initial_cash) + sum(float(t.pnl) for t in res.trades) == pytest.approx(float(res.final_equity))
    with pytest.raises(ValueError, match="1-minute candles run the live scan"):
        one = Candles(candles.symbols, "1m", candles.ts, candles.open, candles.high, candles.low, candles.close,
                      candles.volume)
        run_bar_backtest(MarketData(one, data.markets), BacktestConfig(profile=profile))
