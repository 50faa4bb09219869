"""``manage.py watchdog``: the database watchdog as its own process [AL-3].

``manage.py run`` runs it as a thread; a production host that starts its clusters with
``manage.py worker`` runs one watchdog beside them. It probes the database every
``QUANTWEB_DB_PROBE_SECONDS`` (back-off to ``QUANTWEB_DB_PROBE_MAX_SECONDS`` while it is down),
alerts without the database when it stops answering and records the outage when it is back.
Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from traders.runbook import watch_database


class Command(BaseCommand):
    help = "Probe the database, alert (without it) when it is unreachable, record the outage when it is back."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=None, help="seconds between probes while it answers")

    def handle(self, *args, **options):
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        self.stdout.write("database watchdog running; Ctrl-C stops")
        self.stdout.flush()
        watch_database(stop, probe_seconds=options["interval"])
        self.stdout.write("stopped")
