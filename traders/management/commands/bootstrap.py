"""Idempotent first-run setup: an admin account if none exists, the cache table, and the
django-q2 schedules (upserted by name, never duplicated)."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

SCHEDULES = [
    # name, function, minutes: the dispatcher ticks every running trader once per bar.
    ("quantweb-dispatch", "traders.tasks.dispatch", 1),
]


def sync_schedules() -> list[str]:
    from django_q.models import Schedule

    names = []
    for name, func, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name,
            defaults={"func": func, "schedule_type": Schedule.MINUTES, "minutes": minutes, "repeats": -1},
        )
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
