"""Tuning and labels on real candle files (issue 14 part 4): a tuning run's files source resamples
to its ``bar`` and keeps the ``last_days``, the options are validated, the STRATEGY page offers a
real-data form, the API refuses file options for the simulator, ``manage.py label_data`` labels
real files; and a tuning run on real files from ``../shared/data`` runs end to end."""

from __future__ import annotations

import csv
import json
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from strategies import learning
from strategies.models import TuningRun
from strategies.tasks_learning import run_tuning
from tests.conftest import require_shared_data
from tests.factories import staff_user

SELSKAS = ["binance_selskas_2021/binance_BTC-USDT_5m.csv.gz", "binance_selskas_2021/binance_ETH-USDT_5m.csv.gz"]


@pytest.fixture
def no_queue(monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: None)


@pytest.fixture
def real_root(settings):
    settings.QUANTWEB_BACKTEST_DATA_DIR = str(require_shared_data())


def test_the_bar_of_files():
    assert learning.tuning_bar("1m", None) == "auto" and learning.tuning_bar("5m", "1h") == "1h"
    with pytest.raises(ValueError, match="multiple"):
        learning.tuning_bar("1h", "15m")


def test_file_options_are_refused_for_the_simulator(db):
    with pytest.raises(ValidationError) as err:
        learning.tuning_options({"source": "sim", "bar": "15m", "last_days": 30})
    assert set(err.value.message_dict) == {"bar", "last_days"}


@pytest.mark.realdata
def test_file_options_are_validated(db, real_root):
    ok = learning.tuning_options({"source": "files", "data_files": SELSKAS, "bar": "1h", "last_days": 30})
    assert ok["bar"] == "1h" and ok["last_days"] == 30
    with pytest.raises(ValidationError) as err:
        learning.tuning_options({"source": "files", "data_files": SELSKAS, "bar": "7m", "last_days": 5})
    assert set(err.value.message_dict) == {"bar", "last_days"}
    mixed = [SELSKAS[0], "binance_selskas_2021/binance_BTC-USDT_1m.csv.gz"]
    with pytest.raises(ValidationError) as err:
        learning.tuning_options({"source": "files", "data_files": mixed})
    assert "one timeframe" in err.value.message_dict["data_files"][0]
    hourly = ["upbit_azuremooni/upbit_KRW-BTC_1h.csv.gz", "upbit_azuremooni/upbit_KRW-ETH_1h.csv.gz"]
    with pytest.raises(ValidationError) as err:
        learning.tuning_options({"source": "files", "data_files": hourly, "bar": "15m"})
    assert "cannot be resampled" in err.value.message_dict["bar"][0]


def test_api_refuses_file_options_for_the_simulator(client, db, no_queue):
    client.force_login(staff_user(username="boss"))
    r = client.post("/api/learning/tuning-runs/", {"source": "sim", "bar": "15m", "last_days": 30},
                    content_type="application/json")
    assert r.status_code == 400 and r.json()["bar"] == ["only with source=files"] and "last_days" in r.json()


@pytest.mark.realdata
def test_the_strategy_page_offers_tuning_on_real_files(client, db, real_root):
    client.force_login(staff_user(username="boss"))
    html = client.get("/strategy/").content.decode()
    assert 'id="tuning-files-form"' in html and 'name="bar"' in html and SELSKAS[0] in html


@pytest.mark.slow
@pytest.mark.realdata
def test_a_tuning_run_on_real_files_resamples_and_crops(db, real_root, no_queue):
    boss = staff_user(username="boss")
    run = learning.start_tuning(user=boss, options={"source": "files", "data_files": SELSKAS, "bar": "1h",
                                                    "last_days": 40, "n_trials": 2, "seed": 1,
                                                    "train_days": 7, "test_days": 5})
    run_tuning(run.pk)
    run.refresh_from_db()
    assert run.status == TuningRun.Status.DONE, run.message
    data = run.summary["data"]
    assert data["timeframe"] == "1h" and data["file_timeframe"] == "5m" and data["markets"] == 2
    assert data["days"] == pytest.approx(40, abs=1 / 24) and data["files"] == SELSKAS
    assert run.n_pass + run.n_hold + run.n_reject == 2
    assert set(run.summary["decisive_rules"]) == {"PASS", "HOLD", "REJECT"}
    assert all("excess_oos" in t and "percentile_oos" in t for t in run.summary["trials"])


@pytest.mark.realdata
def test_label_data_labels_real_files(tmp_path):
    path = require_shared_data("upbit_azuremooni/upbit_KRW-XRP_1m.csv.gz")
    out = StringIO()
    target = tmp_path / "labels.csv"
    call_command("label_data", "--data", str(path), "--step", "60", "--out", str(target), stdout=out)
    summary = json.loads(out.getvalue())
    assert summary["data"]["symbols"] == ["KRW-XRP"] and summary["step"] == 60
    assert summary["label_ret_240m"]["n"] > 300 and summary["costs"]["KRW-XRP"]["slippage"] == 0.0005
    rows = list(csv.DictReader(target.open()))
    assert len(rows) == summary["snapshots"] and rows[0]["symbol"] == "KRW-XRP"
    assert {"label_ret_60m", "label_ret_240m", "label_mfe_240m", "label_mae_240m", "label_dd_240m"} <= set(rows[0])
