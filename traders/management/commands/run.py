"""``manage.py run``: the web server (daphne, ASGI), the trading cluster and the slow cluster
(django-q2) as three processes under one command, plus the database watchdog (a thread of this
process, [AL-3]). Ctrl-C (SIGINT) or SIGTERM stops them all cleanly; if one dies, the others
are stopped too and the exit code says so.

The two clusters share one broker (the ORM broker on the embedded defaults, Redis with
``REDIS_URL``) and differ by queue: ticks, intents and alert drains on the trading queue,
backtests, tuning and the self-test on ``QUANTWEB_SLOW_QUEUE`` (see ``worker_env``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand


def worker_env(queue: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``qcluster`` process for ``queue`` ("trading" or "slow").

    django-q2 picks the cluster from ``Q_CLUSTER_NAME``: the site name makes the trading (default)
    cluster, the slow queue's name the slow one (its ``ALT_CLUSTERS`` entry). ``QUANTWEB_Q_NAME``
    keeps the site name (settings.py derives the queues from it) in both."""
    env = dict(os.environ if base is None else base)
    env["QUANTWEB_Q_NAME"] = settings.QUANTWEB_Q_NAME
    env["QUANTWEB_SLOW_QUEUE"] = settings.QUANTWEB_SLOW_QUEUE
    if queue == "trading":
        env["Q_CLUSTER_NAME"] = settings.QUANTWEB_TRADING_QUEUE
    elif queue == "slow":
        env["Q_CLUSTER_NAME"] = settings.QUANTWEB_SLOW_QUEUE
    else:
        raise ValueError(f"unknown queue {queue!r} (trading or slow)")
    return env


class Command(BaseCommand):
    help = "Run the web server, the trading and slow worker clusters and the database watchdog together."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="web only (workers run elsewhere)")
        parser.add_argument("--no-slow-worker", action="store_true",
                            help="no slow cluster here (backtests, tuning and the self-test run elsewhere)")

    def handle(self, *args, **options):
        env = dict(os.environ)
        python = sys.executable
        procs: dict[str, subprocess.Popen] = {}
        procs["web"] = subprocess.Popen(
            [python, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]), "quantweb.asgi:application"],
            env=env,
        )
        watchdog_stop = threading.Event()
        if not options["no_worker"]:
            procs["worker"] = subprocess.Popen([python, "manage.py", "qcluster"], env=worker_env("trading", env))
            if not options["no_slow_worker"]:
                procs["slow-worker"] = subprocess.Popen([python, "manage.py", "qcluster"], env=worker_env("slow", env))
            from traders.runbook import watch_database

            threading.Thread(target=watch_database, args=(watchdog_stop,), name="db-watchdog", daemon=True).start()
        parts = ["web"] + [name for name in ("worker", "slow-worker") if name in procs]
        self.stdout.write(self.style.SUCCESS(
            f"quantweb running at http://{options['host']}:{options['port']}/ "
            f"({' + '.join(parts)}; queues {settings.QUANTWEB_TRADING_QUEUE}"
            f"{' and ' + settings.QUANTWEB_SLOW_QUEUE if 'slow-worker' in procs else ''}); Ctrl-C stops."
        ))
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            if stopping:
                return
            stopping = True
            watchdog_stop.set()
            for proc in procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while True:
                for name, proc in procs.items():
                    code = proc.poll()
                    if code is not None and not stopping:
                        self.stderr.write(f"{name} exited with code {code}; stopping the rest")
                        exit_code = code or 1
                        stop()
                if stopping:
                    break
                time.sleep(0.5)
            deadline = time.monotonic() + 20
            for proc in procs.values():
                try:
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        self.stdout.write("stopped")
        if exit_code:
            sys.exit(exit_code)
