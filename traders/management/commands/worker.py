"""``manage.py worker --queue trading|slow``: one django-q2 cluster for one queue (production;
``manage.py run`` starts both itself).

The process is replaced by ``manage.py qcluster`` with the environment django-q2 needs to pick
the queue (``Q_CLUSTER_NAME``, see ``run.worker_env``), so signals reach the cluster directly.

    python manage.py worker                 # the trading cluster: dispatcher, ticks, intents, alerts
    python manage.py worker --queue slow    # backtests, tuning, the daily self-test
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from traders.management.commands.run import worker_env


class Command(BaseCommand):
    help = "Start the django-q2 cluster of one queue: trading (default) or slow."

    def add_arguments(self, parser):
        parser.add_argument("--queue", choices=["trading", "slow"], default="trading")

    def handle(self, *args, **options):
        env = worker_env(options["queue"])
        self.stdout.write(f"starting the {options['queue']} cluster (queue {env['Q_CLUSTER_NAME']})")
        self.stdout.flush()
        manage = str(settings.BASE_DIR / "manage.py")
        os.execve(sys.executable, [sys.executable, manage, "qcluster"], env)
