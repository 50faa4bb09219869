"""``manage.py label_data --data FILE... [--step N] [--timeframe TF] [--fee F] [--slippage S] [--out CSV]``:
the [AI-1] forward-return labels of real candle files (e.g. ``../shared/data/*/..._1m.csv.gz``),
as if a scan had stored a feature snapshot at every ``step``-th bar close of every market. Prints
the pooled summary as JSON (count, mean, hit rate, quantiles of every label); ``--out`` writes one
CSV row per market-bar. The logic is ``strategies.learning.label_candle_files`` on
``strategies.engine.learning.realdata.label_bars`` (the definitions of ``labels.label_snapshot``)."""

from __future__ import annotations

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from strategies.learning import label_candle_files


class Command(BaseCommand):
    help = "Label real candle files with the [AI-1] forward-return labels and print a JSON summary."

    def add_arguments(self, parser):
        parser.add_argument("--data", nargs="+", required=True, help="candle files (one market each, one timeframe)")
        parser.add_argument("--step", type=int, default=1, help="label every N-th bar (default 1)")
        parser.add_argument("--timeframe", default=None, help="resample to this bar first (1m/5m/15m/1h)")
        parser.add_argument("--fee", type=float, default=None, help="taker fee per side (default: market rules)")
        parser.add_argument("--slippage", type=float, default=None, help="slippage per side (default 0.0005)")
        parser.add_argument("--out", default=None, help="write one CSV row per market-bar here ('-' = stdout)")

    def handle(self, *args, **options):
        out = None
        try:
            if options["out"] == "-":
                out = sys.stdout
            elif options["out"]:
                out = open(options["out"], "w", newline="")  # noqa: SIM115 (closed below)
            summary = label_candle_files(options["data"], step=options["step"], fee=options["fee"],
                                         slippage=options["slippage"], timeframe=options["timeframe"], out=out)
        except (OSError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if out is not None and out is not sys.stdout:
                out.close()
        if options["out"] != "-":
            self.stdout.write(json.dumps(summary, indent=2))
