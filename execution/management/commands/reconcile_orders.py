"""``manage.py reconcile_orders [--trader ID]``: reconcile LIVE traders with their venues now
(execution.reconcile): every non-final order looked up by client order id, missing fills booked
exactly once, never-placed orders marked, rejected orders of the last 24 h looked up again,
unknown venue orders of ours cancelled, balances compared both ways. Prints one JSON report per
trader; exits non-zero when a report is incomplete, found a mismatch, still has an order of
unknown outcome or found a rejected order on the venue."""

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
        from execution.reconcile import reconcile_all, reconcile_outside_tick
        from traders.models import Trader

        if options.get("trader"):
            trader = Trader.objects.filter(pk=options["trader"]).first()
            if trader is None:
                raise CommandError(f"no trader {options['trader']}")
            try:
                report, exchange = reconcile_outside_tick(trader, counting(exchange_for(trader)))
                reports = [report]
                store(trader.pk, exchange)             # the calls join the API error window [RK-4]
            except LiveRefused as exc:
                raise CommandError(f"{trader.name}: {exc}") from None
        else:
            reports = reconcile_all()
        for report in reports:
            self.stdout.write(json.dumps(report.to_dict(), sort_keys=True))
        if any(not r.complete or r.mismatches or r.orphans or r.lost or r.recovered or r.unknown for r in reports):
            raise CommandError("reconciliation incomplete or found differences (see the reports and the events)")
