"""Stored backtest runs [BT-4]: submitting (API and page), the worker task, progress, failures,
the result page, the trades CSV and the data-file catalogue (no path from a request ever
reaches the file system)."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from strategies import services_backtest as svc
from strategies import tasks_backtest
from strategies.backtests import RUNNERS, BacktestInputError
from strategies.models import BacktestRun, BacktestStatus
from tests.factories import UserFactory
from traders.models import AuditLog

pytestmark = pytest.mark.django_db

CANDLES = "set/binance_TEST-USDT_1h.csv"
HOURS = 24 * 60


def write_candles(path, n: int = HOURS, seed: int = 3, start: str = "2024-01-01T00:00:00Z",
                  freq: str = "1h") -> None:
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.01, n))), 4)
    ts = pd.date_range(start, periods=n, freq=freq)
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": close, "high": close * 1.01,
                  "low": close * 0.99, "close": close, "volume": 1.0}).to_csv(path, index=False)


@pytest.fixture
def data_dir(tmp_path, settings):
    """A data directory with one candle file, non-candle tables, an 'originals' copy, a hidden
    folder and a symlink to a candle file outside it."""
    root = tmp_path / "data"
    (root / "set").mkdir(parents=True)
    write_candles(root / CANDLES)
    write_candles(root / "set" / "binance_OTHER-USDT_1h.csv", seed=9)
    (root / "set" / "binance_TEST-USDT_trades.csv").write_text("timestamp,price\n")
    (root / "set" / "README.md").write_text("notes")
    (root / "originals").mkdir()
    write_candles(root / "originals" / "binance_TEST-USDT_1h.csv")
    (root / ".cache").mkdir()
    write_candles(root / ".cache" / "binance_TEST-USDT_1h.csv")
    outside = tmp_path / "private"
    outside.mkdir()
    write_candles(outside / "binance_SECRET-USDT_1h.csv")
    os.symlink(outside / "binance_SECRET-USDT_1h.csv", root / "set" / "binance_LINK-USDT_1h.csv")
    settings.QUANTWEB_BACKTEST_DATA_DIR = str(root)
    return root


@pytest.fixture
def queue(monkeypatch):
    """Records what the web enqueues instead of reaching a broker."""
    import django_q.tasks

    calls = []

    def fake_async_task(func, *args, **kwargs):
        calls.append({"func": func, "args": args, **kwargs})
        return f"task-{len(calls)}"

    monkeypatch.setattr(django_q.tasks, "async_task", fake_async_task)
    return calls


@pytest.fixture
def operator(db):
    return UserFactory(username="op", operator=True)


@pytest.fixture
def viewer(db):
    return UserFactory(username="viewer")


@pytest.fixture
def op_client(client, operator):
    client.force_login(operator)
    return client


DROP = object()


def sma_request(**overrides):
    body = {"strategy": "sma_cross", "data_files": [CANDLES], "fast": 10, "slow": 30, "fee": 0.001, "cash": 1e6}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


def post_json(client, body, **extra):
    return client.post("/api/backtests/", data=json.dumps(body), content_type="application/json", **extra)


def submit_and_run(client, django_capture_on_commit_callbacks, queue, **overrides) -> BacktestRun:
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(client, sma_request(**overrides))
    assert response.status_code == 201, response.content
    run_id = response.json()["id"]
    assert queue[-1]["args"] == (run_id,)
    tasks_backtest.run_backtest(run_id)
    return BacktestRun.objects.get(pk=run_id)


# -- the catalogue -------------------------------------------------------------------------------------

def test_the_catalogue_lists_candle_files_inside_the_data_directory_only(data_dir):
    ids = [f.id for f in svc.data_catalogue()]
    assert ids == ["set/binance_OTHER-USDT_1h.csv", CANDLES]
    first = svc.data_catalogue()[1]
    assert (first.exchange, first.symbol, first.timeframe) == ("binance", "TEST-USDT", "1h")


def test_a_missing_data_directory_gives_an_empty_catalogue(settings, tmp_path):
    settings.QUANTWEB_BACKTEST_DATA_DIR = str(tmp_path / "nowhere")
    assert svc.data_catalogue() == []


@pytest.mark.parametrize("file_id", [
    "../private/binance_SECRET-USDT_1h.csv", "set/../../private/binance_SECRET-USDT_1h.csv",
    "/etc/passwd", "set/binance_LINK-USDT_1h.csv", "originals/binance_TEST-USDT_1h.csv",
    ".cache/binance_TEST-USDT_1h.csv", "set/binance_TEST-USDT_trades.csv", "set/README.md", "", "set",
])
def test_resolving_refuses_anything_not_offered(data_dir, file_id):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not one of the data files offered"):
        svc.resolve_data_file(file_id)


def test_resolving_an_offered_file_gives_its_real_path(data_dir):
    assert svc.resolve_data_file(CANDLES) == (data_dir / CANDLES).resolve()


def test_the_data_files_endpoint(op_client, data_dir):
    response = op_client.get("/api/backtests/data-files/")
    assert response.status_code == 200
    assert [f["id"] for f in response.json()] == ["set/binance_OTHER-USDT_1h.csv", CANDLES]


def test_the_strategy_catalogue_matches_the_runners():
    assert set(svc.STRATEGIES) == set(RUNNERS)


# -- submitting through the API ------------------------------------------------------------------------

def test_an_operator_submits_a_run_that_is_recorded_audited_and_queued(op_client, operator, data_dir, queue,
                                                                       settings, django_capture_on_commit_callbacks):
    settings.QUANTWEB_SLOW_QUEUE = "quantweb-slow"
    with django_capture_on_commit_callbacks(execute=True):
        response = post_json(op_client, sma_request(start="2024-01-05", end="2024-02-01T12:00:00Z"))
    assert response.status_code == 201, response.content
    body = response.json()
    run = BacktestRun.objects.get(pk=body["id"])
    assert (run.status, run.progress, run.submitted_by, run.strategy) == ("QUEUED", 0.0, operator, "sma_cross")
    assert run.options == {"strategy": "sma_cross", "source": "files", "fee": 0.001, "cash": 1e6,
                           "data_files": [CANDLES], "fast": 10, "slow": 30, "start": "2024-01-05T00:00:00Z",
                           "end": "2024-02-01T12:00:00Z", "walk_forward": None}
    assert body["status"] == "QUEUED" and body["result"] is None and body["trades_csv"] is None
    assert body["url"] == f"/api/backtests/{run.pk}/" and body["page"] == f"/strategy/backtests/{run.pk}/"
    assert queue == [{"func": "strategies.tasks_backtest.run_backtest", "args": (run.pk,),
                      "task_name": f"backtest-{run.pk}", "group": "backtests",
                      "q_options": {"cluster": "quantweb-slow"}}]
    assert run.__class__.objects.get(pk=run.pk).task_id == "task-1"
    audit = AuditLog.objects.get(kind="BACKTEST_SUBMITTED")
    assert audit.actor == "op" and audit.object_id == str(run.pk) and audit.payload["strategy"] == "sma_cross"


def test_without_a_slow_queue_setting_the_default_cluster_is_used(op_client, data_dir, queue, settings,
                                                                   django_capture_on_commit_callbacks):
    del settings.QUANTWEB_SLOW_QUEUE
    with django_capture_on_commit_callbacks(execute=True):
        assert post_json(op_client, sma_request()).status_code == 201
    assert queue[0]["q_options"] == {}


def test_a_queue_that_refuses_the_task_fails_the_run_with_the_reason(op_client, data_dir, monkeypatch,
                                                                     django_capture_on_commit_callbacks):
    import django_q.tasks

    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(django_q.tasks, "async_task", broken)
    with django_capture_on_commit_callbacks(execute=True):
        run_id = post_json(op_client, sma_request()).json()["id"]
    run = BacktestRun.objects.get(pk=run_id)
    assert run.status == "FAILED" and run.error == "could not queue the run: ConnectionError: broker down"


def test_token_auth_works_for_operators(client, operator, data_dir, queue):
    token = Token.objects.create(user=operator)
    response = post_json(client, sma_request(), HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 201


def test_a_viewer_may_read_but_not_submit(client, viewer, data_dir, queue):
    client.force_login(viewer)
    response = post_json(client, sma_request())
    assert response.status_code == 403
    assert response.json() == {"detail": "Only operators may run backtests."}
    assert not BacktestRun.objects.exists() and not AuditLog.objects.filter(kind="BACKTEST_SUBMITTED").exists()
    assert client.get("/api/backtests/").status_code == 200


def test_anonymous_requests_are_refused(client, data_dir):
    assert post_json(client, sma_request()).status_code in (401, 403)
    assert client.get("/api/backtests/").status_code in (401, 403)
    assert client.get("/api/backtests/1/trades.csv").status_code in (401, 403)


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"strategy": "nope"}, "strategy", "is not a valid choice"),
    ({"fast": DROP, "slow": DROP}, "fast", "sma_cross needs fast"),
    ({"fast": None}, "fast", "may not be null"),
    ({"fast": 30, "slow": 10}, "slow", "slow must be greater than fast"),
    ({"data_files": ["../private/binance_SECRET-USDT_1h.csv"]}, "data_files", "not one of the data files offered"),
    ({"data_files": ["/etc/passwd"]}, "data_files", "not one of the data files offered"),
    ({"data_files": ["set/binance_LINK-USDT_1h.csv"]}, "data_files", "not one of the data files offered"),
    ({"data_files": []}, "data_files", "choose at least one data file"),
    ({"data_files": [CANDLES, "set/binance_OTHER-USDT_1h.csv"]}, "data_files", "needs exactly 1 data file"),
    ({"data_files": "set/binance_TEST-USDT_1h.csv"}, "data_files", "Expected a list"),
    ({"source": "sim"}, "source", "sma_cross runs on: files"),
    ({"sim_days": 3}, "sim_days", "only for the sim source"),
    ({"profile": "STANDARD"}, "profile", "sma_cross takes no profile"),
    ({"fee": 0.5}, "fee", "less than or equal to 0.1"),
    ({"fee": "NaN"}, "fee", "A valid number is required"),
    ({"cash": -5}, "cash", "greater than or equal to 1"),
    ({"start": "2024-02-01", "end": "2024-01-01"}, "end", "end must be after start"),
    ({"start": "yesterday"}, "start", "Datetime has wrong format"),
    ({"start": "0001-01-01T00:00:00+05:00"}, "start", "out of range"),
    ({"start": "1900-01-01T00:00:00Z"}, "start", "between 1970-01-02"),
    ({"wf_train_days": 10}, "wf_test_days", "walk-forward needs a test length"),
    ({"wf_train_days": 10, "wf_test_days": 5, "wf_step_days": 2}, "wf_step_days", "at least the test length"),
    ({"wf_train_days": 40, "wf_test_days": 30, "start": "2024-01-01", "end": "2024-02-01"}, "wf_train_days",
     "shorter than one train"),
    ({"wf_train_days": 0.001, "wf_test_days": 0.001, "start": "2024-01-01", "end": "2024-02-01"}, "wf_train_days",
     "at most 200"),
])
def test_bad_input_is_a_400_with_field_errors(op_client, data_dir, queue, overrides, field, message):
    response = post_json(op_client, sma_request(**overrides))
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors, errors
    assert any(message in m for m in errors[field]), errors
    assert not BacktestRun.objects.exists() and queue == []


def test_a_body_that_is_not_json_is_a_400(op_client, data_dir):
    response = op_client.post("/api/backtests/", data="{not json", content_type="application/json")
    assert response.status_code == 400


# -- the worker task ------------------------------------------------------------------------------------

def test_the_task_runs_the_runner_and_stores_its_result(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    assert run.status == "DONE" and run.progress == 1.0 and run.error == ""
    assert run.started_at <= run.finished_at
    direct = RUNNERS["sma_cross"]({"fast": 10, "slow": 30, "fee": 0.001, "cash": 1e6, "start": None, "end": None,
                                   "data": [str(data_dir / CANDLES)], "no_trade_list": False})
    result = run.result
    assert result["final_equity"] == direct["final_equity"]
    assert result["trades"] == direct["trades"] > 3
    assert result["trade_list"] == direct["trade_list"]
    assert result["report"] == direct["report"]
    assert result["data"]["file"] == CANDLES        # the catalogue id, not the server's path
    # charts: the full curve had HOURS points, under the chart limit it is kept whole
    assert result["equity_points"] == HOURS == len(result["equity"]) == len(result["drawdown"])
    assert result["equity"] == direct["equity"]
    assert min(d for _, d in result["drawdown"]) == pytest.approx(-100 * direct["report"]["max_drawdown"])


def test_a_second_delivery_does_nothing(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    finished = run.finished_at
    assert tasks_backtest.run_backtest(run.pk) == f"backtest {run.pk}: not queued (already taken or gone)"
    run.refresh_from_db()
    assert run.status == "DONE" and run.finished_at == finished


def test_a_long_curve_is_thinned_for_the_chart(op_client, data_dir, queue, django_capture_on_commit_callbacks,
                                                monkeypatch):
    monkeypatch.setattr(tasks_backtest, "CHART_POINTS", 200)
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    assert run.result["equity_points"] == HOURS
    assert len(run.result["equity"]) <= 200
    assert min(d for _, d in run.result["drawdown"]) == pytest.approx(-100 * run.result["report"]["max_drawdown"])
    assert run.result["equity"][-1][1] == run.result["final_equity"]


def test_an_input_problem_found_by_the_runner_fails_the_run_with_its_message(
        op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue, slow=300,
                         start="2024-02-20T00:00:00Z")
    assert run.status == "FAILED" and run.result is None
    assert run.error == (f"240 valid bars in {CANDLES} (after --start/--end); "
                         "--slow 300 needs at least 302 for one trade")
    assert run.finished_at is not None


def test_a_file_gone_since_submission_fails_the_run(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run_id = post_json(op_client, sma_request()).json()["id"]
    (data_dir / CANDLES).unlink()
    tasks_backtest.run_backtest(run_id)
    run = BacktestRun.objects.get(pk=run_id)
    assert run.status == "FAILED" and "not one of the data files offered" in run.error


def test_an_unexpected_error_is_stored_as_an_internal_error(op_client, data_dir, queue, monkeypatch,
                                                             django_capture_on_commit_callbacks):
    def broken(options, progress=None):
        raise KeyError("boom")

    monkeypatch.setitem(RUNNERS, "sma_cross", broken)
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    assert run.status == "FAILED" and run.error == "internal error (KeyError): 'boom'"


def test_the_worker_timeout_is_recorded_and_re_raised(op_client, data_dir, queue, monkeypatch,
                                                      django_capture_on_commit_callbacks):
    from django_q.exceptions import TimeoutException

    def slow(options, progress=None):
        raise TimeoutException("Task exceeded maximum timeout value (60 seconds)")

    monkeypatch.setitem(RUNNERS, "sma_cross", slow)
    with django_capture_on_commit_callbacks(execute=True):
        run_id = post_json(op_client, sma_request()).json()["id"]
    with pytest.raises(TimeoutException):
        tasks_backtest.run_backtest(run_id)
    run = BacktestRun.objects.get(pk=run_id)
    assert run.status == "FAILED"
    assert run.error == "stopped by the worker (TimeoutException): Task exceeded maximum timeout value (60 seconds)"


def test_progress_is_written_while_the_runner_works(op_client, data_dir, queue, monkeypatch,
                                                    django_capture_on_commit_callbacks):
    seen = []
    real = RUNNERS["sma_cross"]

    def reporting(options, progress=None):
        for fraction in (0.25, 0.5, 0.75):
            progress(fraction)
            run = BacktestRun.objects.get(status="RUNNING")
            seen.append((run.progress, run.heartbeat_at is not None))
        return real(options, progress)

    monkeypatch.setattr(tasks_backtest, "PROGRESS_INTERVAL", 0.0)
    monkeypatch.setitem(RUNNERS, "sma_cross", reporting)
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    assert seen == [(0.25, True), (0.5, True), (0.75, True)]
    assert run.status == "DONE" and run.progress == 1.0


def test_progress_writes_are_throttled_and_never_go_back():
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.RUNNING)
    now = [100.0]
    writer = tasks_backtest.ProgressWriter(run.pk, interval=1.0, step=0.01, clock=lambda: now[0])
    for k in range(1, 101):                     # 100 reports within 0.99 s: no write
        now[0] += 0.0099
        writer(k / 1000)
    assert writer.writes == 0
    now[0] += 0.5
    writer(0.2)                                 # a second later and 10 % further: one write
    writer(0.1)                                 # backwards: ignored
    writer(float("nan"))                        # nonsense: ignored
    run.refresh_from_db()
    assert writer.writes == 1 and run.progress == 0.2 and writer.value == 0.2
    now[0] += 5
    writer(0.205)                               # less than a step: no write
    writer(7.0)                                 # clamped to 1
    run.refresh_from_db()
    assert writer.writes == 2 and run.progress == 1.0


def test_progress_does_not_overwrite_a_finished_run():
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.FAILED, progress=0.3)
    writer = tasks_backtest.ProgressWriter(run.pk, interval=0, step=0)
    writer(0.9)
    run.refresh_from_db()
    assert run.progress == 0.3


def test_stalled_runs_are_failed_before_the_next_run(settings):
    settings.QUANTWEB_BACKTEST_STALE_SECONDS = 60
    old = timezone.now() - timedelta(minutes=5)
    stalled = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.RUNNING, started_at=old,
                                         heartbeat_at=old)
    alive = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.RUNNING,
                                       started_at=old, heartbeat_at=timezone.now())
    assert stalled.is_stalled() and not alive.is_stalled()
    assert tasks_backtest.fail_stalled_runs() == 1
    stalled.refresh_from_db()
    alive.refresh_from_db()
    assert stalled.status == "FAILED" and "worker running it stopped" in stalled.error
    assert alive.status == "RUNNING"


# -- walk-forward through the worker --------------------------------------------------------------------

def test_a_walk_forward_run_reports_every_window_and_the_chained_out_of_sample(
        op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue, fast=5, slow=20,
                         wf_train_days=20, wf_test_days=10, start="2024-01-01", end="2024-03-01")
    assert run.status == "DONE", run.error
    wf = run.result["walk_forward"]
    assert (wf["train_seconds"], wf["test_seconds"], wf["step_seconds"], wf["anchored"]) == (
        20 * 86400, 10 * 86400, 10 * 86400, False)
    assert [w["test_start"] for w in wf["windows"]] == ["2024-01-21T00:00:00Z", "2024-01-31T00:00:00Z",
                                                       "2024-02-10T00:00:00Z", "2024-02-20T00:00:00Z"]
    assert wf["tested_windows"] == 4
    report = run.result["report"]
    assert report["bars"] == 40 * 24 and run.result["bars"] == 40 * 24
    growth = np.prod([1 + w["out_of_sample"]["total_return"] for w in wf["windows"]])
    assert run.result["final_equity"] == pytest.approx(1e6 * growth, rel=1e-9)
    # each test window is exactly a separate backtest of that window
    one = RUNNERS["sma_cross"]({"fast": 5, "slow": 20, "fee": 0.001, "cash": 1e6, "start": "2024-01-31T00:00:00Z",
                                "end": "2024-02-10T00:00:00Z", "data": [str(data_dir / CANDLES)],
                                "no_trade_list": True})
    assert wf["windows"][1]["out_of_sample"]["total_return"] == one["report"]["total_return"]
    assert {t["window"] for t in run.result["trade_list"]} <= {0, 1, 2, 3}
    assert run.result["params"] == {"fast": 5, "slow": 20, "fee": 0.001, "cash": 1e6}


def test_a_walk_forward_without_a_period_takes_the_data_span(op_client, data_dir, queue,
                                                             django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue, fast=5, slow=20,
                         wf_train_days=15, wf_test_days=15, wf_anchored=True)
    assert run.status == "DONE", run.error
    wf = run.result["walk_forward"]
    assert [w["train_start"] for w in wf["windows"]] == ["2024-01-01T00:00:00Z"] * 3
    assert wf["full_period"]["bars"] == HOURS


# -- reading runs ----------------------------------------------------------------------------------------

def test_list_filters_and_leaves_the_result_out(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    done = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    queued = BacktestRun.objects.create(strategy="sma_cross", options={"source": "files", "data_files": [CANDLES]})
    rows = op_client.get("/api/backtests/").json()["results"]
    assert [r["id"] for r in rows] == [queued.pk, done.pk]
    assert "result" not in rows[0]
    assert rows[1]["summary"]["trades"] == done.result["trades"]
    assert rows[0]["summary"] is None
    only_done = op_client.get("/api/backtests/?status=DONE").json()["results"]
    assert [r["id"] for r in only_done] == [done.pk]
    assert op_client.get("/api/backtests/?strategy=sma_cross").json()["count"] == 2
    assert op_client.get("/api/backtests/?status=SLEEPING").status_code == 400
    assert op_client.get("/api/backtests/?strategy=../x").status_code == 400
    assert op_client.get("/api/backtests/?colour=red").status_code == 400


def test_detail_has_progress_and_result(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    body = op_client.get(f"/api/backtests/{run.pk}/").json()
    assert body["status"] == "DONE" and body["progress"] == 1.0 and body["stalled"] is False
    assert body["result"]["final_equity"] == run.result["final_equity"]
    assert body["trades_csv"] == f"/api/backtests/{run.pk}/trades.csv"
    assert op_client.get("/api/backtests/999999/").status_code == 404


def test_the_trades_csv_is_the_trade_list(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    response = op_client.get(f"/api/backtests/{run.pk}/trades.csv")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="backtest-{run.pk}-trades.csv"'
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    trades = run.result["trade_list"]
    assert len(rows) == len(trades) > 3
    assert list(rows[0]) == ["entry_time", "exit_time", "entry_bar", "exit_bar", "entry_price", "exit_price",
                             "qty", "fees", "pnl", "return", "is_open"]
    for row, trade in zip(rows, trades, strict=True):
        assert row["entry_time"] == trade["entry_time"]
        assert float(row["pnl"]) == trade["pnl"] and float(row["qty"]) == trade["qty"]
        assert row["is_open"] == ("true" if trade["is_open"] else "false")


def test_the_csv_waits_for_the_run_and_defuses_formulas(op_client):
    queued = BacktestRun.objects.create(strategy="sma_cross")
    response = op_client.get(f"/api/backtests/{queued.pk}/trades.csv")
    assert response.status_code == 409 and "QUEUED" in response.json()["detail"]
    assert op_client.get("/api/backtests/999999/trades.csv").status_code == 404
    done = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.DONE, result={"trade_list": [
        {"symbol": "=HYPERLINK(\"http://x\")", "entry_time": "2024-01-01T00:00:00Z", "pnl": -5.0,
         "return": None, "tags": {"b": 1}}]})
    text = op_client.get(f"/api/backtests/{done.pk}/trades.csv").content.decode()
    assert list(csv.reader(io.StringIO(text))) == [
        ["symbol", "entry_time", "pnl", "return", "tags"],
        ["'=HYPERLINK(\"http://x\")", "2024-01-01T00:00:00Z", "-5.0", "", '{"b": 1}'],
    ]


# -- pages -------------------------------------------------------------------------------------------------

def test_the_strategy_page_has_the_form_and_the_latest_runs(op_client, data_dir):
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.RUNNING, progress=0.42,
                                     options={"source": "files", "data_files": [CANDLES]})
    html = op_client.get(reverse("strategy")).content.decode()
    assert 'id="backtest-form"' in html and 'action="/strategy/backtests/"' in html
    assert f'<option value="{CANDLES}"' in html
    assert "SECRET" not in html and "originals/" not in html
    assert f'data-poll="/api/backtests/{run.pk}/"' in html
    assert '<progress max="1" value="0.42"' in html
    assert "js/backtest.js" in html


def test_a_viewer_sees_runs_but_no_form(client, viewer, data_dir):
    client.force_login(viewer)
    html = client.get(reverse("strategy")).content.decode()
    assert 'id="backtest-form"' not in html and "Only operators may run backtests" in html


def test_the_page_form_queues_a_run_and_opens_its_page(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    form = {"strategy": "sma_cross", "source": "files", "data_files": CANDLES, "fast": "10", "slow": "30",
            "fee": "0.001", "cash": "1000000", "start": "2024-01-02T00:00", "end": "", "wf_train_days": "",
            "wf_test_days": "", "wf_step_days": "", "sim_seed": "7", "sim_markets": "30", "sim_days": "7",
            "profile": "STANDARD"}
    with django_capture_on_commit_callbacks(execute=True):
        response = op_client.post(reverse("backtests"), form)
    run = BacktestRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/strategy/backtests/{run.pk}/"
    assert run.options["start"] == "2024-01-02T00:00:00Z" and run.options["end"] is None
    assert run.options["walk_forward"] is None and "sim" not in run.options and "profile" not in run.options
    assert len(queue) == 1
    page = op_client.get(response["Location"]).content.decode()
    assert f'data-poll="/api/backtests/{run.pk}/"' in page and "Waiting for a worker" in page


def test_the_page_form_shows_field_errors_and_refuses_paths(op_client, data_dir, queue):
    form = {"strategy": "sma_cross", "source": "files", "data_files": "../private/binance_SECRET-USDT_1h.csv",
            "fast": "30", "slow": "10", "fee": "0.001", "cash": "1000000"}
    response = op_client.post(reverse("backtests"), form)
    assert response.status_code == 400
    html = response.content.decode()
    assert "not one of the data files offered" in html and "slow must be greater than fast" in html
    assert not BacktestRun.objects.exists() and queue == []


def test_a_viewer_cannot_post_the_form(client, viewer, data_dir, queue):
    client.force_login(viewer)
    response = client.post(reverse("backtests"), {"strategy": "sma_cross", "data_files": CANDLES, "fast": "5",
                                                   "slow": "20"})
    assert response.status_code == 403 and not BacktestRun.objects.exists()


def test_the_result_page_shows_report_charts_trades_and_the_csv_link(op_client, data_dir, queue,
                                                                     django_capture_on_commit_callbacks):
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue)
    response = op_client.get(reverse("backtest-detail", args=[run.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    report = run.result["report"]
    assert f"{report['total_return'] * 100:.2f}%" in html and f"{report['max_drawdown'] * 100:.2f}%" in html
    assert "Sharpe" in html and "profit factor" in html and "average holding time" in html
    assert 'id="bt-equity-chart"' in html and 'id="bt-drawdown-chart"' in html
    assert 'id="backtest-chart-data"' in html and "lightweight-charts.standalone.production.js" in html
    assert f'href="/api/backtests/{run.pk}/trades.csv"' in html
    assert html.count("<tr>", html.index('id="backtest-trades"')) >= run.result["trades"]
    assert "data-poll" not in html


def test_the_result_page_of_a_failed_run_shows_why(op_client):
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.FAILED,
                                     error="1 valid bars; --slow 30 needs at least 32 for one trade",
                                     options={"source": "files", "data_files": [CANDLES]})
    html = op_client.get(reverse("backtest-detail", args=[run.pk])).content.decode()
    assert "--slow 30 needs at least 32" in html and "bt-equity-chart" not in html


def test_the_result_page_renders_breakdowns_and_walk_forward(op_client):
    result = {"report": {"total_return": 0.1}, "by_regime": {"TREND": {"trades": 3, "pnl": 12.5}},
              "breakdowns": {"module": [{"module": "momentum", "trades": 2}]},
              "walk_forward": {"train_seconds": 86400, "test_seconds": 86400, "step_seconds": 86400,
                               "anchored": False, "tested_windows": 1, "efficiency": 0.5, "in_sample_mean": {},
                               "windows": [{"index": 0, "train_start": "a", "train_end": "b", "test_start": "b",
                                            "test_end": "c", "in_sample": {"error": "too short"},
                                            "out_of_sample": {"total_return": 0.02}}]},
              "equity": [[1, 100.0], [2, 90.0]], "drawdown": [[1, 0.0], [2, -10.0]], "trade_list": []}
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.DONE, result=result)
    html = op_client.get(reverse("backtest-detail", args=[run.pk])).content.decode()
    assert "By regime" in html and "TREND" in html and "By module" in html and "momentum" in html
    assert 'id="walk-forward"' in html and "too short" in html and "2.00%" in html and "0.50" in html


def test_the_backtests_page_lists_runs(op_client, data_dir):
    BacktestRun.objects.create(strategy="sma_cross", options={"source": "sim", "sim": {"seed": 7, "markets": 30,
                                                                                          "days": 7}})
    html = op_client.get(reverse("backtests")).content.decode()
    assert "sim seed 7, 30 markets, 7 d" in html and 'id="backtest-form"' in html


def test_the_admin_lists_runs_read_only(client, data_dir):
    from tests.factories import staff_user

    client.force_login(staff_user(username="boss"))
    run = BacktestRun.objects.create(strategy="sma_cross", status=BacktestStatus.DONE, result={"report": {}})
    assert client.get("/admin/strategies/backtestrun/").status_code == 200
    page = client.get(f"/admin/strategies/backtestrun/{run.pk}/change/")
    assert page.status_code == 200 and "Save" not in page.content.decode()


def test_runner_options_carry_every_command_option(data_dir):
    options = tasks_backtest.runner_options("sma_cross", {"fee": 0.001, "cash": 5.0, "data_files": [CANDLES],
                                                          "fast": 3, "slow": 9, "start": None, "end": None})
    assert options["data"] == [str((data_dir / CANDLES).resolve())]
    assert options["indent"] == 2 and options["no_trade_list"] is False
    assert "verbosity" not in options and "settings" not in options
    with pytest.raises(BacktestInputError, match="not one of the data files offered"):
        tasks_backtest.runner_options("sma_cross", {"fee": 0.0, "cash": 1.0, "data_files": ["../x_1h.csv"]})


# -- the pipeline runner ----------------------------------------------------------------------------------

@pytest.fixture
def minute_files(data_dir):
    """Two 1-minute markets, long enough for the pipeline's 1,000-bar scan window plus a day."""
    for k, symbol in enumerate(("KRW-AAA", "KRW-BBB")):
        write_candles(data_dir / "set" / f"upbit_{symbol}_1m.csv", n=1000 + 1440, seed=20 + k, freq="1min")
    return ["set/upbit_KRW-AAA_1m.csv", "set/upbit_KRW-BBB_1m.csv"]


def pipeline_request(**overrides):
    body = {"strategy": "pipeline", "source": "sim", "sim_seed": 7, "sim_markets": 10, "sim_days": 0.5,
            "profile": "CRAZY", "fee": 0.0005, "cash": 1e7}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


def test_a_pipeline_request_is_stored_with_its_profile_version(op_client, data_dir, queue):
    response = post_json(op_client, pipeline_request(latency_ms=200, participation=0.2, spread_bps=8))
    assert response.status_code == 201, response.content
    options = BacktestRun.objects.get().options
    assert options["source"] == "sim" and options["sim"] == {"seed": 7, "markets": 10, "days": 0.5}
    assert options["profile"] == "CRAZY" and options["profile_version"] == 1
    assert (options["latency_ms"], options["participation"], options["spread_bps"]) == (200, 0.2, 8.0)
    default = post_json(op_client, pipeline_request(profile=DROP, sim_days=DROP)).json()["options"]
    assert default["profile"] == "STANDARD" and default["sim"]["days"] == 3.0


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"fee": 0}, "fee", "must be above 0"),
    ({"fast": 5}, "fast", "only for sma_cross"),
    ({"wf_train_days": 1, "wf_test_days": 1}, "source", "walk-forward needs replayed files"),
    ({"sim_markets": 1000}, "sim_markets", "less than or equal to 300"),
    ({"data_files": [CANDLES]}, "data_files", "data files are for the files source"),
    ({"profile": "YOLO"}, "profile", "is not a valid choice"),
    ({"participation": 0}, "participation", "greater than or equal to 0.001"),
])
def test_bad_pipeline_input_is_a_400(op_client, data_dir, queue, overrides, field, message):
    response = post_json(op_client, pipeline_request(**overrides))
    assert response.status_code == 400, response.content
    assert any(message in m for m in response.json()[field]), response.json()


def test_pipeline_takes_files_of_the_timeframes_it_runs_on(op_client, data_dir, queue):
    """1m to 1h files are accepted (docs/backtesting.md section 11), longer bars are a 400."""
    from strategies.engine.backtest.bars import BAR_MINUTES

    assert svc.STRATEGIES["pipeline"]["timeframes"] == tuple(
        f"{m}m" if m < 60 else "1h" for m in BAR_MINUTES)
    files_only = {"source": "files", "sim_seed": DROP, "sim_markets": DROP, "sim_days": DROP}
    ok = post_json(op_client, pipeline_request(data_files=[CANDLES, "set/binance_OTHER-USDT_1h.csv"], **files_only))
    assert ok.status_code == 201, ok.content
    write_candles(data_dir / "set" / "binance_TEST-USDT_4h.csv", n=400, freq="4h")
    response = post_json(op_client, pipeline_request(data_files=["set/binance_TEST-USDT_4h.csv"], **files_only))
    assert response.status_code == 400, response.content
    assert any("has 4h candles; pipeline runs on 1m, 3m, 5m, 15m, 30m, 1h candles" in m
               for m in response.json()["data_files"]), response.json()


def test_costs_are_refused_for_the_reference_strategy(op_client, data_dir, queue):
    response = post_json(op_client, sma_request(latency_ms=100, profile="STANDARD"))
    assert response.status_code == 400
    assert set(response.json()) == {"latency_ms", "profile"}


def test_a_pipeline_run_on_the_simulator_end_to_end(op_client, data_dir, queue, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run_id = post_json(op_client, pipeline_request()).json()["id"]
    tasks_backtest.run_backtest(run_id)
    run = BacktestRun.objects.get(pk=run_id)
    assert run.status == "DONE", run.error
    result = run.result
    assert result["strategy"] == "pipeline" and result["data"]["sim_markets"] == 10
    assert result["params"]["profile_source"] == "stored"
    assert result["bars"] == 720 == result["equity_points"] == len(result["equity"])
    assert result["trades"] == len(result["trade_list"]) > 0
    assert set(result["by_regime"]) and set(result["by_strategy"])
    page = op_client.get(reverse("backtest-detail", args=[run.pk])).content.decode()
    assert "By strategy" in page and "By regime" in page and "Exit reasons" in page
    # the evidence of signal quality: summary and calibration tables (issue 14 part 3)
    assert {"calibration", "buy_and_hold", "random_baseline", "excess"} <= set(result["evidence"])
    assert "Signal quality" in page and "percentile within random draws" in page
    assert "Calibration: ENTER proposals" in page and "mean net 240 min" in page
    rows = list(csv.DictReader(io.StringIO(op_client.get(f"/api/backtests/{run.pk}/trades.csv").content.decode())))
    assert len(rows) == result["trades"]
    assert {"symbol", "strategy", "regime", "exit_reason", "entry_value"} <= set(rows[0])
    assert rows[0]["symbol"] == result["trade_list"][0]["symbol"]


def test_a_pipeline_walk_forward_on_files(op_client, data_dir, minute_files, queue,
                                          django_capture_on_commit_callbacks):
    """Windows start after the scan's warm-up; each window's run warms up on the bars before it."""
    run = submit_and_run(op_client, django_capture_on_commit_callbacks, queue, strategy="pipeline",
                         data_files=minute_files, fast=DROP, slow=DROP, fee=0.0005, cash=1e7, profile="CRAZY",
                         start="2024-01-01T16:40:00Z", end="2024-01-02T16:40:00Z",
                         wf_train_days=0.25, wf_test_days=0.25)
    assert run.status == "DONE", run.error
    wf = run.result["walk_forward"]
    assert len(wf["windows"]) == 3 and wf["tested_windows"] == 3
    assert run.result["report"]["bars"] == 3 * 360
    assert all("error" not in w["in_sample"] for w in wf["windows"])
    assert run.result["data"]["markets"] == ["KRW-AAA", "KRW-BBB"]
    assert run.result["data"]["files"] == minute_files      # catalogue ids, not server paths
