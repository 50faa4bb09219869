"""Market-data collectors [EX-6]: one per exchange (not per trader) keeps candles, books,
tickers and rules fresh for every trader that uses it; everything passes through
``execution.engine.validation`` and is counted in ``DataQuality`` [EX-5]. See docs/market-data.md.

Sources (the ``exchange`` column of Candle, MarketSnapshot, DataQuality and MarketRegime):

* ``sim``: the embedded simulator (``execution.marketdata.advance_sim``).
* ``upbit``: Upbit KRW spot, public quotation API (no keys needed).
* ``ccxt:<id>``: any ccxt exchange's spot markets in ``QUANTWEB_CCXT_QUOTE`` (USDT).
* ``replay``: candle files, loaded by backtests through ``load_replay_files``; nothing to collect live.

Which source feeds a trader: ``trader_market_source`` (its ``exchange``, and for ccxt the
credential's ccxt id). ``collect(source, now)`` runs the right collector; the django-q2 task is
``execution.tasks.collect_exchange``.

A venue collection (``VenueCollector.run``):

1. rules (``markets``), refreshed once an hour per process; tickers of the whole quote currency
   in one request; the universe = the leader, every market a trader of the source holds or has
   an open order in, and the top ``N`` by 24 h traded value (``N`` = the largest screener
   ``top_n`` of the source's running traders, at least ``QUANTWEB_COLLECT_TOP_N``);
2. order books of the universe;
3. 1-minute candles per market, read forward from where the last run stopped (``fetched_to``)
   in windows of at most 200 bars (one request each) until the last closed bar, at most
   ``QUANTWEB_COLLECT_MAX_REQUESTS`` candle requests per run (a new market back-fills its
   history over a few runs: the leader 2 days, the others what one scan reads);
4. validation with the last two hours already stored as context (outliers and the gap before
   the first new bar need history; only new rows are counted); bulk upsert; snapshots of the
   universe replace the previous ones; retention (``marketdata.prune``); the regime of the
   newest bar.

Rate limits: every request goes through the adapters' shared limiter (Upbit quotation groups
10/s per IP, ``Remaining-Req``, 429 back-off with jitter, 418 ban). A 429 the adapter could not
ride out, or a ban, stops the run: what was read so far is stored, and the error is raised with
``exc.exchange`` set so the dispatcher's runbook widens the tick interval. A market whose
request fails otherwise is skipped for this run and the failure is its ``last_problem``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from execution import marketdata, quality
from execution.adapters.base import BannedError, ExchangeError, RateLimitedError
from execution.engine.types import MarketInfo, OrderBook, Ticker
from execution.engine.validation import OhlcvSeries, check_book, check_ticker, clean_ohlcv
from execution.models import Candle, MarketSnapshot
from quantweb.db import to_decimal

logger = logging.getLogger(__name__)

BAR = marketdata.BAR
WINDOW = 200                        # bars per candle request (Upbit's maximum)
CONTEXT_SECONDS = 2 * 3600          # stored history validated with the new rows
SOURCE_MAX_LEN = 16                 # Candle / MarketSnapshot / MarketRegime ``exchange`` columns
RULES_TTL = 3600.0
BOOK_MAX_AGE = 120.0
TICKER_MAX_AGE = 600.0
REAL_SOURCES_PREFIXES = ("upbit", "ccxt:")


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --------------------------------------------------------------------------- which source feeds whom

def market_source(exchange: str, ccxt_id: str = "") -> str:
    """The market-data source of a trader / credential: ``sim``, ``upbit``, ``replay`` or
    ``ccxt:<id>`` (a ccxt trader needs the ccxt id of its credential)."""
    if exchange == "ccxt":
        ccxt_id = (ccxt_id or "").strip().lower()
        if not ccxt_id:
            raise ValueError("a ccxt trader needs a credential with a ccxt exchange id (binance, bybit...)")
        source = f"ccxt:{ccxt_id}"
    elif exchange in ("sim", "upbit", "replay"):
        source = exchange
    else:
        raise ValueError(f"unknown exchange {exchange!r}")
    if len(source) > SOURCE_MAX_LEN:
        raise ValueError(f"market-data source {source!r} is longer than {SOURCE_MAX_LEN} characters")
    return source


def trader_market_source(trader) -> str:
    """The source whose candles and books a trader reads (its ``exchange``; for ccxt the
    credential's ccxt id). PAPER and LIVE read the same source."""
    ccxt_id = trader.credential.ccxt_id if trader.exchange == "ccxt" and trader.credential_id else ""
    return market_source(trader.exchange, ccxt_id)


def running_sources() -> list[str]:
    """``sim`` (always: the embedded market runs in real time) and every source a running
    trader reads. A ccxt trader without a usable credential is logged and left out."""
    from traders.models import Trader

    sources = {"sim"}
    for exchange, ccxt_id, trader_id in Trader.objects.running().values_list("exchange", "credential__ccxt_id", "id"):
        try:
            sources.add(market_source(exchange, ccxt_id or ""))
        except ValueError as exc:
            logger.warning("trader %s has no market-data source: %s", trader_id, exc)
    return sorted(sources)


# --------------------------------------------------------------------------- venue feeds

class Feed(Protocol):
    """What a venue collector needs from an adapter (see ``UpbitFeed`` / ``CcxtFeed``)."""

    source: str
    leader: str
    quote: str
    window_fully_covered: bool      # a window request returns every candle of the window

    def rules(self) -> dict[str, MarketInfo]: ...

    def tickers(self) -> tuple[list[Ticker], int]: ...

    def books(self, symbols: list[str]) -> tuple[dict[str, OrderBook], dict[str, str], int]: ...

    def candle_window(self, symbol: str, start: int, end: int) -> tuple[OhlcvSeries, int]: ...


class UpbitFeed:
    """Upbit's public quotation API through ``UpbitExchange`` (no keys)."""

    window_fully_covered = True     # Upbit answers "the candles before `to`": the window is read

    def __init__(self, client: Any | None = None, quote: str = "KRW") -> None:
        from execution.adapters.upbit import UpbitExchange

        self.client = client or UpbitExchange(base_url=_setting("QUANTWEB_UPBIT_BASE_URL", "https://api.upbit.com"))
        self.source = "upbit"
        self.quote = quote
        self.leader = f"{quote}-BTC"

    def rules(self) -> dict[str, MarketInfo]:
        return {m.symbol: m for m in self.client.markets() if m.quote == self.quote}

    def tickers(self) -> tuple[list[Ticker], int]:
        return self.client.ticker_snapshot(self.quote)

    def books(self, symbols: list[str]) -> tuple[dict[str, OrderBook], dict[str, str], int]:
        books, malformed = self.client.order_books(symbols)
        return books, {}, malformed

    def candle_window(self, symbol: str, start: int, end: int) -> tuple[OhlcvSeries, int]:
        return self.client.candle_window(symbol, "1m", start, end)


class CcxtFeed:
    """A ccxt exchange's public market data through ``CcxtExchange`` (spot, no keys)."""

    window_fully_covered = False    # venues cap the rows per request differently

    def __init__(self, exchange_id: str, client: Any | None = None, quote: str | None = None) -> None:
        from execution.adapters.ccxt_adapter import CcxtExchange

        self.client = client or CcxtExchange(exchange_id, market_type="spot")
        self.source = market_source("ccxt", exchange_id)
        self.quote = quote or _setting("QUANTWEB_CCXT_QUOTE", "USDT")
        self.leader = f"BTC/{self.quote}"

    def rules(self) -> dict[str, MarketInfo]:
        return {m.symbol: m for m in self.client.markets() if m.quote == self.quote}

    def tickers(self) -> tuple[list[Ticker], int]:
        return self.client.tickers(None), 0

    def books(self, symbols: list[str]) -> tuple[dict[str, OrderBook], dict[str, str], int]:
        books, failed = {}, {}
        for symbol in symbols:
            try:
                books[symbol] = self.client.order_book(symbol)
            except (RateLimitedError, BannedError):
                raise
            except ExchangeError as exc:
                failed[symbol] = str(exc)[:200]
        return books, failed, 0

    def candle_window(self, symbol: str, start: int, end: int) -> tuple[OhlcvSeries, int]:
        from execution.adapters.ccxt_adapter import fetch_ohlcv_window

        return fetch_ohlcv_window(self.client, symbol, "1m", start, end)


_FEEDS: dict[str, Feed] = {}
_RULES: dict[str, tuple[int, dict[str, MarketInfo], float]] = {}     # source -> (id(feed), rules, fetched at)


def default_feed(source: str) -> Feed:
    """The process-wide feed of a source (ccxt clients are expensive to build)."""
    feed = _FEEDS.get(source)
    if feed is None:
        if source == "upbit":
            feed = UpbitFeed()
        elif source.startswith("ccxt:"):
            feed = CcxtFeed(source.split(":", 1)[1])
        else:
            raise ValueError(f"no venue collector for {source!r}")
        _FEEDS[source] = feed
    return feed


# --------------------------------------------------------------------------- results

@dataclass
class CollectReport:
    source: str
    bars: int = 0                   # candle rows upserted
    markets: int = 0                # markets in the universe
    snapshots: int = 0              # books / tickers stored
    requests: int = 0               # candle requests made
    rejected: int = 0
    repaired: int = 0
    flagged: int = 0
    pending: list[str] = field(default_factory=list)   # markets not brought up to date (budget)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: str = ""               # why the run stopped early (rate limit, ban)
    note: str = ""
    newest_bar: int | None = None

    def summary(self) -> str:
        parts = [f"{self.source}: {self.bars} bars, {self.markets} markets, {self.snapshots} snapshots",
                 f"{self.rejected} rejected / {self.repaired} repaired / {self.flagged} flagged"]
        if self.pending:
            parts.append(f"{len(self.pending)} markets still back-filling")
        if self.failed:
            parts.append(f"{len(self.failed)} markets failed")
        if self.stopped:
            parts.append(f"stopped: {self.stopped}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


# --------------------------------------------------------------------------- the venue collector

class VenueCollector:
    """One collection pass of a real venue (see the module docstring)."""

    def __init__(self, feed: Feed, *, max_requests: int | None = None, top_n: int | None = None,
                 max_seconds: float | None = None, rules_ttl: float = RULES_TTL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.feed = feed
        self.source = feed.source
        self.max_requests = int(max_requests if max_requests is not None
                                else _setting("QUANTWEB_COLLECT_MAX_REQUESTS", 150))
        self.top_n = top_n
        self.max_seconds = float(max_seconds if max_seconds is not None
                                 else _setting("QUANTWEB_COLLECT_MAX_SECONDS", 35.0))
        self.rules_ttl = rules_ttl
        self._monotonic = monotonic

    # -- inputs from the database

    def _traders(self) -> list:
        from traders.models import Trader

        out = []
        for trader in Trader.objects.running().select_related("credential", "profile"):
            try:
                if trader_market_source(trader) == self.source:
                    out.append(trader)
            except ValueError:
                continue
        return out

    def _wanted_top_n(self, traders: list) -> int:
        if self.top_n is not None:
            return self.top_n
        from strategies.engine.screener import ScreenerParams
        from strategies.services import scan_overrides

        n = max(int(_setting("QUANTWEB_COLLECT_TOP_N", 40)), ScreenerParams().top_n)
        for trader in traders:
            scan = scan_overrides(trader.profile, trader.mode).get("scan", {})
            if isinstance(scan.get("top_n"), int):
                n = max(n, scan["top_n"])
        return n

    def _held(self, traders: list) -> set[str]:
        from execution.models import Order, Position

        ids = [t.pk for t in traders]
        held = set(Position.objects.filter(trader_id__in=ids, status=Position.Status.OPEN)
                   .values_list("symbol", flat=True))
        held |= set(Order.objects.filter(trader_id__in=ids, status__in=[
            Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]).values_list("symbol", flat=True))
        return held

    def _rules(self) -> dict[str, MarketInfo]:
        feed_id, rules, at = _RULES.get(self.source, (0, {}, 0.0))
        now = time.time()
        if feed_id == id(self.feed) and rules and now - at < self.rules_ttl:
            return rules
        rules = self.feed.rules()
        _RULES[self.source] = (id(self.feed), rules, now)
        return rules

    def universe(self, rules: dict[str, MarketInfo], tickers: list[Ticker], held: set[str], top_n: int) -> list[str]:
        """Leader, held markets, then the top ``top_n`` by 24 h value among the venue's markets."""
        ranked = sorted((t for t in tickers if t.symbol in rules and math.isfinite(t.value_24h)),
                        key=lambda t: -t.value_24h)
        out = [self.feed.leader] if self.feed.leader in rules else []
        for symbol in sorted(held):
            if symbol in rules and symbol not in out:
                out.append(symbol)
        for t in ranked:
            if len(out) >= top_n + len(held) + 1:
                break
            if t.symbol not in out:
                out.append(t.symbol)
        return out

    # -- the run

    def run(self, now: float) -> CollectReport:
        last_closed = marketdata.last_closed_bar(now)
        report = CollectReport(self.source)
        results: dict[str, quality.MarketResult] = {}
        started = self._monotonic()
        stop_exc: Exception | None = None
        self._partial: dict[str, tuple[list[OhlcvSeries], int, int]] = {}

        traders = self._traders()
        try:
            rules = self._rules()
            tickers, bad_tickers = self.feed.tickers()
        except (RateLimitedError, BannedError) as exc:
            exc.exchange = self.source               # nothing read yet: nothing to store
            raise
        symbols = self.universe(rules, tickers, self._held(traders), self._wanted_top_n(traders))
        report.markets = len(symbols)
        for s in symbols:
            results[s] = quality.MarketResult()
        if bad_tickers:
            logger.warning("%s: %d malformed ticker rows skipped", self.source, bad_tickers)

        snapshots: dict[str, tuple[OrderBook, Ticker]] = {}
        try:
            try:
                books, failed_books, bad_books = self.feed.books(symbols)
            except (RateLimitedError, BannedError):
                raise
            except ExchangeError as exc:             # e.g. malformed JSON: no book this run
                books, failed_books, bad_books = {}, dict.fromkeys(symbols, str(exc)[:200]), 0
            if bad_books:
                logger.warning("%s: %d malformed order book entries skipped", self.source, bad_books)
            by_symbol = {t.symbol: t for t in tickers}
            for s in symbols:
                res = results[s]
                if s in failed_books:
                    res.note(f"book request failed: {failed_books[s]}")
                    report.failed[s] = failed_books[s]
                    continue
                if s not in books or s not in by_symbol:
                    res.add("book", "rejected", 1, "no book or ticker in the venue's answer")
                    continue
                book = check_book(books[s], now, BOOK_MAX_AGE)
                res.add_snapshot(book, "book")
                t = by_symbol[s]
                if book.value is not None:
                    t = Ticker(t.symbol, t.ts, t.last, book.value.best_bid, book.value.best_ask, t.value_24h,
                               t.change_24h_pct)
                ticker = check_ticker(t, now, TICKER_MAX_AGE)
                res.add_snapshot(ticker, "ticker")
                if book.value is not None and ticker.value is not None:
                    snapshots[s] = (book.value, ticker.value)
            series = self._fetch_candles(symbols, last_closed, results, report, started)
        except (RateLimitedError, BannedError) as exc:
            stop_exc = exc
            report.stopped = f"{type(exc).__name__}: {exc}"
            series = self._partial
        self._write(symbols, rules, snapshots, series, results, report, last_closed, full_universe=stop_exc is None)
        if stop_exc is not None:
            stop_exc.exchange = self.source          # the dispatcher's runbook reads it
            raise stop_exc
        return report

    def _fetch_candles(self, symbols: list[str], last_closed: int, results: dict[str, quality.MarketResult],
                       report: CollectReport, started: float) -> dict[str, tuple[list[OhlcvSeries], int, int]]:
        """Per market: (new rows, count_from, new cursor). Kept in ``self._partial`` so a rate
        limit mid-way still stores what was read."""
        cursors = quality.cursors(self.source, symbols)
        newest = dict(Candle.objects.filter(exchange=self.source, timeframe="1m", symbol__in=symbols)
                      .values("symbol").annotate(m=_max("ts")).values_list("symbol", "m"))
        out = self._partial
        for s in symbols:
            keep = marketdata.LEADER_KEEP_BARS if s == self.feed.leader else marketdata.WINDOW_BARS
            backfill_start = last_closed - (keep - 1) * BAR
            known = [p for p in (cursors.get(s), newest.get(s)) if p is not None]
            pos = max(known) if known else None
            if pos is None or pos < backfill_start:
                start = count_from = backfill_start
            else:
                start = count_from = pos + BAR
            cursor = start - BAR
            parts: list[OhlcvSeries] = []
            while cursor < last_closed:
                if report.requests >= self.max_requests or self._monotonic() - started > self.max_seconds:
                    report.pending.append(s)
                    break
                w_start = cursor + BAR
                w_end = min(w_start + (WINDOW - 1) * BAR, last_closed)
                report.requests += 1
                try:
                    rows, malformed = self.feed.candle_window(s, w_start, w_end)
                except (RateLimitedError, BannedError):
                    if parts:
                        out[s] = (parts, count_from, cursor)
                    raise
                except ExchangeError as exc:
                    results[s].note(f"candle request failed: {str(exc)[:200]}")
                    report.failed[s] = str(exc)[:200]
                    break
                if malformed:
                    results[s].add("ohlc", "rejected", malformed, f"{malformed} unreadable candle rows")
                parts.append(rows)
                if self.feed.window_fully_covered or not len(rows) or int(rows.ts.max()) >= w_end:
                    cursor = w_end
                else:
                    cursor = max(cursor, int(rows.ts.max()))
            if parts or cursor >= start:
                out[s] = (parts, count_from, cursor)
        return out

    def _context(self, series: dict[str, tuple[list[OhlcvSeries], int, int]]) -> dict[str, np.ndarray]:
        """Stored rows in the two hours before each market's first new bar."""
        if not series:
            return {}
        lo = min(cf for _, cf, _ in series.values()) - CONTEXT_SECONDS
        hi = max(cf for _, cf, _ in series.values())
        rows: dict[str, list[tuple]] = {}
        qs = (Candle.objects.filter(exchange=self.source, timeframe="1m", symbol__in=list(series), ts__gte=lo, ts__lt=hi)
              .values_list("symbol", "ts", "open", "high", "low", "close", "volume"))
        for symbol, *values in qs:
            if values[0] < series[symbol][1] and values[0] >= series[symbol][1] - CONTEXT_SECONDS:
                rows.setdefault(symbol, []).append(tuple(float(v) for v in values))
        return {s: np.array(sorted(v), dtype=np.float64) for s, v in rows.items()}

    def _write(self, symbols: list[str], rules: dict[str, MarketInfo], snapshots: dict[str, tuple[OrderBook, Ticker]],
               series: dict[str, tuple[list[OhlcvSeries], int, int]], results: dict[str, quality.MarketResult],
               report: CollectReport, last_closed: int, *, full_universe: bool) -> None:
        context = self._context(series)
        candles: list[Candle] = []
        for s, (parts, count_from, cursor) in series.items():
            res = results[s]
            res.fetched_to = cursor
            ctx = context.get(s, np.zeros((0, 6)))
            cols = [ctx[:, k] for k in range(6)]
            for p in parts:
                for k, arr in enumerate((p.ts, p.open, p.high, p.low, p.close, p.volume)):
                    cols[k] = np.concatenate([cols[k], np.asarray(arr, dtype=np.float64)])
            new_rows = int(sum(len(p) for p in parts))
            if not new_rows:
                continue
            raw = OhlcvSeries(s, "1m", cols[0].astype(np.int64), *cols[1:])
            cleaned, mq = clean_ohlcv(raw, grid_offset=0, count_from=count_from)
            fresh = (cleaned.ts >= count_from) & (cleaned.ts <= last_closed)
            res.add_candles(mq, int(cleaned.ts[fresh].max()) if fresh.any() else None, rows_checked=new_rows)
            for j in np.flatnonzero(fresh):
                candles.append(Candle(exchange=self.source, symbol=s, timeframe="1m", ts=int(cleaned.ts[j]),
                                      open=to_decimal(float(cleaned.open[j])), high=to_decimal(float(cleaned.high[j])),
                                      low=to_decimal(float(cleaned.low[j])), close=to_decimal(float(cleaned.close[j])),
                                      volume=to_decimal(_volume(cleaned.volume[j]))))
        snap_rows = [MarketSnapshot(exchange=self.source, symbol=s, ts=int(book.ts),
                                    book={"bids": book.bids.tolist(), "asks": book.asks.tolist()},
                                    ticker=marketdata.ticker_json(ticker), market=marketdata._market_json(rules[s]))
                     for s in symbols if s in snapshots for book, ticker in [snapshots[s]]]
        with transaction.atomic():
            Candle.objects.bulk_create(candles, batch_size=2000, update_conflicts=True,
                                       unique_fields=["exchange", "symbol", "timeframe", "ts"],
                                       update_fields=["open", "high", "low", "close", "volume"])
            MarketSnapshot.objects.bulk_create(snap_rows, update_conflicts=True, unique_fields=["exchange", "symbol"],
                                               update_fields=["ts", "book", "ticker", "market"])
            if full_universe and symbols:
                MarketSnapshot.objects.filter(exchange=self.source).exclude(symbol__in=symbols).delete()
            quality.record(self.source, results)
        report.bars = len(candles)
        report.snapshots = len(snap_rows)
        for res in results.values():
            for actions in res.counts.values():
                report.rejected += actions["rejected"]
                report.repaired += actions["repaired"]
                report.flagged += actions["flagged"]
        newest = [int(c.ts) for c in candles]
        report.newest_bar = max(newest) if newest else None
        if report.newest_bar is not None:
            marketdata.prune(self.source, report.newest_bar)
            leader_bar = max((int(c.ts) for c in candles if c.symbol == self.feed.leader), default=None)
            if leader_bar == last_closed:
                _evaluate_regime(self.source, leader_bar)


def _volume(v: float) -> float:
    return round(float(v), 8) if math.isfinite(v) else 0.0


def _max(name: str):
    from django.db.models import Max

    return Max(name)


def _evaluate_regime(source: str, bar_ts: int) -> None:
    from regime.services import evaluate

    def run() -> None:
        try:
            evaluate(source, bar_ts)
        except (LookupError, ValueError) as exc:      # not enough history yet
            logger.info("%s: regime of bar %s not evaluated: %s", source, bar_ts, exc)

    transaction.on_commit(run)


# --------------------------------------------------------------------------- dispatch

def _lock(source: str, seconds: float):
    key = f"quantweb:collect:{source}"
    token = f"{time.time():.6f}"
    if not cache.add(key, token, timeout=int(seconds)):
        return None
    return key


def collect(exchange_name: str, now: float | None = None, *, feed: Feed | None = None) -> CollectReport:
    """Run the collector of one market-data source up to the last closed bar at ``now``.

    ``sim`` advances the simulator; ``upbit`` / ``ccxt:<id>`` run a ``VenueCollector`` (``feed``
    replaces the default adapter, e.g. in tests); ``replay`` has nothing to collect. Two runs of
    the same source never overlap: the second returns at once with a note."""
    now = time.time() if now is None else now
    if exchange_name == "sim":
        report = CollectReport("sim")
        report.bars = marketdata.advance_sim(now)
        report.newest_bar = marketdata.latest_bar("sim")
        return report
    if exchange_name == "replay":
        return CollectReport("replay", note="replay data is historical: loaded by backtests, nothing to collect")
    source = exchange_name
    if not source.startswith(REAL_SOURCES_PREFIXES):
        raise ValueError(f"unknown market-data source {exchange_name!r}")
    if source.startswith("ccxt:"):
        market_source("ccxt", source.split(":", 1)[1])          # validates the id's length
    key = _lock(source, 120)
    if key is None:
        return CollectReport(source, note="another collection of this source is running")
    try:
        return VenueCollector(feed or default_feed(source)).run(now)
    finally:
        cache.delete(key)


def load_replay_files(paths: list, **kwargs: Any):
    """``execution.adapters.replay.load_candle_files`` plus the data-quality record of every
    market under the ``replay`` source (replacing the previous load's counts)."""
    from execution.adapters.replay import load_candle_files

    data = load_candle_files(paths, **kwargs)
    results = {}
    for mq in data.report.markets:
        res = quality.MarketResult()
        i = data.candles.index(mq.symbol) if mq.symbol in data.candles.symbols else None
        newest = None
        if i is not None:
            good = np.flatnonzero(~np.isnan(data.candles.close[i]))
            newest = int(data.candles.ts[good[-1]]) if len(good) else None
        res.add_candles(mq, newest)
        results[mq.symbol] = res
    quality.record("replay", results, replace=True)
    return data
