"""The pipeline backtest on 5m / 15m / 1h candle files (issue 14 part 5) and the evidence section
of its JSON (part 3), on real files from ../shared/data."""

from __future__ import annotations

import json
from datetime import datetime
from io import StringIO

import numpy as np
import pandas as pd
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from strategies.backtests import PIPELINE_DEFAULTS, BacktestInputError, run_pipeline
from strategies.engine.backtest.bars import bar_minutes, warmup_bars
from tests.conftest import require_shared_data

pytestmark = pytest.mark.django_db

#: low thresholds so that something trades whatever the score calibration of the day
ACTIVE = {"entry_threshold": 15.0, "exit_threshold": 5.0}
ANDRES = "binance_andresciancio_2023"


def options(**kw):
    base = {"strategy": "pipeline", "data": None, "start": None, "end": None, "fee": 0.0005, "cash": 10_000_000.0,
            "no_trade_list": False, **PIPELINE_DEFAULTS}
    base.update(kw)
    return base


def files(folder: str, tf: str, coins=None) -> list[str]:
    root = require_shared_data(folder)
    coins = coins or (("BTC", "ETH", "BNB", "SOL", "ADA") if "selskas" in folder else ("BTC", "ETH", "SOL", "DOGE", "ADA"))
    return [str(root / f"binance_{c}-USDT_{tf}.csv.gz") for c in coins]


def epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def check_run(out: dict, *, tf: str, start: str, end: str) -> None:
    """Bars, cadence, trade timestamps on the file's grid inside the period, equity arithmetic,
    the report and the evidence section."""
    bar_s = bar_minutes(tf) * 60
    assert out["data"]["bar_cadence"]["tick_seconds"] == bar_s
    assert out["data"]["start"] == start and out["data"]["end"] == end
    assert out["bars"] == (epoch(end) - epoch(start)) // bar_s == out["report"]["bars"]
    assert out["params"]["profile"]["cadence_seconds"] == 60          # the profile as given; ticks per bar
    trades = out["trade_list"]
    assert out["trades"] == out["entries"] == len(trades) >= 1
    for t in trades:
        e, x = epoch(t["entry_time"]), epoch(t["exit_time"])
        # fills are stamped at a bar's close: on the bar grid, after the first tick's bar closed
        assert e % bar_s == 0 and x % bar_s == 0
        assert epoch(start) + bar_s <= e <= x <= epoch(end)
        if t["is_open"]:                                              # marked at the last close
            assert x == epoch(end)
    # initial cash + every trade's pnl (net of fees, open ones marked) = final equity
    assert 10_000_000.0 + sum(t["pnl"] for t in trades) == pytest.approx(out["final_equity"], abs=1e-4)
    assert out["report"]["final_equity"] == pytest.approx(out["final_equity"])
    assert out["equity"][-1][1] == pytest.approx(out["final_equity"])
    assert out["entries_per_day"] == pytest.approx(len(trades) / out["report"]["period_days"])
    ev = out["evidence"]
    assert ev["bars"] == out["bars"] and ev["horizon_bars"] == [max(1, round(60 * 60 / bar_s)),
                                                                max(1, round(240 * 60 / bar_s))]
    assert ev["strategy"]["trades"] == len(trades)
    # the strategy's weighted trade returns are its pnl over the cash (up to the entry fees)
    assert ev["strategy"]["total_return"] == pytest.approx(out["report"]["total_return"], abs=2e-3)
    base = ev["random_baseline"]
    assert base["draws"] >= 100 and base["trades"] == len(trades)
    assert base["total_return_p05"] <= base["total_return_mean"] <= base["total_return_p95"]
    assert ev["excess"]["total_return"] == pytest.approx(ev["strategy"]["total_return"] - base["total_return_mean"])
    assert 0.0 <= ev["excess"]["percentile"] <= 100.0
    assert ev["buy_and_hold"]["markets"] == out["markets"] and ev["buy_and_hold"]["max_drawdown"] >= 0
    cal = ev["calibration"]
    assert sum(r["count"] for r in cal["enter"]) >= len(trades)         # every entry was an ENTER proposal
    assert sum(r["count"] for r in cal["all"]) <= out["bars"] * out["markets"]
    json.dumps(out, allow_nan=False)


@pytest.mark.parametrize(("folder", "tf", "start", "end"), [
    (ANDRES, "1h", "2023-04-10T00:00:00Z", "2023-05-01T00:00:00Z"),
    (ANDRES, "15m", "2023-04-12T00:00:00Z", "2023-04-15T00:00:00Z"),
    (ANDRES, "5m", "2023-04-20T00:00:00Z", "2023-04-21T00:00:00Z"),
    ("binance_selskas_2021", "5m", "2021-02-01T00:00:00Z", "2021-02-02T00:00:00Z"),
])
def test_coarse_real_files_run_and_book_trades_on_their_bars(folder, tf, start, end):
    out = run_pipeline(options(profile="CRAZY", params=ACTIVE, data=files(folder, tf), start=start, end=end))
    check_run(out, tf=tf, start=start, end=end)
    assert out["data"]["bar_cadence"]["warmup_bars"] == warmup_bars(tf)


def test_command_json_has_entries_report_and_evidence_without_trade_list():
    buf = StringIO()
    call_command("backtest", "--strategy", "pipeline", "--profile", "CRAZY", "--param", "entry_threshold=15",
                 "--param", "exit_threshold=5", "--data", *files(ANDRES, "1h", ("BTC", "ETH", "SOL")),
                 "--start", "2023-04-20", "--no-trade-list", "--indent", "0", stdout=buf)
    out = json.loads(buf.getvalue())
    assert "trade_list" not in out and out["markets"] == 3
    assert {"entries", "entries_per_day", "report", "evidence"} <= set(out)
    assert {"calibration", "buy_and_hold", "random_baseline", "excess", "strategy"} <= set(out["evidence"])
    assert {"percentile", "total_return"} <= set(out["evidence"]["excess"])


def write(path, tf: str, n: int, seed: int, start="2024-01-01") -> str:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    freq = {"1d": "1D", "4h": "4h", "1h": "1h", "5m": "5min"}[tf]
    df = pd.DataFrame({"timestamp": pd.date_range(start, periods=n, freq=freq, tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "open": close, "high": close * 1.01, "low": close * 0.99, "close": close,
                       "volume": rng.uniform(1, 10, n)})
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("tf", ["1d", "4h"])
def test_bars_longer_than_an_hour_are_refused(tmp_path, tf):
    data = [write(tmp_path / f"binance_{c}-USDT_{tf}.csv", tf, 400, k) for k, c in enumerate(("AAA", "BBB"))]
    with pytest.raises(BacktestInputError, match=f"{tf} bars cannot serve the regime's 1-hour windows"):
        run_pipeline(options(data=data))


def test_mixed_timeframes_are_refused_naming_each_file(tmp_path):
    data = [write(tmp_path / "binance_AAA-USDT_5m.csv", "5m", 400, 1),
            write(tmp_path / "binance_BBB-USDT_1h.csv", "1h", 400, 2)]
    with pytest.raises(BacktestInputError, match=r"mix timeframes \(binance_AAA-USDT_5m.csv: 5m, "
                                                 r"binance_BBB-USDT_1h.csv: 1h\)"):
        run_pipeline(options(data=data))


def test_a_single_market_is_refused(tmp_path):
    data = [write(tmp_path / "binance_AAA-USDT_1h.csv", "1h", 400, 1),
            write(tmp_path / "binance_BBB-USDT_1h.csv", "1h", 400, 2)]
    with pytest.raises(BacktestInputError, match="at least 2 markets, the data has 1 \\(AAA-USDT\\)"):
        run_pipeline(options(data=data[:1]))
    with pytest.raises(BacktestInputError, match="at least 2 markets"):
        run_pipeline(options(data=data, markets=["BBB-USDT"]))


def test_too_few_bars_for_the_warm_up_is_refused(tmp_path):
    data = [write(tmp_path / f"binance_{c}-USDT_1h.csv", "1h", 150, k) for k, c in enumerate(("AAA", "BBB"))]
    with pytest.raises(BacktestInputError, match="150 bars of 1h in the data; with 200 bars of warm-up"):
        run_pipeline(options(data=data))
    real = files(ANDRES, "1h", ("BTC", "ETH"))
    with pytest.raises(CommandError, match="fewer than 2 bars are left to tick"):
        call_command("backtest", "--strategy", "pipeline", "--data", *real, "--end", "2023-04-09",
                     stdout=StringIO())


def test_timeframes_the_pipeline_runs_on():
    assert [bar_minutes(tf) for tf in ("1m", "3m", "5m", "15m", "30m", "1h")] == [1, 3, 5, 15, 30, 60]
    for tf in ("2h", "4h", "1d", "1w"):
        with pytest.raises(ValueError, match="cannot serve"):
            bar_minutes(tf)
    assert warmup_bars("1h") == warmup_bars("15m") == 200 and warmup_bars("5m") >= 200
