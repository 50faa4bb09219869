"""``manage.py regime_eval``: the simulator's true regime against the classifier, as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from execution.engine.sim import SimConfig, SimMarket
from regime.engine.classifier import classify_series
from regime.engine.evaluate import ALL_LABELS
from regime.engine.features import compute_input_series
from tests.conftest import REPO_ROOT

KEYS = {"seed", "days", "markets", "skip_hours", "bars", "accuracy", "labels", "precision", "recall", "support",
        "predicted", "lowest_recall", "confusion", "confusion_axes", "thresholds", "features", "duration_seconds"}


def run_eval(*args: str) -> dict:
    out = StringIO()
    call_command("regime_eval", *args, stdout=out)
    return json.loads(out.getvalue())


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "duration_seconds"}


def test_report_shape_and_confusion_counts_every_scored_bar():
    report = run_eval("--seed", "5", "--days", "2", "--markets", "20")
    assert set(report) == KEYS
    assert (report["seed"], report["days"], report["markets"], report["skip_hours"]) == (5, 2, 20, 24.0)
    assert report["labels"] == list(ALL_LABELS)
    assert report["bars"] == {"generated": 2880, "warmup_skipped": 1440, "inputs_missing": 0, "evaluated": 1440}
    confusion = np.array(report["confusion"])
    assert confusion.shape == (5, 5)
    assert confusion.sum() == report["bars"]["evaluated"]
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["accuracy"] == round(np.trace(confusion) / confusion.sum(), 6)
    assert report["support"] == dict(zip(report["labels"], confusion.sum(axis=1).tolist(), strict=True))
    assert report["predicted"] == dict(zip(report["labels"], confusion.sum(axis=0).tolist(), strict=True))
    for i, label in enumerate(report["labels"]):
        row, col = confusion[i].sum(), confusion[:, i].sum()
        assert report["recall"][label] == (round(confusion[i, i] / row, 6) if row else None)
        assert report["precision"][label] == (round(confusion[i, i] / col, 6) if col else None)
    assert report["duration_seconds"]["total"] >= 0


def test_accuracy_is_measured_against_the_simulators_true_regime():
    """Independent oracle: the same seed's true labels and classifier labels, scored by hand."""
    report = run_eval("--seed", "5", "--days", "2", "--markets", "20")
    history = SimMarket(SimConfig(seed=5, n_markets=20)).generate(2 * 1440)
    predicted = classify_series(compute_input_series(history.candles)).labels[1440:].astype(str)
    true = history.true_regime[1440:].astype(str)
    assert report["accuracy"] == round(float((predicted == true).mean()), 6)
    assert report["support"] == {label: int((true == label).sum()) for label in ALL_LABELS}


def test_deterministic_per_seed():
    first = run_eval("--seed", "11", "--days", "2", "--markets", "15")
    again = run_eval("--seed", "11", "--days", "2", "--markets", "15")
    other = run_eval("--seed", "12", "--days", "2", "--markets", "15")
    assert without_timing(first) == without_timing(again)
    assert first["confusion"] != other["confusion"]


def test_threshold_override_changes_the_classifier():
    """No membership can reach 1.01, so every bar falls back to RANGE."""
    report = run_eval("--seed", "5", "--days", "2", "--markets", "20", "--thresholds", '{"min_membership": 1.01}')
    assert report["thresholds"]["min_membership"] == 1.01
    assert report["predicted"]["RANGE"] == report["bars"]["evaluated"]
    assert report["accuracy"] == round(report["support"]["RANGE"] / report["bars"]["evaluated"], 6)


@pytest.mark.parametrize(("args", "message"), [
    (["--thresholds", "{bad"], "not valid JSON"),
    (["--thresholds", '{"trend_adx": 5}'], "trend_adx must be a list of 2 numbers"),
    (["--thresholds", '{"nope": 1}'], "unknown field"),
    (["--features", '{"leader_tf": 0}'], "leader_tf must be a positive integer"),
    (["--skip-hours", "48"], "leaves no bar"),
    (["--markets", "1"], "at least 2"),
])
def test_bad_arguments_are_command_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("regime_eval", "--seed", "1", "--days", "2", *args, stdout=StringIO())


def test_runs_as_a_process_without_a_database():
    """Exit code 0 and JSON on stdout even when the configured database is unreachable."""
    env = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none",
           "DJANGO_SETTINGS_MODULE": "quantweb.settings_test"}
    proc = subprocess.run([sys.executable, "manage.py", "regime_eval", "--seed", "3", "--days", "2", "--indent", "0"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["bars"]["evaluated"] == 1440


def _write_universe(tmp_path, days: int = 2, markets: int = 4, bar_minutes: int = 1):
    """Simulated candles written as candle files (one market each), like real data."""
    import pandas as pd

    h = SimMarket(SimConfig(seed=9, n_markets=markets)).generate(days * 1440)
    c = h.candles
    paths = []
    for i, sym in enumerate(c.symbols):
        frame = pd.DataFrame({"timestamp": pd.to_datetime(c.ts, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "open": c.open[i], "high": c.high[i], "low": c.low[i], "close": c.close[i],
                              "volume": c.volume[i]})
        if bar_minutes > 1:
            frame = frame.iloc[: len(frame) // bar_minutes * bar_minutes]
            g = np.arange(len(frame)) // bar_minutes
            frame = frame.groupby(g).agg({"timestamp": "first", "open": "first", "high": "max", "low": "min",
                                          "close": "last", "volume": "sum"})
        p = tmp_path / f"sim_{sym}_{bar_minutes}m.csv"
        frame.to_csv(p, index=False)
        paths.append(str(p))
    return paths, c.symbols


def test_data_mode_reports_what_follows_each_label(tmp_path):
    paths, symbols = _write_universe(tmp_path)
    report = run_eval("--data", *paths, "--indent", "0")
    assert report["leader"] == symbols[0] and report["timeframe"] == "1m" and report["horizon_minutes"] == 240
    assert report["bars"]["total"] == 2880 and report["bars"]["warmup_skipped"] == 1440
    labels = report["labels"]
    assert set(labels) == set(ALL_LABELS)
    assert sum(row["bars"] for row in labels.values()) == report["bars"]["evaluated"]
    assert abs(sum(row["share"] for row in labels.values()) - 1.0) < 1e-9
    for row in labels.values():
        assert set(row) >= {"share", "vol_median", "vol_mean", "efficiency_median", "drawdown_median", "forward_bars"}
    assert set(report["targets"]) >= {"panic_share", "chop_share", "panic_range_drawdown_ratio",
                                      "trend_minus_range_efficiency"}


def test_data_mode_accepts_5m_files_and_checks_arguments(tmp_path):
    paths, symbols = _write_universe(tmp_path, days=3, bar_minutes=5)
    report = run_eval("--data", *paths, "--leader", symbols[1], "--indent", "0")
    assert report["timeframe"] == "5m" and report["leader"] == symbols[1]
    assert report["features"]["leader_tf"] == 3 and report["bars"]["warmup_skipped"] == 24 * 12
    assert report["bars"]["evaluated"] > 0
    with pytest.raises(CommandError, match="not among"):
        call_command("regime_eval", "--data", *paths, "--leader", "NOPE", stdout=StringIO())
    with pytest.raises(CommandError, match="not both"):
        call_command("regime_eval", "--data", *paths, "--seed", "1", stdout=StringIO())
    with pytest.raises(CommandError, match="--seed S --days D"):
        call_command("regime_eval", stdout=StringIO())
    with pytest.raises(CommandError, match="cannot load"):
        call_command("regime_eval", "--data", str(tmp_path / "missing_1m.csv"), stdout=StringIO())
