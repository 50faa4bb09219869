"""``manage.py backtest``: run a backtest and print its result as one JSON document [BT-4], [BT-5].

    python manage.py backtest --strategy sma_cross --fast 10 --slow 30 \\
        --data ../shared/data/binance_andresciancio_2023/binance_BTC-USDT_1h.csv.gz \\
        --fee 0.0005 --cash 10000000 [--start 2023-04-05] [--end 2023-04-30] [--no-trade-list]

    python manage.py backtest --strategy pipeline --profile STANDARD --source sim --seed 7 \\
        --markets 30 --days 3 [--param entry_threshold=60 ...] [--mode vector|bar]
    python manage.py backtest --strategy pipeline --data ../shared/data/upbit_azuremooni/upbit_KRW-*_1m.csv.gz \\
        --start 2025-09-03 --end 2025-09-05 [--markets KRW-BTC,KRW-ETH]

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
                            help="sma_cross: the reference long-only SMA crossover on one file; "
                                 "pipeline: the live trader's tick over many markets")
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
        pipe = parser.add_argument_group("pipeline")
        pipe.add_argument("--profile", default="STANDARD",
                          help="risk profile (SAFETY_FIRST, STANDARD, PROFIT_FIRST, CRAZY, AI_MODE); the stored "
                               "profile of that name when the database has one, else the built-in defaults")
        pipe.add_argument("--builtin", action="store_true",
                          help="the built-in profile and regime thresholds, not the stored ones (reproducible figures)")
        pipe.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                          help="override one profile parameter (VALUE is JSON: 60, true, [[1, 0.5]]); repeatable")
        pipe.add_argument("--params", help="profile parameter overrides as one JSON object")
        pipe.add_argument("--source", choices=["sim", "files"], help="data: the simulator (default without --data) "
                                                                     "or the --data files")
        pipe.add_argument("--seed", type=int, default=7, help="simulator seed (and Monte Carlo streams)")
        pipe.add_argument("--markets", nargs="+", metavar="N|SYMBOLS",
                          help="with --source sim a number of simulated markets; otherwise (or in addition) "
                               "symbols to keep, comma or space separated")
        pipe.add_argument("--sim-markets", type=int, help="number of simulated markets (default 30)")
        pipe.add_argument("--days", type=float, help="simulated days to tick (default 3)")
        pipe.add_argument("--mode", choices=["vector", "bar"], default="vector",
                          help="vector: precomputed window scans (default); bar: the live scan on every bar")
        pipe.add_argument("--latency-ms", type=int, default=0, help="order latency (fill model)")
        pipe.add_argument("--participation", type=float, default=0.10,
                          help="share of a bar's volume a resting order can fill (fill model)")
        pipe.add_argument("--spread-bps", type=float, default=5.0, help="spread of the synthetic books")
        pipe.add_argument("--depth-fraction", type=float, default=0.25,
                          help="book level value as a share of the median traded value per bar")
        pipe.add_argument("--window-bars", type=int, default=1000, help="1-minute bars each scan reads (live: 1000)")

    def handle(self, *args, **options):
        fee, cash = options["fee"], options["cash"]
        if not (math.isfinite(fee) and 0 <= fee < 1):
            raise CommandError(f"--fee must be in [0, 1), got {fee}")
        if not (math.isfinite(cash) and cash > 0):
            raise CommandError(f"--cash must be positive, got {cash}")
        if options["strategy"] == "pipeline":
            options = self._pipeline_options(options)
        try:
            result = RUNNERS[options["strategy"]](options)
        except BacktestInputError as exc:
            raise CommandError(str(exc)) from None
        indent = options["indent"] or None
        self.stdout.write(json.dumps(result, indent=indent, allow_nan=False))

    @staticmethod
    def _pipeline_options(options: dict) -> dict:
        params = {}
        if options.get("params"):
            try:
                params = json.loads(options["params"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--params is not JSON: {exc}") from None
            if not isinstance(params, dict):
                raise CommandError("--params must be a JSON object")
        for item in options.get("param") or []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise CommandError(f"--param {item!r}: expected KEY=VALUE")
            try:
                params[key.strip()] = json.loads(raw)
            except json.JSONDecodeError:
                params[key.strip()] = raw
        out = dict(options, params=params or None)
        markets = [m for item in options.get("markets") or [] for m in str(item).split(",") if m.strip()]
        if len(markets) == 1 and markets[0].strip().isdigit():
            out["n_markets"], out["markets"] = int(markets[0]), None
        else:
            out["markets"] = markets or None
        if options.get("sim_markets") is not None:
            out["n_markets"] = options["sim_markets"]
        return out
