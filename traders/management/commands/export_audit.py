from datetime import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from traders.audit import export, filtered


def parse_when(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"not a date or datetime: {value!r} (use ISO 8601, e.g. 2026-11-21 or 2026-11-21T09:00Z)")
        parsed = datetime(day.year, day.month, day.day)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


class Command(BaseCommand):
    help = "Export the audit log as CSV or JSON Lines, filtered by time range, trader and kind."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["csv", "jsonl"], default="csv")
        parser.add_argument("--since", help="ISO date/datetime (inclusive)")
        parser.add_argument("--until", help="ISO date/datetime (exclusive)")
        parser.add_argument("--trader", type=int, help="trader id")
        parser.add_argument("--kind", help="audit kind, e.g. ORDER_CREATED")
        parser.add_argument("--output", "-o", help="file to write (default: stdout)")

    def handle(self, *args, **options):
        rows = filtered(
            since=parse_when(options["since"]) if options["since"] else None,
            until=parse_when(options["until"]) if options["until"] else None,
            trader_id=options["trader"],
            kind=options["kind"],
        ).iterator(chunk_size=2000)
        if options["output"]:
            with open(options["output"], "w", newline="", encoding="utf-8") as out:
                for chunk in export(rows, options["format"]):
                    out.write(chunk)
            return
        for chunk in export(rows, options["format"]):
            self.stdout.write(chunk, ending="")
