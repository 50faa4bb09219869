"""[AL-3] The daily self-test: data freshness per exchange with running traders, recent ticks, a
test order through the sim adapter and the fill model (never a live venue, never a trader's
books), the alert channel (a local fake Telegram server); stored, alerted on failure, shown on
the CONFIG page and in /metrics, runnable as ``manage.py selftest``."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.template import Context, Template

from execution.marketdata import latest_bar
from execution.models import Order, SimMarketState
from tests.execution.fake_http import Reply
from tests.traders.runbook.helpers import (
    PATH,
    eager_trader,
    texts,
)
from traders import runbook, tasks
from traders.models import Event
from traders.models_alerts import AlertOutbox
from traders.models_runbook import SelfTestRun, SelfTestStatus
from traders.trading import run_tick

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(sim):
    """The sim exchange collected up to the wall clock and a running trader that just ticked."""
    now = time.time()
    tasks.collect_market_data(now)
    trader = eager_trader()
    assert run_tick(trader.pk, latest_bar("sim")).outcome == "ok"
    return trader, now


def statuses(run: SelfTestRun) -> dict[str, str]:
    return {c["name"]: c["status"] for c in run.checks}


def test_a_healthy_platform_passes_and_the_channel_gets_the_report(channel, telegram, live):
    trader, now = live
    state_before = SimMarketState.objects.get(name="sim").state
    orders_before = Order.objects.count()

    run = runbook.run_selftest(trigger="schedule", now=time.time())

    assert run.status == SelfTestStatus.PASSED and run.ok
    assert statuses(run) == {"data_freshness": "ok", "ticks": "ok", "sim_order": "ok", "alert_channel": "ok"}
    fresh = run.result_of("data_freshness")["data"]["exchanges"]["sim"]
    assert fresh["markets"] == 12 and 0 <= fresh["bar_age_s"] <= 300
    order = run.result_of("sim_order")["data"]
    assert order["buy"]["status"] == order["sell"]["status"] == "filled"
    assert order["buy"]["qty"] == order["sell"]["qty"] and Decimal(order["buy"]["fee"]) > 0
    assert Decimal(order["round_trip_cost"]) > 0 and order["cost_bps"] < 500
    assert Decimal(order["buy"]["avg_price"]) >= Decimal(order["best_ask"])
    # The test order never reached a trader's books, and the live simulation was not moved.
    assert Order.objects.count() == orders_before
    assert SimMarketState.objects.get(name="sim").state == state_before

    (message,) = texts(telegram)
    assert message.startswith("[INFO] platform · SELFTEST · ")
    assert "sim_order: ok" in message and "This message is the alert channel check." in message
    stored = SelfTestRun.objects.get()
    assert stored.finished_at is not None and stored.duration_ms is not None and stored.summary.startswith("passed")
    assert Event.objects.filter(kind="SELFTEST_PASSED", level="INFO").count() == 1


def test_stale_data_and_silent_traders_fail_it_with_a_critical_alert(channel, telegram, live):
    trader, now = live
    run = runbook.run_selftest(now=now + 3600)   # an hour later nothing was collected or ticked
    assert run.status == SelfTestStatus.FAILED
    assert statuses(run) == {"data_freshness": "failed", "ticks": "failed", "sim_order": "ok", "alert_channel": "ok"}
    assert "sim: newest bar" in run.result_of("data_freshness")["detail"]
    assert "alpha" in run.result_of("ticks")["detail"]
    event = Event.objects.get(kind="SELFTEST_FAILED")
    assert event.level == "CRITICAL" and "data_freshness" in event.message
    assert AlertOutbox.objects.filter(kind="SELFTEST_FAILED", level="CRITICAL").count() == 1
    assert texts(telegram)[0].startswith("[WARN] platform · SELFTEST · ")


def test_without_a_channel_the_alert_check_records_not_configured(telegram, live, settings):
    settings.TELEGRAM_BOT_TOKEN = settings.TELEGRAM_CHAT_ID = ""
    run = runbook.run_selftest()
    check = run.result_of("alert_channel")
    assert (check["status"], check["detail"], check["ok"]) == ("skipped", "not configured (no bot token or chat id)", True)
    assert run.ok and texts(telegram) == []


def test_a_broken_channel_fails_the_alert_check(channel, telegram, live):
    telegram.add("POST", PATH, Reply({"ok": False, "description": "Bad Gateway"}, status=502))
    run = runbook.run_selftest()
    check = run.result_of("alert_channel")
    assert check["status"] == "failed" and check["data"]["http_status"] == 502 and "HTTP 502" in check["detail"]
    assert run.status == SelfTestStatus.FAILED
    assert channel.token.split(":")[1] not in json.dumps(run.checks)


def test_without_running_traders_or_a_collected_sim_the_order_still_goes_through_a_fresh_simulator(sim):
    run = runbook.run_selftest(send_alert=False)
    assert statuses(run) == {"data_freshness": "skipped", "ticks": "skipped", "sim_order": "ok",
                             "alert_channel": "skipped"}
    assert run.result_of("sim_order")["data"]["source"].startswith("a fresh simulator")
    assert not SimMarketState.objects.exists()


def test_a_check_that_raises_is_a_failed_check_not_a_crash(live, monkeypatch):
    def broken(run_id):
        raise ValueError("fill model exploded")

    monkeypatch.setattr(runbook, "check_sim_order", broken)
    run = runbook.run_selftest(send_alert=False)
    assert run.result_of("sim_order") == {"name": "sim_order", "ok": False, "status": "failed",
                                          "detail": "raised ValueError: fill model exploded", "data": {}}
    assert run.status == SelfTestStatus.FAILED


def test_manage_py_selftest_prints_json_and_exits_non_zero_on_failure(live, capsys):
    call_command("selftest", "--no-alert")
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "passed" and [c["name"] for c in result["checks"]] == list(runbook.CHECK_NAMES)
    assert SelfTestRun.objects.get(pk=result["id"]).trigger == "manual"

    SimMarketState.objects.all().delete()
    from execution.models import MarketSnapshot

    MarketSnapshot.objects.all().delete()
    with pytest.raises(CommandError, match="self-test failed"):
        call_command("selftest", "--no-alert")


def test_the_scheduled_task_runs_it(live):
    assert tasks.selftest().startswith("passed")
    assert SelfTestRun.objects.get().trigger == "schedule"


def test_the_config_panel_and_the_metrics_show_the_last_result(channel, telegram, live):
    call_command("bootstrap", verbosity=0)
    page = Template("{% load runbook_tags %}{% selftest_panel %}").render(Context({}))
    assert "No self-test has run yet." in page and "next " in page

    run = runbook.run_selftest(now=time.time() + 3600)
    page = Template("{% load runbook_tags %}{% selftest_panel %}").render(Context({}))
    assert 'id="selftest-status">FAILED<' in page
    assert "data_freshness" in page and "sim: newest bar" in page

    lines = runbook.prometheus_lines()
    assert "quantweb_selftest_passed 0" in lines
    assert f"quantweb_selftest_last_run_timestamp_seconds {run.started_at.timestamp():.0f}" in lines
    assert 'quantweb_selftest_check_passed{check="data_freshness"} 0' in lines
    assert 'quantweb_selftest_check_passed{check="sim_order"} 1' in lines
