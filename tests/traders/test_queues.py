"""Separate queues [issue 6 item 1]: a slow job (backtest, tuning, the self-test) goes to the slow
cluster's queue and is never taken by the trading cluster, so it cannot delay a tick.

The broker is the one the settings select (the ORM broker on the embedded defaults, Redis with
``REDIS_URL``); the trading cluster's own pusher (django-q2's ``pusher``) is run in-process.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django_q.brokers import get_broker
from django_q.cluster import pusher
from django_q.conf import Conf
from django_q.models import Schedule
from django_q.tasks import async_task

from traders import tasks
from traders.management.commands import run as run_command
from traders.management.commands.run import worker_env

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[2]


def pull(broker, rounds: int = 20) -> list[dict]:
    """What one cluster's pusher takes from its broker (the tasks its workers would run)."""
    taken: queue_module.Queue = queue_module.Queue()
    stop = multiprocessing.Event()
    stop.set()                                  # one dequeue per call
    for _ in range(rounds):
        if not broker.queue_size():
            break
        pusher(taken, stop, broker=broker)
    out = []
    while not taken.empty():
        out.append(taken.get_nowait())
    return out


@pytest.fixture
def brokers():
    trading, slow = get_broker(), get_broker(settings.QUANTWEB_SLOW_QUEUE)
    for broker in (trading, slow):   # with Redis, other tests' nudges may be waiting on the list
        broker.purge_queue()
    yield trading, slow
    for broker in (trading, slow):
        broker.purge_queue()


def test_the_test_process_is_the_trading_cluster():
    assert Conf.CLUSTER_NAME == Conf.PREFIX == settings.QUANTWEB_TRADING_QUEUE
    assert settings.QUANTWEB_SLOW_QUEUE != settings.QUANTWEB_TRADING_QUEUE
    assert settings.QUANTWEB_SLOW_QUEUE in settings.Q_CLUSTER["ALT_CLUSTERS"]


def test_a_slow_task_is_not_taken_by_the_trading_cluster(brokers):
    trading, slow = brokers
    slow_id = async_task("math.floor", 7.5, cluster=settings.QUANTWEB_SLOW_QUEUE, task_name="slow-backtest")
    tick_id = async_task("math.ceil", 7.5, task_name="tick-1-0")
    assert slow.queue_size() == 1

    taken = pull(trading)
    assert tick_id in [t["id"] for t in taken]
    assert slow_id not in [t["id"] for t in taken]
    assert all(t["cluster"] == settings.QUANTWEB_TRADING_QUEUE for t in taken)
    assert slow.queue_size() == 1                  # still waiting, untouched, for the slow cluster

    (job,) = pull(slow)
    assert (job["id"], job["func"], job["args"]) == (slow_id, "math.floor", (7.5,))


def test_enqueue_slow_forces_the_slow_queue(brokers):
    trading, slow = brokers
    task_id = tasks.enqueue_slow("math.floor", 1.5, cluster="somewhere-else", q_options={"timeout": 3600},
                                 task_name="tune")
    assert slow.queue_size() == 1 and trading.queue_size() == 0
    (job,) = pull(slow)
    assert (job["id"], job["name"], job["timeout"]) == (task_id, "tune", 3600)


def _cluster_conf(env: dict[str, str]) -> dict:
    code = ("import django, json; django.setup()\n"
            "from django_q.conf import Conf\n"
            "print(json.dumps({'cluster': Conf.CLUSTER_NAME, 'prefix': Conf.PREFIX, 'timeout': Conf.TIMEOUT,"
            " 'retry': Conf.RETRY, 'workers': Conf.WORKERS, 'attempts': Conf.MAX_ATTEMPTS}))\n")
    env = {**env, "DJANGO_SETTINGS_MODULE": "quantweb.settings_test"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_worker_env_selects_each_cluster_and_keeps_one_signing_prefix():
    base = {k: v for k, v in os.environ.items() if not k.startswith(("Q_", "QUANTWEB_Q", "QUANTWEB_SLOW"))}
    trading = _cluster_conf(worker_env("trading", base))
    slow = _cluster_conf(worker_env("slow", base))
    assert trading == {"cluster": "quantweb", "prefix": "quantweb", "timeout": 50, "retry": 120,
                       "workers": 2, "attempts": 1}
    assert slow == {"cluster": "quantweb-slow", "prefix": "quantweb", "timeout": 6 * 3600,
                    "retry": 6 * 3600 + 300, "workers": 1, "attempts": 1}
    # A site that names its cluster (as the browser test does for a shared Redis) gets its own pair.
    named = {**base, "Q_CLUSTER_NAME": "site-b"}
    assert _cluster_conf(named)["cluster"] == _cluster_conf(named)["prefix"] == "site-b"


def test_bootstrap_schedules_the_selftest_on_the_slow_cluster_daily_at_midnight_utc():
    call_command("bootstrap", verbosity=0)
    call_command("bootstrap", verbosity=0)             # idempotent
    dispatch = Schedule.objects.get(name="quantweb-dispatch")
    selftest = Schedule.objects.get(name="quantweb-selftest")
    assert Schedule.objects.count() == 4
    checkpoint = Schedule.objects.get(name="quantweb-audit-checkpoint")
    assert (checkpoint.func, checkpoint.schedule_type, checkpoint.minutes, checkpoint.cluster) == (
        "traders.audit.scheduled_checkpoint", Schedule.MINUTES, 10, None)
    learning = Schedule.objects.get(name="quantweb-learning")
    assert (learning.func, learning.schedule_type, learning.minutes, learning.cluster) == (
        "strategies.tasks_learning.learning_cycle", Schedule.MINUTES, 5, settings.QUANTWEB_SLOW_QUEUE)
    assert (dispatch.func, dispatch.schedule_type, dispatch.minutes, dispatch.cluster) == (
        "traders.tasks.dispatch", Schedule.MINUTES, 1, None)
    assert (selftest.func, selftest.schedule_type, selftest.cluster) == (
        "traders.tasks.selftest", Schedule.DAILY, settings.QUANTWEB_SLOW_QUEUE)
    due = selftest.next_run.astimezone(UTC)
    assert (due.hour, due.minute, due.second) == (0, 0, 0)
    assert timedelta(0) < due - datetime.now(UTC) <= timedelta(days=1)


# django-q2's scheduler closes the database connection it used; inside a test's transaction that
# would leave a closed connection behind on PostgreSQL, so this test commits for real.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_trading_clusters_scheduler_leaves_the_slow_schedule_to_the_slow_cluster(brokers):
    from django_q.scheduler import scheduler

    trading, slow = brokers
    call_command("bootstrap", verbosity=0)
    past = datetime.now(UTC) - timedelta(minutes=5)
    Schedule.objects.update(next_run=past)
    scheduler(broker=trading)
    assert Schedule.objects.get(name="quantweb-selftest").next_run == past      # not this cluster's
    assert Schedule.objects.get(name="quantweb-dispatch").next_run > past
    assert sorted(t["func"] for t in pull(trading)) == ["traders.audit.scheduled_checkpoint",
                                                        "traders.tasks.dispatch"]
    assert slow.queue_size() == 0


class FakeProcess:
    def __init__(self, args, env=None):
        self.args, self.env = args, env or {}
        self.signals = []

    def poll(self):
        return 0 if self.signals else None

    def send_signal(self, signum):
        self.signals.append(signum)

    def wait(self, timeout=None):
        return 0

    def kill(self):
        pass


def test_run_starts_web_trading_and_slow_clusters_and_the_watchdog(monkeypatch):
    started: list[FakeProcess] = []

    def popen(args, env=None):
        started.append(FakeProcess(args, env))
        return started[-1]

    watchdog, handlers = [], {}
    monkeypatch.setattr(run_command.subprocess, "Popen", popen)
    monkeypatch.setattr(run_command.signal, "signal", lambda signum, handler: handlers.setdefault(signum, handler))
    monkeypatch.setattr("traders.runbook.watch_database", lambda stop: watchdog.append(stop))
    # The supervisor's loop sleeps between checks: press Ctrl-C during the first one.
    monkeypatch.setattr(run_command.time, "sleep", lambda seconds: handlers[run_command.signal.SIGINT]())
    call_command("run", "--port", "8123")
    web, trading, slow = started
    assert web.args[1:3] == ["-m", "daphne"] and "8123" in web.args
    assert trading.args[-1] == slow.args[-1] == "qcluster"
    assert (trading.env["Q_CLUSTER_NAME"], trading.env["QUANTWEB_Q_NAME"]) == ("quantweb", "quantweb")
    assert (slow.env["Q_CLUSTER_NAME"], slow.env["QUANTWEB_Q_NAME"]) == ("quantweb-slow", "quantweb")
    assert all(proc.signals == [run_command.signal.SIGINT] for proc in started)   # Ctrl-C reached all three
    (stop,) = watchdog
    assert stop.is_set()                                                           # and the watchdog stopped
