"""``manage.py backtest --strategy pipeline`` and the ``pipeline`` runner [BT-3], [BT-4]."""

from __future__ import annotations

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from strategies.backtests import PIPELINE_DEFAULTS, RUNNERS, BacktestInputError, run_pipeline
from strategies.engine.backtest.report import bar_breakdown, trade_breakdown
from tests.conftest import require_shared_data

pytestmark = pytest.mark.django_db     # the runner reads the stored profile when there is one

ACTIVE = {"entry_threshold": 30.0, "exit_threshold": 15.0}


def options(**kw):
    base = {"strategy": "pipeline", "data": None, "start": None, "end": None, "fee": 0.0005, "cash": 10_000_000.0,
            "no_trade_list": False, **PIPELINE_DEFAULTS}
    base.update(kw)
    return base


def test_pipeline_is_a_registered_runner():
    assert RUNNERS["pipeline"] is run_pipeline


def test_sim_run_reports_metrics_breakdowns_equity_and_progress():
    seen: list[float] = []
    out = run_pipeline(options(profile="CRAZY", params=ACTIVE, n_markets=6, days=0.4, equity_points=50),
                       progress=seen.append)
    assert out["strategy"] == "pipeline" and out["bars"] == 576 and out["markets"] == 6
    assert out["data"]["source"] == "sim" and out["data"]["start"] == "2026-01-01T00:00:00Z"
    assert out["params"]["profile"]["entry_threshold"] == 30.0 and out["params"]["profile_source"].endswith("+ overrides")
    assert out["trades"] == len(out["trade_list"]) >= 1
    report = out["report"]
    for key in ("total_return", "annualized_return", "sharpe", "sortino", "calmar", "max_drawdown",
                "max_drawdown_duration_days", "win_rate", "profit_factor", "expectancy", "avg_holding_hours",
                "exposure", "turnover", "trades_per_day"):
        assert key in report
    assert report["final_equity"] == pytest.approx(out["final_equity"])
    assert 5 <= len(out["equity"]) <= 50 and out["equity"][-1][1] == pytest.approx(out["final_equity"])
    assert sum(g["trades"] for g in out["by_strategy"].values()) == out["trades"]
    assert sum(g["trades"] for g in out["by_regime"].values()) == out["trades"]
    assert sum(g["bars"] for g in out["regime_bars"].values()) == out["bars"]
    closed_pnl = sum(t["pnl"] for t in out["trade_list"] if not t["is_open"])
    assert sum(g["pnl"] for g in out["by_strategy"].values()) == pytest.approx(closed_pnl)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    assert out["fees_paid"] > 0 and out["timing"]["bars_per_second"] > 0
    json.dumps(out, allow_nan=False)


def test_command_prints_json_for_the_pipeline():
    buf = StringIO()
    call_command("backtest", "--strategy", "pipeline", "--profile", "CRAZY", "--param", "entry_threshold=30",
                 "--param", "exit_threshold=15", "--markets", "5", "--days", "0.2", "--no-trade-list",
                 "--indent", "0", stdout=buf)
    out = json.loads(buf.getvalue())
    assert out["markets"] == 5 and out["bars"] == 288 and "trade_list" not in out


@pytest.mark.parametrize("argv, message", [
    (["--profile", "NOPE"], "unknown profile"),
    (["--param", "entry_threshold=500"], "entry_threshold"),
    (["--param", "no_such=1"], "unknown parameter"),
    (["--params", "[1]"], "JSON object"),
    (["--days", "0"], "--days"),
    (["--markets", "KRW-NOPE"], "unknown market"),
    (["--data", "/nonexistent.csv"], "not found"),
    (["--source", "files"], "needs --data"),
    (["--latency-ms", "-5"], "latency_ms"),
    (["--start", "2026-02-01", "--end", "2026-01-01"], "before --end"),
    (["--mode", "bar", "--fee", "0"], "--fee must be positive"),
])
def test_bad_options_are_command_errors(argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("backtest", "--strategy", "pipeline", "--markets", "3", "--days", "0.1", *argv, stdout=StringIO())


def test_bad_option_is_a_backtest_input_error_for_api_callers():
    with pytest.raises(BacktestInputError):
        run_pipeline(options(mode="fast"))


def test_a_stored_profile_is_used_when_the_database_has_it():
    from strategies.models import StrategyProfile

    row = StrategyProfile.objects.filter(key="CRAZY").first()
    if row is None:
        pytest.skip("no stored CRAZY profile in this database")
    out = run_pipeline(options(profile="CRAZY", n_markets=3, days=0.05, no_trade_list=True))
    assert out["params"]["profile_source"] == "stored"


def test_real_files_run_with_warm_up_before_start():
    root = require_shared_data("upbit_azuremooni")
    files = [str(root / f"upbit_KRW-{c}_1m.csv.gz") for c in ("BTC", "ETH", "XRP")]
    out = run_pipeline(options(profile="CRAZY", params=ACTIVE, data=files, start="2025-09-05T00:00:00Z",
                               end="2025-09-05T06:00:00Z", markets=["KRW-BTC", "KRW-ETH"]))
    assert out["data"]["source"] == "files" and out["data"]["markets"] == ["KRW-BTC", "KRW-ETH"]
    assert out["bars"] == 360 and out["data"]["start"] == "2025-09-05T00:00:00Z"
    assert out["report"]["bars"] == 360


def test_breakdowns_by_hand():
    class T:
        def __init__(self, strategy, pnl, is_open=False, entry=0, exit=7200):
            self.strategy, self.regime, self.pnl, self.return_ = strategy, "TREND", pnl, pnl / 1000
            self.is_open, self.entry_ts, self.exit_ts = is_open, entry, exit

    rows = [T("TP", 100.0), T("TP", -50.0), T("VCB", 30.0), T("VCB", 5.0, is_open=True)]
    b = trade_breakdown(rows, "strategy")
    assert b["TP"]["closed_trades"] == 2 and b["TP"]["win_rate"] == 0.5 and b["TP"]["profit_factor"] == 2.0
    assert b["TP"]["pnl"] == 50.0 and b["TP"]["avg_holding_hours"] == 2.0
    assert b["VCB"]["trades"] == 2 and b["VCB"]["profit_factor"] is None and b["VCB"]["open_pnl"] == 5.0
    eq = np.array([101.0, 102.0, 102.0, 99.0])
    r = bar_breakdown(eq, ["TREND", "TREND", "CHOP", "PANIC"], initial_equity=100.0,
                      position_value=np.array([1.0, 1.0, 0.0, 1.0]))
    assert r["TREND"]["return"] == pytest.approx(0.02) and r["TREND"]["pnl"] == pytest.approx(2.0)
    assert r["PANIC"]["return"] == pytest.approx(-3 / 102) and r["CHOP"]["exposure"] == 0.0
