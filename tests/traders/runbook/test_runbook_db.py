"""[AL-3] Database unreachable: the worker places no order, does not crash, alerts through a path
that needs no database (a local fake Telegram server), backs off, and records the outage and
alerts the recovery when the database answers again.

The database is made unavailable in a controlled way: a ``connection.execute_wrapper`` that
raises ``OperationalError`` for every query, as a dropped server connection does. The tests run
with ``transaction=True`` so a tick's own transaction is the outermost one, as in a worker.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager

import pytest
from django.db import OperationalError, connection

from execution.marketdata import latest_bar
from execution.models import Order
from tests.traders.runbook.helpers import (
    PATH,
    T0,
    eager_trader,
    wait_for_messages,
)
from traders import alerts, runbook, tasks
from traders.models import Event
from traders.models_alerts import AlertOutbox

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class DeadDatabase:
    """Every query fails like a dropped server connection once ``down`` is set; ``down_on``
    takes it down at the first query containing that text (the database dies mid-tick)."""

    def __init__(self, *, down: bool = True, down_on: str | None = None) -> None:
        self.down = down
        self.down_on = down_on
        self.failed = 0
        self.triggered_by: str | None = None

    def __call__(self, execute, sql, params, many, context):
        if not self.down and self.down_on and self.down_on in sql:
            self.down = True
            self.triggered_by = sql[:80]
        if self.down:
            self.failed += 1
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)


@contextmanager
def database(dead: DeadDatabase):
    with connection.execute_wrapper(dead):
        yield dead


@pytest.fixture
def market(sim):
    tasks.collect_market_data(T0)
    return T0


def test_database_dying_at_the_order_insert_places_no_order_and_alerts_without_it(channel, telegram, market,
                                                                                runbook_dir):
    trader = eager_trader()
    alerts.remember_channel()
    now = market
    dead = DeadDatabase(down=False, down_on='INSERT INTO "execution_order"')
    outcome = None
    for _ in range(30):   # tick bar after bar until one tries to record an order
        now += 60
        tasks.collect_market_data(now)
        bar = latest_bar("sim")
        with database(dead):
            outcome = tasks.tick_trader(trader.pk, bar)
        if dead.down:
            break
    assert dead.triggered_by is not None, "no tick tried to place an order"
    assert outcome.startswith("db-unreachable: no order placed")
    assert Order.objects.filter(trader=trader).count() == 0       # the tick's transaction rolled back
    trader.refresh_from_db()
    assert trader.last_tick_ts is None or trader.last_tick_ts < bar   # the bar was not consumed

    outage = json.loads((runbook_dir / "db-outage.json").read_text())
    assert outage["failures"] >= 1 and "server closed the connection" in outage["error"]
    (message,) = wait_for_messages(telegram, 1)
    assert message.startswith("[CRITICAL] platform · DB_UNREACHABLE · ")
    assert "No new orders are placed" in message
    assert not AlertOutbox.objects.exists()

    # The database is back: the same bar's tick places the order the outage prevented, and the
    # recovery is reported once.
    assert tasks.tick_trader(trader.pk, bar).startswith("ok:")
    assert Order.objects.filter(trader=trader, bar_ts=bar).exists()
    assert not (runbook_dir / "db-outage.json").exists()
    messages = wait_for_messages(telegram, 2)
    assert len(messages) == 2 and messages[1].startswith("[WARN] platform · DB_RECOVERED · ")
    assert "ticks that fell due during the outage were skipped, not replayed" in messages[1]
    assert list(Event.objects.filter(kind__startswith="DB_").order_by("id").values_list("kind", "level")) == [
        ("DB_UNREACHABLE", "CRITICAL"), ("DB_RECOVERED", "WARN")]
    assert not AlertOutbox.objects.filter(kind__startswith="DB_").exists()   # sent directly, not twice


def test_dispatcher_and_ticks_return_instead_of_raising_and_alert_once(channel, telegram, market, settings,
                                                                        monkeypatch):
    trader = eager_trader()
    alerts.remember_channel()
    settings.QUANTWEB_DB_RETRY_SECONDS = 0.5
    sleeps = []
    monkeypatch.setattr(runbook.time, "sleep", lambda s: sleeps.append(s))
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda *a, **k: queued.append(a[0]))
    bar = latest_bar("sim")
    with database(DeadDatabase()) as dead:
        summary = tasks.dispatch(now=market + 60)
        assert summary["db"] == "unreachable"
        for _ in range(3):
            assert tasks.tick_trader(trader.pk, bar).startswith("db-unreachable")
        assert tasks.selftest().startswith("db-unreachable")
    assert dead.failed >= 5
    assert sleeps and all(s <= 0.5 for s in sleeps)   # the dispatcher waited with back-off within its budget
    assert queued == []                                # nothing was enqueued while the database was down
    messages = wait_for_messages(telegram, 1)
    assert len(messages) == 1 and "DB_UNREACHABLE" in messages[0]   # one alert for the host, not one per task

    summary = tasks.dispatch(now=market + 60)
    assert summary["ticks_queued"] == 1 and "db" not in summary
    assert wait_for_messages(telegram, 2)[1].startswith("[WARN] platform · DB_RECOVERED")


def test_a_query_error_with_the_database_up_is_not_an_outage(channel, telegram, runbook_dir, market):
    trader = eager_trader()

    def locked(execute, sql, params, many, context):
        if 'FROM "traders_trader"' in sql:
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(locked), pytest.raises(OperationalError):
        tasks.tick_trader(trader.pk, latest_bar("sim"))
    assert not (runbook_dir / "db-outage.json").exists()
    assert wait_for_messages(telegram, 1, timeout=0.3) == []


class Steps(threading.Event):
    """A stop event that records the watchdog's waits and stops it after ``n`` of them."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.waits: list[float] = []

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if len(self.waits) >= self.n:
            self.set()
        return self.is_set()


def test_watchdog_backs_off_while_down_and_reports_the_recovery(channel, telegram, runbook_dir, db):
    alerts.remember_channel()
    stop = Steps(5)
    with database(DeadDatabase()):
        runbook.watch_database(stop, probe_seconds=10, max_seconds=60)
    assert stop.waits == [20, 40, 60, 60, 60]
    assert len(wait_for_messages(telegram, 1)) == 1
    assert json.loads((runbook_dir / "db-outage.json").read_text())["failures"] == 5

    stop = Steps(2)
    runbook.watch_database(stop, probe_seconds=10, max_seconds=60)
    assert stop.waits == [10, 10]
    messages = wait_for_messages(telegram, 2)
    assert len(messages) == 2 and "DB_RECOVERED" in messages[1] and "5 failed checks" in messages[1]


def test_direct_alerts_are_deduplicated_per_host_and_rate_limited(channel, telegram, db):
    alerts.remember_channel()
    threads = [alerts.send_direct("CRITICAL", "DB_UNREACHABLE", "down", dedup_key="outage-1", now=T0)
               for _ in range(3)]
    assert sum(t is not None for t in threads) == 1
    alerts.forget_channel()           # another process of the same host: the stamp file still says sent
    alerts.remember_channel()
    assert alerts.send_direct("CRITICAL", "DB_UNREACHABLE", "down", dedup_key="outage-1", now=T0) is None
    sent = [alerts.send_direct("WARN", "X", f"m{i}", now=T0 + i) for i in range(alerts.DIRECT_MAX_PER_MINUTE + 3)]
    assert sum(t is not None for t in sent) == alerts.DIRECT_MAX_PER_MINUTE   # then the per-process limit
    for thread in [*threads, *sent]:
        if thread is not None:
            thread.join(5)
    assert len(telegram.calls("POST", PATH)) == 1 + alerts.DIRECT_MAX_PER_MINUTE
    assert sum(e["detail"] == "direct rate limit reached" for e in alerts.direct_log) == 3


def test_direct_alert_never_blocks_and_keeps_the_token_out_of_logs(channel, telegram, db, caplog):
    from tests.execution.fake_http import Reply

    telegram.add("POST", PATH, Reply({"ok": True}, delay=1.5))
    alerts.remember_channel()
    import time

    started = time.perf_counter()
    thread = alerts.send_direct("CRITICAL", "DB_UNREACHABLE", "down", dedup_key="slow", now=T0)
    assert time.perf_counter() - started < 0.5     # the caller does not wait for Telegram
    thread.join(5)
    assert alerts.direct_log[-1]["outcome"] == "sent"
    secret = channel.token.split(":", 1)[1]
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_without_a_channel_the_direct_path_only_logs(db, settings):
    settings.TELEGRAM_BOT_TOKEN = settings.TELEGRAM_CHAT_ID = ""
    alerts.remember_channel()
    assert alerts.send_direct("CRITICAL", "DB_UNREACHABLE", "down", dedup_key="k") is None
    assert alerts.direct_log[-1]["outcome"] == "skipped" and alerts.direct_log[-1]["detail"] == "no alert channel"
