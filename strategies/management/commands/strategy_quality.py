"""``manage.py strategy_quality``: what every default profile does on every real candle universe,
written to ``docs/strategy-quality.md`` [CA-2], [CA-3]; ``--fit-calibration`` re-measures the
score calibration's knots on the 1-minute universes.

    python manage.py strategy_quality                       # all universes, all four profiles
    python manage.py strategy_quality --timeframes 1m --profiles STANDARD --output -
    python manage.py strategy_quality --fit-calibration --timeframes 1m --output -
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from strategies.quality import PROFILES, TIMEFRAMES, discover, fit_calibration, render, run_quality


class Command(BaseCommand):
    help = "Backtest every default profile on every real candle universe and write docs/strategy-quality.md."

    def add_arguments(self, parser):
        parser.add_argument("--data-dir", default=str(settings.QUANTWEB_BACKTEST_DATA_DIR),
                            help="folder of candle-file folders (default: QUANTWEB_BACKTEST_DATA_DIR, ../shared/data)")
        parser.add_argument("--timeframes", default=",".join(TIMEFRAMES), help="comma-separated (1m,5m,15m,1h)")
        parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated profile names")
        parser.add_argument("--only", default="", help="keep universes whose name contains this text")
        parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
        parser.add_argument("--output", default="docs/strategy-quality.md", help="Markdown file, or - for stdout")
        parser.add_argument("--json", help="also write the raw rows as JSON to this file")
        parser.add_argument("--from-json", help="render the report from rows a previous run wrote with --json "
                                                 "(no backtest is run)")
        parser.add_argument("--fit-calibration", action="store_true",
                            help="measure the composite's crossing rates on the 1m universes and print the knots")

    def handle(self, *args, **options):
        if options["from_json"]:
            try:
                rows = json.loads(Path(options["from_json"]).read_text())
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read {options['from_json']}: {exc}") from None
            generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            self._write(options["output"], render(rows, command="python manage.py strategy_quality",
                                                  generated=generated))
            return
        root = Path(options["data_dir"])
        if not root.is_dir():
            raise CommandError(f"data folder not found: {root}")
        tfs = [t for t in options["timeframes"].split(",") if t]
        bad = [t for t in tfs if t not in TIMEFRAMES]
        if bad:
            raise CommandError(f"unknown timeframe(s) {', '.join(bad)}; expected some of {', '.join(TIMEFRAMES)}")
        profiles = [p for p in options["profiles"].split(",") if p]
        unknown = [p for p in profiles if p not in PROFILES]
        if unknown:
            raise CommandError(f"unknown profile(s) {', '.join(unknown)}; expected some of {', '.join(PROFILES)}")
        universes = [u for u in discover(root, tfs) if options["only"] in u.name]
        if not universes:
            raise CommandError(f"no universe of two or more candle files ({', '.join(tfs)}) under {root}")
        if options["fit_calibration"]:
            try:
                fit = fit_calibration(universes)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
            self._write(options["output"] if options["output"] != "docs/strategy-quality.md" else "-",
                        json.dumps(fit, indent=1))
            return
        rows = run_quality(universes, profiles, workers=max(1, options["workers"]),
                           log=lambda line: self.stderr.write(line))
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "python manage.py strategy_quality" + ("" if tfs == list(TIMEFRAMES) else f" --timeframes {','.join(tfs)}")
        self._write(options["output"], render(rows, command=command, generated=generated))
        if options["json"]:
            Path(options["json"]).write_text(json.dumps(rows, indent=1, default=str))

    def _write(self, target: str, text: str) -> None:
        if target == "-":
            sys.stdout.write(text)
        else:
            Path(target).write_text(text)
            self.stderr.write(f"wrote {target}")
