"""Reference strategy [BT-5], report metrics [BT-3] and ``manage.py backtest``.

The reference long-only SMA crossover gives the same trades (entry and exit bars) and the same
final equity (within 0.01 %; in practice ~1e-9) as backtesting.py and as vectorbt configured
the same way, on real data from ../shared/data. The configuration of each library is the one
documented in docs/backtesting.md.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from io import StringIO
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from execution.adapters.replay import read_candle_file
from execution.engine.validation import OhlcvSeries, clean_ohlcv
from strategies import crosscheck
from strategies.engine.backtest.reference import crossings, run_long_only, sma, sma_cross
from strategies.engine.backtest.report import compute_report, drawdown
from tests.conftest import in_ci, require_shared_data

FEE = 0.0005
CASH = 10_000_000.0
D = 86_400


def require_module(name: str) -> ModuleType:
    """The reference library, or skip outside CI when it is not installed (fail in CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"{name} must be installed in CI (test extras): {exc}")
        pytest.skip(f"{name} not installed")


def load(relative: str) -> OhlcvSeries:
    series, _ = clean_ohlcv(read_candle_file(require_shared_data(relative)))
    return series


# --------------------------------------------------------------------------- the reference libraries


def run_backtesting_py(s: OhlcvSeries, fast: int, slow: int, fee: float = FEE, cash: float = CASH):
    """backtesting.py configured as strategies.crosscheck documents."""
    require_module("backtesting")
    result = crosscheck.backtesting_py_runner(s.ts, s.open, s.high, s.low, s.close, s.volume, fast, slow, fee, cash)()
    return result.closed, result.final_equity, result.equity


def run_vectorbt(s: OhlcvSeries, fast: int, slow: int, fee: float = FEE, cash: float = CASH,
                 signals: tuple[np.ndarray, np.ndarray] | None = None):
    """vectorbt configured as strategies.crosscheck documents."""
    require_module("vectorbt")
    result = crosscheck.vectorbt_runner(s.ts, s.open, s.close, fast, slow, fee, cash, signals=signals)()
    return result.closed, result.final_equity, result.equity


REAL_FILES = [
    ("binance_andresciancio_2023/binance_BTC-USDT_1h.csv.gz", 10, 30),
    ("upbit_azuremooni/upbit_KRW-BTC_1h.csv.gz", 10, 30),
    ("upbit_azuremooni/upbit_KRW-XRP_1h.csv.gz", 10, 30),
    ("upbit_azuremooni/upbit_KRW-ETH_1h.csv.gz", 5, 20),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("relative", "fast", "slow"), REAL_FILES)
def test_reference_matches_backtesting_py_on_real_data(relative, fast, slow):
    s = load(relative)
    ours = sma_cross(s.open, s.close, fast, slow, FEE, CASH, ts=s.ts)
    bars, final, equity = run_backtesting_py(s, fast, slow)
    assert len(bars) > 10
    assert [(t.entry_bar, t.exit_bar) for t in ours.closed_trades] == bars
    assert ours.final_equity == pytest.approx(final, rel=1e-4)
    assert ours.final_equity == pytest.approx(final, rel=1e-8)     # what it really is
    np.testing.assert_allclose(ours.equity, equity, rtol=1e-8)


@pytest.mark.realdata
@pytest.mark.parametrize(("relative", "fast", "slow"), REAL_FILES)
def test_reference_matches_vectorbt_on_real_data(relative, fast, slow):
    s = load(relative)
    ours = sma_cross(s.open, s.close, fast, slow, FEE, CASH, ts=s.ts)
    bars, final, equity = run_vectorbt(s, fast, slow)
    assert len(bars) > 10
    assert [(t.entry_bar, t.exit_bar) for t in ours.closed_trades] == bars
    assert ours.final_equity == pytest.approx(final, rel=1e-4)
    assert ours.final_equity == pytest.approx(final, rel=1e-10)
    np.testing.assert_allclose(ours.equity, equity, rtol=1e-10)


@pytest.mark.realdata
def test_reference_matches_both_on_tie_heavy_minute_data():
    """DOGE/USDT 1m (5-decimal prices, flat stretches): exact SMA ties are frequent. backtesting.py
    uses the same pandas SMA and matches natively; vectorbt's rolling mean (a running cumsum)
    differs by rounding, which flips some exact ties, so it is given the reference's signals and
    checked on execution and accounting alone."""
    s = load("binance_andresciancio_2023/binance_DOGE-USDT_1m.csv.gz")
    ours = sma_cross(s.open, s.close, 10, 30, FEE, CASH, ts=s.ts)
    mine = [(t.entry_bar, t.exit_bar) for t in ours.closed_trades]
    assert len(mine) > 1000
    bars, final, _ = run_backtesting_py(s, 10, 30)
    assert mine == bars
    assert ours.final_equity == pytest.approx(final, rel=1e-8)
    signals = crossings(sma(s.close, 10), sma(s.close, 30))
    bars, final, _ = run_vectorbt(s, 10, 30, signals=signals)
    assert mine == bars
    assert ours.final_equity == pytest.approx(final, rel=1e-10)


# --------------------------------------------------------------------------- the reference, by hand


def test_sma_cross_fills_next_open_with_fee_and_marks_the_open_position():
    """fast=1, slow=2: d = (c[i] - c[i-1]) / 2, so the signal is the sign of the close change.
    close 10 9 11 12 12 10 13 13 -> buy at bar 2 (fill bar 3), the cross through the tie at bar 4
    sells at bar 5 (fill bar 6), buy at bar 6 (fill bar 7 = last bar, marked at its close)."""
    close = np.array([10, 9, 11, 12, 12, 10, 13, 13], dtype=float)
    open_ = np.array([10, 10, 9, 11.5, 12, 12, 10.5, 13.2])
    fee, cash = 0.001, 1000.0
    r = sma_cross(open_, close, 1, 2, fee, cash, ts=np.arange(8) * 3600 + 1_700_000_000)

    qty1 = cash / (11.5 * (1 + fee))
    proceeds = qty1 * 10.5 * (1 - fee)
    qty2 = proceeds / (13.2 * (1 + fee))
    assert r.bars == 8
    assert len(r.trades) == 2 and r.trades.has_open
    t1, t2 = r.trades
    assert (t1.entry_bar, t1.exit_bar, t1.entry_price, t1.exit_price) == (3, 6, 11.5, 10.5)
    assert t1.entry_ts == 1_700_000_000 + 3 * 3600 and t1.exit_ts == 1_700_000_000 + 6 * 3600
    assert t1.qty == pytest.approx(qty1, rel=1e-14)
    assert t1.entry_fee == pytest.approx(qty1 * 11.5 * fee, rel=1e-14)
    assert t1.exit_fee == pytest.approx(qty1 * 10.5 * fee, rel=1e-14)
    assert t1.pnl == pytest.approx(proceeds - cash, rel=1e-12)
    assert t1.return_ == pytest.approx(proceeds / cash - 1, rel=1e-12)
    assert not t1.is_open
    assert (t2.entry_bar, t2.exit_bar, t2.entry_price, t2.exit_price, t2.is_open) == (7, 7, 13.2, 13.0, True)
    assert t2.qty == pytest.approx(qty2, rel=1e-14)
    assert t2.exit_fee == 0.0
    assert t2.pnl == pytest.approx(qty2 * 13 - proceeds, rel=1e-12)
    assert r.final_equity == pytest.approx(qty2 * 13, rel=1e-14)
    expected = [cash, cash, cash, qty1 * 12, qty1 * 12, qty1 * 10, proceeds, qty2 * 13]
    np.testing.assert_allclose(r.equity, expected, rtol=1e-14)
    np.testing.assert_allclose(r.position_value, [0, 0, 0, qty1 * 12, qty1 * 12, qty1 * 10, 0, qty2 * 13],
                               rtol=1e-14)
    assert r.fees_paid == pytest.approx(t1.entry_fee + t1.exit_fee + t2.entry_fee, rel=1e-14)
    assert r.traded_value == pytest.approx(qty1 * 11.5 + qty1 * 10.5 + qty2 * 13.2, rel=1e-14)
    assert len(r.closed_trades) == 1


def bar_by_bar(open_, close, fast, slow, fee, cash):
    """The same rules written as a plain event loop over bars (the obvious implementation)."""
    sf = pd.Series(close).rolling(fast).mean().to_numpy()
    ss = pd.Series(close).rolling(slow).mean().to_numpy()
    side, qty, pending, trades, equity = 0, 0.0, None, [], []
    for i in range(len(close)):
        if pending == "buy":
            qty = cash / (open_[i] * (1 + fee))
            cash, entry = 0.0, i
        elif pending == "sell":
            cash, qty = qty * open_[i] * (1 - fee), 0.0
            trades.append((entry, i))
        pending = None
        equity.append(cash + qty * close[i])
        d = sf[i] - ss[i]
        if d > 0 and side < 0 and qty == 0:
            pending = "buy"
        elif d < 0 and side > 0 and qty > 0:
            pending = "sell"
        if d > 0:
            side = 1
        elif d < 0:
            side = -1
    return trades, np.array(equity)


@pytest.mark.parametrize("seed", range(20))
def test_vectorised_reference_equals_a_bar_by_bar_loop(seed):
    """Random integer-tick paths (many exact SMA ties) and random fast/slow."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 400))
    close = np.maximum(1.0, 100 + np.cumsum(rng.integers(-2, 3, n))).astype(float)
    open_ = np.maximum(1.0, close + rng.integers(-1, 2, n))
    fast = int(rng.integers(1, 6))
    slow = fast + int(rng.integers(1, 8))
    r = sma_cross(open_, close, fast, slow, 0.001, 1000.0)
    trades, equity = bar_by_bar(open_, close, fast, slow, 0.001, 1000.0)
    assert [(t.entry_bar, t.exit_bar) for t in r.closed_trades] == trades
    np.testing.assert_allclose(r.equity, equity, rtol=1e-12)


def test_crossings_count_a_cross_through_a_tie_but_not_a_touch():
    nan = np.nan
    fast = np.array([nan, -1, 0, -1, 1, 0, 1, -1, -1])
    up, down = crossings(fast, np.zeros(9))
    assert np.flatnonzero(up).tolist() == [4]          # -1 0 -1 is a touch; -1 -> 1 crosses
    assert np.flatnonzero(down).tolist() == [7]        # 1 0 1 is a touch; 1 -> -1 crosses
    up, down = crossings(np.array([nan, 1.0, 2.0, -1.0, 0.0, 3.0]), np.zeros(6))
    assert np.flatnonzero(up).tolist() == [5]          # first side seen (+) is not a signal; - 0 + is
    assert np.flatnonzero(down).tolist() == [3]


def test_signals_ignore_repeats_and_the_last_bar():
    close = np.full(6, 100.0)
    buy = np.array([0, 1, 1, 0, 1, 0], dtype=bool)     # bar 2: buy while long, ignored
    sell = np.array([1, 0, 0, 1, 0, 1], dtype=bool)    # bar 0: sell while flat, ignored; bar 5: last bar
    r = run_long_only(close, close, buy, sell, 0.0, 100.0)
    assert [(t.entry_bar, t.exit_bar, t.is_open) for t in r.trades] == [(2, 4, False), (5, 5, True)]
    assert r.final_equity == pytest.approx(100.0)


def test_no_trade_keeps_cash():
    close = np.linspace(100, 200, 50)                  # fast above slow from the start: never crosses
    r = sma_cross(close, close, 3, 10, FEE, CASH)
    assert len(r.trades) == 0 and r.final_equity == CASH
    assert np.all(r.equity == CASH) and np.all(r.position_value == 0)


def test_sma_is_the_pandas_rolling_mean():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    np.testing.assert_array_equal(sma(x, 2), [np.nan, 1.5, 3.0, 6.0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fast": 30, "slow": 10}, "fast < slow"),
    ({"fast": 0, "slow": 10}, "fast < slow"),
    ({"fee": -0.1}, "fee"),
    ({"cash": 0.0}, "cash"),
])
def test_sma_cross_rejects_bad_parameters(kwargs, message):
    close = np.linspace(1, 2, 40)
    args = {"fast": 3, "slow": 10, "fee": FEE, "cash": CASH} | kwargs
    with pytest.raises(ValueError, match=message):
        sma_cross(close, close, **args)


def test_sma_cross_rejects_bad_prices():
    close = np.linspace(1, 2, 40)
    bad = close.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match="finite and positive"):
        sma_cross(close, bad, 3, 10, FEE, CASH)
    with pytest.raises(ValueError, match="same length"):
        sma_cross(close[:-1], close, 3, 10, FEE, CASH)
    with pytest.raises(ValueError, match="strictly increasing"):
        sma_cross(close, close, 3, 10, FEE, CASH, ts=np.zeros(40, dtype=np.int64))


# --------------------------------------------------------------------------- report metrics, by hand


@dataclass(frozen=True)
class T:
    entry_ts: int
    exit_ts: int
    pnl: float
    return_: float
    entry_value: float
    exit_value: float
    is_open: bool = False


def test_report_on_a_hand_computed_equity_curve():
    """Daily bars, initial 100, equity 100 110 99 99 118.8: returns 0, .1, -.1, 0, .2."""
    ts = np.arange(5) * D
    equity = np.array([100, 110, 99, 99, 118.8])
    trades = [T(1 * D, 2 * D, 10.0, 0.1, 100, 110), T(2 * D, 3 * D, -11.0, -0.1, 110, 99),
              T(4 * D, 4 * D, 19.8, 0.2, 99, 0, is_open=True)]
    rep = compute_report(equity, ts, trades, bar_seconds=D, initial_equity=100.0)

    assert rep.bars == 5 and rep.period_days == 5.0 and rep.start_ts == 0 and rep.end_ts == 5 * D
    assert rep.total_return == pytest.approx(0.188)
    assert rep.annualized_return == pytest.approx(1.188 ** (365 / 5) - 1)
    # mean 0.04; deviations -.04 .06 -.14 -.04 .16 -> sum of squares .052, ddof 1 -> .013
    assert rep.volatility == pytest.approx(math.sqrt(0.013) * math.sqrt(365))
    assert rep.sharpe == pytest.approx(0.04 / math.sqrt(0.013) * math.sqrt(365))
    assert rep.sortino == pytest.approx(0.04 / math.sqrt(0.01 / 5) * math.sqrt(365))
    assert rep.max_drawdown == pytest.approx(0.1)
    # peak 110 at bar 1's close (2 D), back above it at bar 4's close (5 D)
    assert rep.max_drawdown_duration_days == 3.0 and rep.longest_drawdown_days == 3.0
    assert rep.calmar == pytest.approx(rep.annualized_return / 0.1)
    assert rep.trades == 3 and rep.closed_trades == 2
    assert rep.win_rate == 0.5
    assert rep.profit_factor == pytest.approx(10 / 11)
    assert rep.expectancy == pytest.approx(-0.5)
    assert rep.avg_trade_return == pytest.approx(0.0)
    assert rep.avg_holding_hours == 24.0
    assert rep.exposure == pytest.approx(3 / 5)        # bars 1, 2 and 4 are in the market
    assert math.isnan(rep.avg_gross_exposure)
    assert rep.turnover == pytest.approx(518 / (526.8 / 5))
    assert rep.annual_turnover == pytest.approx(518 / (526.8 / 5) * 365 / 5)
    assert rep.trades_per_day == pytest.approx(0.6)
    as_json = rep.to_dict()
    assert as_json["avg_gross_exposure"] is None
    json.dumps(as_json, allow_nan=False)


def test_report_separates_the_deepest_and_the_longest_drawdown():
    """Hourly: 100 90 100 (10 % for 2 bars), then 99 99 99 101 (1 % for 4 bars)."""
    ts = np.arange(7) * 3600
    rep = compute_report(np.array([100, 90, 100, 99, 99, 99, 101.0]), ts)
    assert rep.bar_seconds == 3600                     # inferred from ts
    assert rep.max_drawdown == pytest.approx(0.1)
    assert rep.max_drawdown_duration_days == pytest.approx(2 / 24)
    assert rep.longest_drawdown_days == pytest.approx(4 / 24)
    np.testing.assert_allclose(drawdown(np.array([100, 90, 100, 99.0])), [0, 0.1, 0, 0.01])


def test_report_drawdown_never_recovered_runs_to_the_end():
    rep = compute_report(np.array([100, 120, 90, 100.0]), np.arange(4) * 60)
    assert rep.max_drawdown == pytest.approx(0.25)
    assert rep.max_drawdown_duration_days == pytest.approx(2 * 60 / D)


def test_report_exposure_from_position_values_and_empty_trade_stats():
    ts = np.arange(4) * D
    equity = np.array([100.0, 100.0, 100.0, 100.0])
    rep = compute_report(equity, ts, [], position_value=np.array([0, 50, 100, 0.0]), initial_equity=100.0)
    assert rep.exposure == 0.5 and rep.avg_gross_exposure == pytest.approx(0.375)
    assert rep.total_return == 0 and rep.max_drawdown == 0 and rep.max_drawdown_duration_days == 0
    assert math.isnan(rep.sharpe) and math.isnan(rep.win_rate) and math.isnan(rep.profit_factor)
    assert rep.turnover == 0 and rep.trades_per_day == 0
    assert compute_report(equity, ts, [T(0, D, 5.0, 0.05, 100, 105)]).profit_factor == math.inf
    d = rep.to_dict()
    assert d["sharpe"] is None and d["win_rate"] is None


def test_report_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        compute_report(np.array([100.0, -1.0]), np.array([0, 60]))
    with pytest.raises(ValueError, match="increasing"):
        compute_report(np.array([100.0, 101.0]), np.array([60, 60]))
    with pytest.raises(ValueError, match="one entry per bar"):
        compute_report(np.array([100.0, 101.0]), np.array([0]))


def test_report_of_the_reference_run_matches_its_trades():
    close = np.array([10, 9, 11, 12, 12, 10, 13, 13], dtype=float)
    open_ = np.array([10, 10, 9, 11.5, 12, 12, 10.5, 13.2])
    ts = np.arange(8) * 3600
    r = sma_cross(open_, close, 1, 2, 0.001, 1000.0, ts=ts)
    rep = compute_report(r.equity, ts, r.trades, initial_equity=1000.0, position_value=r.position_value)
    assert rep.final_equity == r.final_equity and rep.trades == 2 and rep.closed_trades == 1
    assert rep.exposure == pytest.approx(4 / 8)
    assert rep.avg_holding_hours == 3.0
    assert rep.win_rate == 0.0
    assert rep.turnover == pytest.approx(r.traded_value / r.equity.mean())


# --------------------------------------------------------------------------- manage.py backtest


def write_candles(path, close: np.ndarray, start: str = "2024-01-01T00:00:00Z", freq: str = "1h") -> None:
    ts = pd.date_range(start, periods=len(close), freq=freq)
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": close, "high": close * 1.01,
                  "low": close * 0.99, "close": close, "volume": 1.0}).to_csv(path, index=False)


@pytest.fixture
def candle_file(tmp_path):
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    path = tmp_path / "binance_TEST-USDT_1h.csv"
    write_candles(path, np.round(close, 2))
    return path


def backtest(*args: str) -> dict:
    out = StringIO()
    call_command("backtest", *args, stdout=out)
    return json.loads(out.getvalue())


def test_command_prints_the_reference_result_as_json(candle_file):
    result = backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(candle_file),
                      "--fee", "0.0005", "--cash", "10000000")
    df = pd.read_csv(candle_file)
    ref = sma_cross(df.open.to_numpy(), df.close.to_numpy(), 5, 20, 0.0005, 1e7)
    assert {"strategy", "params", "data", "bars", "trades", "final_equity", "report", "trade_list"} <= set(result)
    assert result["bars"] == 400
    assert result["trades"] == len(ref.trades) > 3
    assert result["final_equity"] == pytest.approx(ref.final_equity, rel=1e-12)
    assert result["params"] == {"fast": 5, "slow": 20, "fee": 0.0005, "cash": 1e7}
    assert result["data"]["symbol"] == "TEST-USDT" and result["data"]["timeframe"] == "1h"
    assert result["data"]["start"] == "2024-01-01T00:00:00Z"
    for key in ("total_return", "annualized_return", "sharpe", "sortino", "calmar", "max_drawdown",
                "max_drawdown_duration_days", "win_rate", "profit_factor", "expectancy", "avg_holding_hours",
                "exposure", "turnover", "trades_per_day"):
        assert key in result["report"]
    assert result["report"]["final_equity"] == result["final_equity"]
    first = result["trade_list"][0]
    assert first["entry_bar"] == ref.trades[0].entry_bar
    assert first["entry_time"].endswith("Z") and first["pnl"] == pytest.approx(ref.trades[0].pnl)


def test_command_period_and_no_trade_list(candle_file):
    result = backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(candle_file),
                      "--start", "2024-01-02", "--end", "2024-01-10T00:00:00Z", "--no-trade-list", "--indent", "0")
    assert result["bars"] == 8 * 24
    assert result["data"]["start"] == "2024-01-02T00:00:00Z" and result["data"]["end"] == "2024-01-10T00:00:00Z"
    assert "trade_list" not in result


@pytest.mark.realdata
def test_command_on_real_data_matches_the_engine():
    path = require_shared_data("binance_andresciancio_2023/binance_BTC-USDT_1h.csv.gz")
    result = backtest("--strategy", "sma_cross", "--fast", "10", "--slow", "30", "--data", str(path),
                      "--fee", "0.0005", "--cash", "10000000")
    s = load("binance_andresciancio_2023/binance_BTC-USDT_1h.csv.gz")
    ref = sma_cross(s.open, s.close, 10, 30, FEE, CASH, ts=s.ts)
    assert (result["bars"], result["trades"]) == (719, len(ref.trades))
    assert result["final_equity"] == ref.final_equity


@pytest.mark.parametrize(("args", "message"), [
    (["--fast", "30", "--slow", "10"], "--fast < --slow"),
    (["--fast", "10", "--slow", "10"], "--fast < --slow"),
    (["--slow", "10"], "needs --fast and --slow"),
    (["--fast", "5", "--slow", "20", "--fee", "-0.01"], "--fee"),
    (["--fast", "5", "--slow", "20", "--cash", "0"], "--cash"),
    (["--fast", "5", "--slow", "20", "--start", "yesterday"], "ISO"),
    (["--fast", "5", "--slow", "20", "--start", "2024-02-01", "--end", "2024-01-01"], "before --end"),
    (["--fast", "5", "--slow", "300", "--start", "2024-01-10"], "needs at least 302"),
])
def test_command_rejects_bad_arguments(candle_file, args, message):
    with pytest.raises(CommandError, match=message):
        backtest("--strategy", "sma_cross", "--data", str(candle_file), *args)


def test_command_rejects_missing_and_invalid_files(tmp_path, candle_file):
    with pytest.raises(CommandError, match="not found"):
        backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(tmp_path / "nope.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(CommandError, match="cannot read candles"):
        backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(bad))
    garbage = tmp_path / "garbage.csv.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(CommandError, match="cannot read candles"):
        backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(garbage))
    with pytest.raises(CommandError, match="exactly one --data"):
        backtest("--strategy", "sma_cross", "--fast", "5", "--slow", "20", "--data", str(candle_file),
                 str(candle_file))
    with pytest.raises(CommandError, match="invalid choice"):
        backtest("--strategy", "nope", "--data", str(candle_file))
