"""``manage.py run``: the web server (daphne, ASGI) and the worker cluster (django-q2) as two
processes under one command. Ctrl-C (SIGINT) or SIGTERM stops both cleanly; if either dies,
the other is stopped too and the exit code says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run the web server and the worker together (embedded defaults)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="web only (workers run elsewhere)")

    def handle(self, *args, **options):
        env = dict(os.environ)
        python = sys.executable
        procs: dict[str, subprocess.Popen] = {}
        procs["web"] = subprocess.Popen(
            [python, "-m", "daphne", "-b", options["host"], "-p", str(options["port"]), "quantweb.asgi:application"],
            env=env,
        )
        if not options["no_worker"]:
            procs["worker"] = subprocess.Popen([python, "manage.py", "qcluster"], env=env)
        self.stdout.write(self.style.SUCCESS(
            f"quantweb running at http://{options['host']}:{options['port']}/ "
            f"({'web + worker' if 'worker' in procs else 'web only'}); Ctrl-C stops."
        ))
        stopping = False

        def stop(signum=None, frame=None):
            nonlocal stopping
            if stopping:
                return
            stopping = True
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
