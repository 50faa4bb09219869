"""``manage.py backtest``: run a backtest and print its result as one JSON document [BT-4], [BT-5].

    python manage.py backtest --strategy sma_cross --fast 10 --slow 30 \\
        --data ../shared/data/binance_andresciancio_2023/binance_BTC-USDT_1h.csv.gz \\
        --fee 0.0005 --cash 10000000 [--start 2023-04-05] [--end 2023-04-30] [--no-trade-list]

The runners live in ``strategies.backtests`` (shared with the REST endpoint and the worker).
"""

from __future__ import annotations

import json
import math

from django.core.management.base import BaseCommand, CommandError

from strategies.backtests import RUNNERS, BacktestInputError


class Command(BaseCommand):
    help = "Run a backtest and print the result (report metrics and trade list) as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--strategy", required=True, choices=sorted(RUNNERS),
                            help="sma_cross: the reference long-only SMA crossover on one file")
        parser.add_argument("--data", nargs="+", metavar="FILE", help="candle file(s) (CSV/JSON/feather, .gz ok)")
        parser.add_argument("--start", help="first bar open to include (ISO date/time, UTC)")
        parser.add_argument("--end", help="bars opening before this time only (ISO date/time, UTC)")
        parser.add_argument("--fee", type=float, default=0.0005, help="proportional fee per side (default 0.0005)")
        parser.add_argument("--cash", type=float, default=10_000_000.0, help="initial cash (default 10,000,000)")
        parser.add_argument("--no-trade-list", action="store_true", help="leave the trade list out of the JSON")
        parser.add_argument("--indent", type=int, default=2, help="JSON indent (0: one line)")
        sma = parser.add_argument_group("sma_cross")
        sma.add_argument("--fast", type=int, help="fast SMA length in bars")
        sma.add_argument("--slow", type=int, help="slow SMA length in bars (> --fast)")

    def handle(self, *args, **options):
        fee, cash = options["fee"], options["cash"]
        if not (math.isfinite(fee) and 0 <= fee < 1):
            raise CommandError(f"--fee must be in [0, 1), got {fee}")
        if not (math.isfinite(cash) and cash > 0):
            raise CommandError(f"--cash must be positive, got {cash}")
        try:
            result = RUNNERS[options["strategy"]](options)
        except BacktestInputError as exc:
            raise CommandError(str(exc)) from None
        indent = options["indent"] or None
        self.stdout.write(json.dumps(result, indent=indent, allow_nan=False))
