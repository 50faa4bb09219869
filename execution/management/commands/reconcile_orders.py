"""``manage.py reconcile_orders [--trader ID]``: reconcile LIVE traders with their venues now
(execution.reconcile): every non-final order looked up by client order id, missing fills booked
exactly once, never-placed orders marked, unknown venue orders of ours cancelled. Prints one
JSON report per trader; exits non-zero when a report is incomplete or found a mismatch."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Reconcile LIVE traders' orders and fills with the venue (by client order id)."

    def add_arguments(self, parser):
        parser.add_argument("--trader", type=int, help="only this trader id (default: every LIVE trader with open orders)")

    def handle(self, *args, **options):
        from execution.callstats import counting, store
        from execution.live import LiveRefused, exchange_for
        from execution.reconcile import reconcile_all, reconcile_trader
        from traders.models import Trader

        if options.get("trader"):
            trader = Trader.objects.filter(pk=options["trader"]).first()
            if trader is None:
                raise CommandError(f"no trader {options['trader']}")
            try:
                exchange = counting(exchange_for(trader))
                reports = [reconcile_trader(trader, exchange)]
                store(trader.pk, exchange)             # the calls join the API error window [RK-4]
            except LiveRefused as exc:
                raise CommandError(f"{trader.name}: {exc}") from None
        else:
            reports = reconcile_all()
        for report in reports:
            self.stdout.write(json.dumps(report.to_dict(), sort_keys=True))
        if any(not r.complete or r.mismatches or r.orphans or r.lost for r in reports):
            raise CommandError("reconciliation incomplete or found differences (see the reports and the events)")
