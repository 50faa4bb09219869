"""``strategies.quality`` and ``manage.py strategy_quality`` [CA-2], [CA-3]: universes, the
figures per run, the report, and STANDARD's entry rate on real Upbit minutes."""

from __future__ import annotations

import math

import pytest
from django.core.management import CommandError, call_command

from strategies.quality import ENTRY_TARGETS, Universe, discover, render, summarise
from tests.conftest import require_shared_data


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_text("timestamp,open,high,low,close,volume\n")


def test_discover_groups_by_folder_exchange_quote_and_timeframe(tmp_path):
    _touch(tmp_path / "a", "binance_SOL-USDT_1m.csv.gz", "binance_BTC-USDT_1m.csv.gz", "binance_ETH-USDT_1m.csv.gz",
           "binance_ADA-USDT_1m.csv.gz", "binance_XRP-USDT_1m.csv.gz", "binance_DOGE-USDT_1m.csv.gz",
           "binance_BTC-USDT_5m.csv.gz",                         # alone in its timeframe: left out
           "binance_BTC-USDT_trades.csv.gz", "binance_BTC-USDT_1d.csv.gz",
           "binancefuturesmark_XRP-USDT_1h.csv.gz", "binancefuturesmark_BTC-USDT_1h.csv.gz")
    _touch(tmp_path / "u", "upbit_KRW-XRP_1m.csv.gz", "upbit_KRW-BTC_1m.csv.gz")
    _touch(tmp_path / "originals", "binance_BTC-USDT_1h.csv.gz", "binance_ETH-USDT_1h.csv.gz")
    found = discover(tmp_path)
    assert [u.name for u in found] == ["a binance USDT 1m", "u upbit KRW 1m"]
    a, u = found
    assert a.symbols == ("BTC-USDT", "ETH-USDT", "ADA-USDT", "DOGE-USDT", "SOL-USDT")      # 5, BTC/ETH first
    assert len(a.files) == 5 and a.files[0].endswith("binance_BTC-USDT_1m.csv.gz")
    assert u.symbols == ("KRW-BTC", "KRW-XRP")                  # Upbit codes are QUOTE-BASE


def _result(entries: int, days: float, percentile: float) -> dict:
    return {
        "entries": entries, "data": {"markets": ["X", "Y"], "start": "2025-01-01T00:00:00Z", "end": "2025-01-02"},
        "report": {"period_days": days, "total_return": 0.01, "max_drawdown": 0.02, "win_rate": 0.5},
        "evidence": {"buy_and_hold": {"return": 0.03},
                     "random_baseline": {"total_return_mean": 0.0, "total_return_p05": -0.01, "total_return_p95": 0.01},
                     "excess": {"total_return": 0.01, "percentile": percentile},
                     "calibration": {"all": [{"bucket": "70-80", "count": 3, "mean_net_60": 0.001, "hit_60": 0.6,
                                              "mean_net_240": -0.002, "hit_240": 0.3}]}},
        "regime_bars": {"RANGE": {"share": 1.0}}, "exit_reasons": {"STOP_LOSS": 2},
        "timing": {"run_seconds": 1.0},
    }


def test_summarise_judges_the_entry_rate_and_the_edge():
    u = Universe("f", "binance", "USDT", "1m", ("a", "b"), ("X", "Y"))
    row = summarise(u, "STANDARD", _result(entries=20, days=10.0, percentile=97.0))
    assert row["entries_per_day"] == 2.0 and row["target"] == list(ENTRY_TARGETS["STANDARD"])
    assert row["in_target"] is True and row["edge"] is True
    low = summarise(u, "STANDARD", _result(entries=5, days=10.0, percentile=99.0))
    assert low["in_target"] is False and low["edge"] is False           # too few entries to claim an edge
    coarse = summarise(Universe("f", "binance", "USDT", "1h", ("a", "b"), ("X", "Y")), "CRAZY",
                       _result(entries=20, days=10.0, percentile=50.0))
    assert coarse["target"] is None and coarse["in_target"] is None and coarse["edge"] is False


def test_the_report_says_plainly_where_there_is_no_edge():
    u = Universe("f", "binance", "USDT", "1m", ("a", "b"), ("X", "Y"))
    rows = [summarise(u, "STANDARD", _result(20, 10.0, 40.0)), summarise(u, "CRAZY", _result(100, 10.0, 99.0)),
            {"universe": "g", "timeframe": "5m", "profile": "STANDARD", "error": "too few bars"}]
    text = render(rows, command="python manage.py strategy_quality", generated="today")
    assert "| f binance USDT 1m | STANDARD | 20 | 2.00 |" in text
    assert text.count("| **no** |") == 1 and "| yes |" in text
    assert "## Universes the pipeline refused" in text and "too few bars" in text
    assert "| 70-80 | 3 |" in text


def test_the_command_refuses_bad_options(tmp_path):
    with pytest.raises(CommandError, match="not found"):
        call_command("strategy_quality", data_dir=str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="unknown timeframe"):
        call_command("strategy_quality", data_dir=str(tmp_path), timeframes="4h")
    with pytest.raises(CommandError, match="unknown profile"):
        call_command("strategy_quality", data_dir=str(tmp_path), profiles="YOLO")
    with pytest.raises(CommandError, match="no universe"):
        call_command("strategy_quality", data_dir=str(tmp_path))


@pytest.mark.realdata
@pytest.mark.slow
def test_standard_trades_real_upbit_minutes_at_its_target_rate():
    """Issue 14: STANDARD made 0 entries on real minutes. On the 17 days of Upbit KRW-BTC/ETH/XRP
    it now enters at 1 to 15 entries per day, and the report carries the evidence."""
    from strategies.quality import _run_one

    folder = require_shared_data("upbit_azuremooni")
    (u,) = [x for x in discover(folder.parent, ("1m",)) if x.folder == "upbit_azuremooni"]
    row = _run_one((u, "STANDARD"))
    assert "error" not in row, row
    lo, hi = ENTRY_TARGETS["STANDARD"]
    assert lo <= row["entries_per_day"] <= hi, row
    assert math.isfinite(row["percentile"]) and row["random_p05"] <= row["random_p95"]
    assert row["calibration"]
