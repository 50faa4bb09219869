"""Idempotent first-run setup: an admin account if none exists, the cache table, and the
django-q2 schedules (upserted by name, never duplicated), the audit checkpoint's included."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

# name, function, schedule type, minutes, queue. The dispatcher ticks every running trader once
# per bar on the trading cluster; the self-test runs daily at 00:00 UTC on the slow cluster.
TRADING, SLOW = "trading", "slow"
SCHEDULES = [
    ("quantweb-dispatch", "traders.tasks.dispatch", "MINUTES", 1, TRADING),
    ("quantweb-selftest", "traders.tasks.selftest", "DAILY", None, SLOW),
    # labels, bandit, lifecycle promotions, drift check / auto-rollback [AI-1], [AI-4]..[AI-6]
    ("quantweb-learning", "strategies.tasks_learning.learning_cycle", "MINUTES", 5, SLOW),
    # signed (seq, hash) of the audit chain's tip [issue 21 #7]; a quick task, never queued
    # behind hours of backtests
    ("quantweb-audit-checkpoint", "traders.audit.scheduled_checkpoint", "MINUTES",
     "QUANTWEB_AUDIT_CHECKPOINT_MINUTES", TRADING),
]


def sync_schedules() -> list[str]:
    from django_q.models import Schedule

    from traders.runbook import next_midnight_utc

    names = []
    for name, func, kind, minutes, queue in SCHEDULES:
        schedule_type = getattr(Schedule, kind)
        # A null cluster is the trading (default) cluster's; a named one is only run by that cluster.
        cluster = settings.QUANTWEB_SLOW_QUEUE if queue == SLOW else None
        defaults = {"func": func, "schedule_type": schedule_type, "repeats": -1, "cluster": cluster}
        if isinstance(minutes, str):          # the name of a setting, read now (not at import)
            minutes = getattr(settings, minutes)
        if minutes is not None:
            defaults["minutes"] = minutes
        schedule, created = Schedule.objects.update_or_create(name=name, defaults=defaults)
        if schedule_type == Schedule.DAILY:
            # Daily at 00:00 UTC: keep a pending run that is already aligned, otherwise the next midnight.
            due = schedule.next_run
            aligned = due is not None and (due.hour, due.minute, due.second) == (0, 0, 0)
            if created or not aligned:
                schedule.next_run = next_midnight_utc()
                schedule.save(update_fields=["next_run"])
        names.append(name)
    return names


class Command(BaseCommand):
    help = "Create the admin account (QUANTWEB_ADMIN_PASSWORD or a generated one) and sync schedules."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("QUANTWEB_ADMIN_USER", "admin"))

    def handle(self, *args, **options):
        call_command("createcachetable", verbosity=0)
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = os.environ.get("QUANTWEB_ADMIN_PASSWORD")
            generated = not password
            password = password or secrets.token_urlsafe(12)
            User.objects.create_superuser(options["username"], "", password)
            if generated:
                # Printed once, to the operator's terminal only; never logged.
                self.stdout.write(self.style.WARNING(
                    f"Created admin account '{options['username']}' with password: {password}\n"
                    "It is shown only now. Set QUANTWEB_ADMIN_PASSWORD to choose your own."
                ))
            else:
                self.stdout.write(f"Created admin account '{options['username']}' (password from QUANTWEB_ADMIN_PASSWORD).")
        names = sync_schedules()
        self.stdout.write(f"Schedules in place: {', '.join(names)}")
