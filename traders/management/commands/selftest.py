"""``manage.py selftest``: run the daily self-test now [AL-3] and print its result as JSON.

The same checks as the 00:00 UTC schedule (``traders.runbook.run_selftest``): data freshness per
exchange with running traders, recent ticks, a test order on the sim exchange (never a live
venue) and the alert channel (a test message when one is configured). The result is stored
(shown on the CONFIG page and in /metrics); the exit code is 1 when a check failed.

    python manage.py selftest              # sends the test message when a channel is configured
    python manage.py selftest --no-alert   # everything but the message
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from traders.runbook import run_selftest


class Command(BaseCommand):
    help = "Run the self-test now: data freshness, ticks, a sim test order, the alert channel."

    def add_arguments(self, parser):
        parser.add_argument("--no-alert", action="store_true", help="do not send the test message")

    def handle(self, *args, **options):
        run = run_selftest(trigger="manual", send_alert=not options["no_alert"])
        self.stdout.write(json.dumps({
            "id": run.pk, "status": run.status, "started_at": run.started_at.isoformat(),
            "duration_ms": run.duration_ms,
            "checks": [{k: c[k] for k in ("name", "status", "detail")} for c in run.checks],
        }, indent=2))
        if not run.ok:
            raise CommandError(f"self-test failed: {run.summary}")
