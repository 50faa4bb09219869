"""``manage.py explain_signal ID``: the stored Signal and the same scan recomputed from its
ScanRun's inputs, side by side, MATCH / MISMATCH per value [PL-2]. Exits non-zero on any
mismatch, an unknown id or a scan that cannot be rebuilt (e.g. candles pruned by retention).
The logic is ``strategies.explain``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from strategies.explain import ExplainError, compare, recompute
from strategies.models import Signal


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "(none)"
    return str(value)


class Command(BaseCommand):
    help = "Recompute a stored Signal from its ScanRun inputs and print stored vs recomputed values side by side."

    def add_arguments(self, parser):
        parser.add_argument("signal_id", type=int, help="Signal id")
        parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")

    def handle(self, *args, **options):
        signal = (Signal.objects.select_related("scan_run", "scan_run__regime", "trader__profile")
                  .filter(pk=options["signal_id"]).first())
        if signal is None:
            raise CommandError(f"signal {options['signal_id']} does not exist")
        try:
            recomputed = recompute(signal)
        except ExplainError as exc:
            raise CommandError(f"signal {signal.pk} cannot be recomputed: {exc}") from None
        rows = compare(signal, recomputed)
        bad = [r["field"] for r in rows if not r["match"]]

        if options["json"]:
            self.stdout.write(json.dumps({"signal": signal.pk, "scan_run": signal.scan_run_id, "rows": rows,
                                          "warnings": recomputed["warnings"], "match": not bad}, indent=2))
        else:
            self._table(signal, rows, recomputed["warnings"])
        if bad:
            raise CommandError(f"MISMATCH: {len(bad)} of {len(rows)} values differ: {', '.join(bad)}")
        if not options["json"]:   # keep --json output one JSON document
            self.stdout.write(self.style.SUCCESS(f"MATCH: all {len(rows)} values agree"))

    def _table(self, signal: Signal, rows: list[dict], warnings: list[str]) -> None:
        out = self.stdout
        out.write(f"signal {signal.pk}: {signal.symbol} bar {signal.bar_ts}, trader {signal.trader.name} "
                  f"(#{signal.trader_id}), scan run {signal.scan_run_id}, action {signal.action}")
        failed = [c["code"] for c in signal.checks if not c.get("passed")]
        if signal.checks:
            out.write(f"pre-trade checks: {len(signal.checks) - len(failed)} passed"
                      + (f", stopped by {', '.join(failed)}" if failed else ""))
        for warning in warnings:
            out.write(self.style.WARNING(f"warning: {warning}"))
        width = max(len(r["field"]) for r in rows)
        out.write(f"{'value':<{width}}  {'stored':>20}  {'recomputed':>20}  result")
        for r in rows:
            stored, again = _show(r["stored"]), _show(r["recomputed"])
            verdict = "MATCH" if r["match"] else self.style.ERROR("MISMATCH") + (
                f" (diff {r['diff']:.3g})" if r["diff"] is not None else "")
            if len(stored) > 20 or len(again) > 20:   # reason codes: one line each
                out.write(f"{r['field']:<{width}}  {'':>20}  {'':>20}  {verdict}")
                out.write(f"    stored:     {stored}")
                out.write(f"    recomputed: {again}")
            else:
                out.write(f"{r['field']:<{width}}  {stored:>20}  {again:>20}  {verdict}")
        out.write("action: recomputed is the scan's proposal; the tick stores ENTER as SKIP until the pre-trade "
                  "checks pass (then ENTER), EXIT as EXIT and anything else as HOLD")
