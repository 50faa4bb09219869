"""Market-data collectors [EX-6] against a local fake Upbit server and a ccxt Binance client whose
URLs point at it (no network): back-fill and incremental paging in windows of at most 200 bars,
Upbit's gaps, validation and data-quality counts for every kind of bad row, 429 / 418 /
timeouts / malformed JSON, and a trader's view of the collected market (``load_view``)."""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime
from decimal import Decimal as D

import numpy as np
import pytest

from execution import collectors, marketdata
from execution.adapters.base import BannedError, RateLimitedError
from execution.adapters.upbit import UpbitExchange
from execution.engine.ratelimit import LimiterRegistry
from execution.models import Candle, DataQuality, MarketSnapshot
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Recorded, Reply, fixture

pytestmark = pytest.mark.django_db

NOW = 1717200630.5                   # 2024-06-01T00:10:30.5Z
LAST = 1717200540                    # the last closed bar at NOW (00:09)
KRW = ("KRW-BTC", "KRW-XRP", "KRW-LOOM")
BASE = {"KRW-BTC": 95_000_000.0, "KRW-XRP": 716.0, "KRW-LOOM": 120.0}
VALUE = {"KRW-BTC": 1.8e11, "KRW-XRP": 5.2e10, "KRW-LOOM": 2.0e9}


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


class FakeUpbit:
    """Upbit semantics for the quotation endpoints the collector uses. Candles: the ``count``
    most recent candles strictly before ``to``, newest first; KRW-LOOM trades only when
    ``minute % 7 != 3`` (gaps are normal); ``edits`` replace / add raw rows per market."""

    def __init__(self, server: FakeExchangeServer, clock: FakeClock) -> None:
        self.clock = clock
        self.edits: dict[str, dict[int, list[dict]]] = {}
        self.book_age = 0.0
        self.crossed: set[str] = set()
        self.price_step: dict[str, float] = {}
        server.add("GET", "/v1/market/all", Reply(fixture("upbit/market_all.json")))
        server.add("GET", "/v1/ticker/all", self.tickers)
        server.add("GET", "/v1/orderbook", self.books)
        server.add("GET", "/v1/candles/minutes/1", self.candles)

    def price(self, symbol: str, ts: int) -> float:
        base = BASE[symbol]
        wiggle = 1 + 0.001 * math.sin(ts / 600.0)
        tick = 1000.0 if base > 1e6 else 1.0 if base > 500 else 0.1
        return round(base * wiggle / tick) * tick

    def row(self, symbol: str, ts: int) -> dict:
        p = self.price(symbol, ts)
        return {"market": symbol, "candle_date_time_utc": iso(ts), "opening_price": p, "high_price": p * 1.001,
                "low_price": p * 0.999, "trade_price": p, "timestamp": ts * 1000 + 59_000,
                "candle_acc_trade_price": p * 2.0, "candle_acc_trade_volume": 2.0, "unit": 1}

    def rows_before(self, symbol: str, to: int, count: int) -> list[dict]:
        out, ts, bars = [], to - 60, 0
        now_open = int(self.clock()) // 60 * 60
        ts = min(ts, now_open)
        while bars < count and ts > to - 60 * 20_000:
            if ts in self.edits.get(symbol, {}):
                rows = self.edits[symbol][ts]
            elif not (symbol == "KRW-LOOM" and (ts // 60) % 7 == 3):
                rows = [self.row(symbol, ts)]
            else:
                rows = []
            out.extend(rows)
            bars += bool(rows)
            ts -= 60
        return out

    def candles(self, rec: Recorded) -> Reply:
        to = int(datetime.fromisoformat(rec.query["to"][0].replace("Z", "+00:00")).timestamp())
        count = int(rec.query["count"][0])
        assert count <= 200
        return Reply(self.rows_before(rec.query["market"][0], to, count))

    def tickers(self, rec: Recorded) -> Reply:
        ms = int(self.clock() * 1000)
        return Reply([{"market": s, "trade_price": self.price(s, int(self.clock()) // 60 * 60),
                       "acc_trade_price_24h": VALUE[s], "signed_change_rate": 0.01, "timestamp": ms} for s in KRW])

    def books(self, rec: Recorded) -> Reply:
        ms = int((self.clock() - self.book_age) * 1000)
        out = []
        for s in rec.query["markets"][0].split(","):
            p = self.price(s, int(self.clock()) // 60 * 60)
            tick = 1000.0 if p > 1e6 else 1.0 if p > 500 else 0.1
            units = [{"ask_price": p + (k + 1) * tick, "bid_price": p - k * tick, "ask_size": 1.0 + k,
                      "bid_size": 2.0 + k} for k in range(5)]
            if s in self.crossed:
                units[0]["bid_price"] = p + 5 * tick
            out.append({"market": s, "timestamp": ms, "orderbook_units": units})
        return Reply(out)


@pytest.fixture
def server():
    with FakeExchangeServer() as srv:
        yield srv


@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def upbit(server, clock, settings):
    settings.QUANTWEB_COLLECT_TOP_N = 40
    collectors._RULES.clear()
    marketdata._view_cache.clear()
    return FakeUpbit(server, clock)


def feed(server, clock, **kw) -> collectors.UpbitFeed:
    client = UpbitExchange(base_url=server.url, clock=clock, sleep=clock.sleep,
                           limiter_registry=LimiterRegistry(rng=random.Random(3)), rng=random.Random(5),
                           timeout=(1.0, 0.3), **kw)
    return collectors.UpbitFeed(client)


def candle_calls(server) -> list[Recorded]:
    return server.calls("GET", "/v1/candles/minutes/1")


def quality(symbol: str, exchange: str = "upbit") -> DataQuality:
    return DataQuality.objects.get(exchange=exchange, symbol=symbol)


# ---------------------------------------------------------------------------- sources

def test_market_source_rules():
    assert collectors.market_source("sim") == "sim"
    assert collectors.market_source("upbit") == "upbit"
    assert collectors.market_source("ccxt", "Binance") == "ccxt:binance"
    with pytest.raises(ValueError, match="ccxt exchange id"):
        collectors.market_source("ccxt", "")
    with pytest.raises(ValueError, match="longer than"):
        collectors.market_source("ccxt", "coinbaseexchange")
    with pytest.raises(ValueError, match="unknown exchange"):
        collectors.market_source("kraken")


def test_trader_source_follows_exchange_and_credential(admin_user):
    from tests.factories import make_trader
    from traders.models import Credential

    trader = make_trader(admin_user)
    assert collectors.trader_market_source(trader) == "sim"
    cred = Credential.objects.create(exchange="ccxt", ccxt_id="bybit", label="b", api_key="k" * 20, api_secret="s" * 20)
    trader.exchange, trader.credential = "ccxt", cred
    trader.save()
    assert collectors.trader_market_source(trader) == "ccxt:bybit"
    trader.status = "running"
    trader.save()
    assert collectors.running_sources() == ["ccxt:bybit", "sim"]


# ---------------------------------------------------------------------------- upbit

def test_first_run_backfills_history_in_windows_of_200_and_serves_a_view(server, clock, upbit,
                                                                        django_capture_on_commit_callbacks):
    from regime.models import MarketRegime

    with django_capture_on_commit_callbacks(execute=True):
        report = collectors.collect("upbit", NOW, feed=feed(server, clock))
    regime = MarketRegime.objects.get(exchange="upbit", bar_ts=LAST)       # classified from the stored bars
    assert regime.true_label == "" and 0 <= regime.regime_score <= 100
    calls = candle_calls(server)
    assert all(int(c.query["count"][0]) <= 200 for c in calls)
    btc = [c for c in calls if c.query["market"] == ["KRW-BTC"]]
    assert len(btc) == math.ceil(marketdata.LEADER_KEEP_BARS / 200)            # 2 days for the leader
    assert btc[-1].query["to"] == [iso(LAST + 60) + "Z"]                       # up to the last closed bar
    assert len([c for c in calls if c.query["market"] == ["KRW-XRP"]]) == math.ceil(marketdata.WINDOW_BARS / 200)
    assert report.markets == 3 and not report.pending and not report.failed
    n_btc = Candle.objects.filter(exchange="upbit", symbol="KRW-BTC").count()
    assert n_btc == marketdata.LEADER_KEEP_BARS
    assert Candle.objects.filter(exchange="upbit", symbol="KRW-BTC").order_by("-ts").first().ts == LAST
    # LOOM trades only when minute % 7 != 3: no bar is invented, the holes are counted as gaps
    loom_ts = list(Candle.objects.filter(exchange="upbit", symbol="KRW-LOOM").values_list("ts", flat=True))
    assert loom_ts and all((t // 60) % 7 != 3 for t in loom_ts)
    loom = quality("KRW-LOOM")
    window = np.arange(LAST - (marketdata.WINDOW_BARS - 1) * 60, LAST + 60, 60)
    inner = window[(window > min(loom_ts)) & (window < max(loom_ts))]
    assert loom.count("gap", "flagged") == int(((inner // 60) % 7 == 3).sum())
    assert loom.rows_rejected == 0 and loom.rows_repaired == 0 and loom.last_good_ts == max(loom_ts)
    assert quality("KRW-BTC").fetched_to == LAST
    # snapshots: leader first, books and tickers validated; the view is the same as the sim's
    assert list(MarketSnapshot.objects.filter(exchange="upbit").order_by("id").values_list("symbol", flat=True)) \
        == ["KRW-BTC", "KRW-XRP", "KRW-LOOM"]
    view = marketdata.load_view("upbit", LAST)
    assert view.candles.symbols[0] == "KRW-BTC" and view.candles.ts[-1] == LAST
    assert not np.isnan(view.candles.close[0]).any()
    assert view.leader_history.n_bars >= 1485 and not np.isnan(view.leader_history.close[0, -1485:]).any()
    assert np.isnan(view.candles.close[2][(view.candles.ts // 60) % 7 == 3]).all()
    assert view.books["KRW-BTC"].best_bid < view.books["KRW-BTC"].best_ask
    assert view.tickers["KRW-XRP"].value_24h == VALUE["KRW-XRP"] and view.tickers["KRW-XRP"].bid > 0
    assert view.markets["KRW-XRP"].min_notional == D("5000")


def test_next_minute_reads_only_the_new_bar(server, clock, upbit):
    collectors.collect("upbit", NOW, feed=feed(server, clock))
    before = len(candle_calls(server))
    clock.now += 60
    report = collectors.collect("upbit", NOW + 60, feed=feed(server, clock))
    new = candle_calls(server)[before:]
    assert len(new) == 3 and all(c.query["count"] == ["1"] for c in new)
    assert report.bars == 3 - ((LAST + 60) // 60 % 7 == 3)
    assert quality("KRW-BTC").fetched_to == LAST + 60
    assert quality("KRW-BTC").rows_checked == marketdata.LEADER_KEEP_BARS + 1 + 2 * 2     # + books, tickers


def test_a_quiet_market_does_not_stall_the_cursor(server, clock, upbit):
    collectors.collect("upbit", NOW, feed=feed(server, clock))
    quiet = {t: [] for t in range(LAST + 60, LAST + 60 * 30, 60)}
    upbit.edits["KRW-LOOM"] = quiet
    clock.now += 60 * 20
    collectors.collect("upbit", NOW + 60 * 20, feed=feed(server, clock))
    assert quality("KRW-LOOM").fetched_to == LAST + 60 * 20           # read up to now although nothing traded
    before = len(candle_calls(server))
    clock.now += 60
    collectors.collect("upbit", NOW + 60 * 21, feed=feed(server, clock))
    loom = [c for c in candle_calls(server)[before:] if c.query["market"] == ["KRW-LOOM"]]
    assert len(loom) == 1 and loom[0].query["count"] == ["1"]


def test_bad_rows_are_rejected_or_repaired_and_counted_by_kind(server, clock, upbit):
    collectors.collect("upbit", NOW, feed=feed(server, clock))
    t1, t2, t3, t4, t5, t6 = (LAST + 60 * k for k in range(1, 7))
    good = upbit.row
    broken_high = {**good("KRW-XRP", t1), "high_price": 1.0}                       # high below the body
    negative = {**good("KRW-XRP", t2), "low_price": -5}                            # negative price
    dup_a, dup_b = good("KRW-XRP", t3), {**good("KRW-XRP", t3), "trade_price": 717.0, "high_price": 800.0}
    spike = {**good("KRW-XRP", t4), "trade_price": 5000.0, "high_price": 5000.0}   # a bad print that comes back
    off_grid = {**good("KRW-XRP", t5), "candle_date_time_utc": iso(t5 + 30)}
    unreadable = {k: v for k, v in good("KRW-XRP", t6).items() if k != "candle_date_time_utc"}
    # Upbit sends newest first: dup_b is the second row of the answer, i.e. the earlier one in time order
    upbit.edits["KRW-XRP"] = {t1: [broken_high], t2: [negative], t3: [dup_a, dup_b], t4: [spike],
                              t5: [off_grid], t6: [unreadable]}
    clock.now += 60 * 8
    collectors.collect("upbit", NOW + 60 * 8, feed=feed(server, clock))
    q = quality("KRW-XRP")
    assert q.count("ohlc", "repaired") == 1 and q.count("ohlc", "rejected") == 2      # negative + unreadable
    assert q.count("duplicate", "rejected") == 1
    assert q.count("outlier", "rejected") == 1
    assert q.count("off_grid", "rejected") == 1
    assert q.rows_rejected == 5 and q.rows_repaired == 1
    assert "candles:" in q.last_problem and q.last_problem_at is not None
    stored = dict(Candle.objects.filter(exchange="upbit", symbol="KRW-XRP", ts__gt=LAST).values_list("ts", "close"))
    assert t2 not in stored and t4 not in stored and t6 not in stored and t5 not in stored
    assert float(stored[t3]) == dup_a["trade_price"]                 # the last row of a timestamp wins
    high = Candle.objects.get(exchange="upbit", symbol="KRW-XRP", ts=t1).high
    assert high == max(D(str(broken_high["opening_price"])), D(str(broken_high["trade_price"])))
    assert quality("KRW-BTC").rows_rejected == 0                    # other markets untouched


def test_stale_and_crossed_books_are_rejected_and_the_old_snapshot_stays(server, clock, upbit):
    collectors.collect("upbit", NOW, feed=feed(server, clock))
    first = MarketSnapshot.objects.get(exchange="upbit", symbol="KRW-BTC").ts
    upbit.book_age = 600.0
    clock.now += 60
    collectors.collect("upbit", NOW + 60, feed=feed(server, clock))
    assert MarketSnapshot.objects.get(exchange="upbit", symbol="KRW-BTC").ts == first
    assert quality("KRW-BTC").count("stale", "rejected") == 1
    assert re.search(r"book: book \d+ s old", quality("KRW-BTC").last_problem)
    upbit.book_age = 0.0
    upbit.crossed = {"KRW-XRP"}
    clock.now += 60
    collectors.collect("upbit", NOW + 120, feed=feed(server, clock))
    assert MarketSnapshot.objects.get(exchange="upbit", symbol="KRW-BTC").ts > first
    assert MarketSnapshot.objects.get(exchange="upbit", symbol="KRW-XRP").ts == first
    assert quality("KRW-XRP").count("book", "rejected") == 1 and "crossed book" in quality("KRW-XRP").last_problem


def test_429_is_ridden_out_with_backoff(server, clock, upbit):
    calls = {"n": 0}
    handler = upbit.candles

    def flaky(rec):
        calls["n"] += 1
        if calls["n"] == 2:
            return Reply({"error": {"name": "too_many_requests"}}, 429, {"Remaining-Req": "group=candle; min=0; sec=0"})
        return handler(rec)

    server.add("GET", "/v1/candles/minutes/1", flaky)
    report = collectors.collect("upbit", NOW, feed=feed(server, clock))
    assert not report.stopped and not report.pending
    assert any(s > 0 for s in clock.sleeps)                          # backed off before retrying
    assert Candle.objects.filter(exchange="upbit", symbol="KRW-BTC").count() == marketdata.LEADER_KEEP_BARS


def test_persistent_429_stops_the_run_keeps_what_was_read_and_reports(server, clock, upbit):
    from traders.models_runbook import ExchangeBackoff

    n = {"calls": 0}
    handler = upbit.candles

    def limited(rec):
        n["calls"] += 1
        if n["calls"] > 15:                                          # after the leader's history
            return Reply({"error": {"name": "too_many_requests"}}, 429)
        return handler(rec)

    server.add("GET", "/v1/candles/minutes/1", limited)
    with pytest.raises(RateLimitedError) as info:
        collectors.collect("upbit", NOW, feed=feed(server, clock, max_retries=2))
    assert info.value.exchange == "upbit"
    assert Candle.objects.filter(exchange="upbit", symbol="KRW-BTC").count() == marketdata.LEADER_KEEP_BARS
    assert quality("KRW-BTC").fetched_to == LAST
    assert not Candle.objects.filter(exchange="upbit", symbol="KRW-XRP").exists()

    from execution import tasks

    f = feed(server, clock, max_retries=0)
    collectors._FEEDS["upbit"] = f
    try:
        result = tasks.collect_exchange("upbit", NOW)
    finally:
        collectors._FEEDS.pop("upbit")
    assert "stopped by the venue (RateLimitedError)" in result
    assert ExchangeBackoff.objects.get(exchange="upbit").reports == 1


def test_418_stops_at_once_and_no_request_is_sent_during_the_ban(server, clock, upbit):
    server.add("GET", "/v1/candles/minutes/1", Reply({"error": {"name": "banned"}}, 418, {"Retry-After": "300"}))
    f = feed(server, clock)
    with pytest.raises(BannedError) as info:
        collectors.collect("upbit", NOW, feed=f)
    assert info.value.exchange == "upbit" and len(candle_calls(server)) == 1
    sent = len(server.requests)
    with pytest.raises(BannedError):
        collectors.collect("upbit", NOW + 1, feed=f)
    assert len(server.requests) == sent                              # nothing sent while banned


def test_timeout_and_malformed_json_skip_one_market_only(server, clock, upbit):
    handler = upbit.candles

    def sometimes_bad(rec):
        if rec.query["market"] == ["KRW-XRP"]:
            return Reply(raw="<html>gateway</html>")
        if rec.query["market"] == ["KRW-LOOM"]:
            return Reply([], delay=0.6)                               # read timeout (0.3 s), retried, gives up
        return handler(rec)

    server.add("GET", "/v1/candles/minutes/1", sometimes_bad)
    report = collectors.collect("upbit", NOW, feed=feed(server, clock, max_retries=1))
    assert set(report.failed) == {"KRW-XRP", "KRW-LOOM"}
    assert "malformed JSON" in quality("KRW-XRP").last_problem
    assert "read timeout" in quality("KRW-LOOM").last_problem
    assert quality("KRW-XRP").fetched_to is None
    assert Candle.objects.filter(exchange="upbit", symbol="KRW-BTC").count() == marketdata.LEADER_KEEP_BARS
    assert MarketSnapshot.objects.filter(exchange="upbit").count() == 3


def test_request_budget_spreads_the_backfill_over_runs(server, clock, upbit):
    collector = collectors.VenueCollector(feed(server, clock), max_requests=17)
    report = collector.run(NOW)
    assert report.requests == 17 and report.pending == ["KRW-XRP", "KRW-LOOM"]
    xrp = Candle.objects.filter(exchange="upbit", symbol="KRW-XRP").order_by("ts").values_list("ts", flat=True)
    assert len(xrp) == 400 and xrp[0] == LAST - (marketdata.WINDOW_BARS - 1) * 60    # oldest first, no hole
    report = collectors.VenueCollector(feed(server, clock), max_requests=17).run(NOW)
    assert not report.pending
    assert Candle.objects.filter(exchange="upbit", symbol="KRW-XRP").count() == marketdata.WINDOW_BARS


def test_held_market_outside_the_top_n_is_collected(server, clock, upbit, admin_user):
    from execution.models import Position
    from tests.factories import make_trader

    trader = make_trader(admin_user)
    trader.exchange, trader.status = "upbit", "running"
    trader.save()
    Position.objects.create(trader=trader, symbol="KRW-LOOM", qty=D("10"), avg_entry=D("120"), cost=D("1200"),
                            opened_ts=LAST)
    report = collectors.VenueCollector(feed(server, clock), top_n=1).run(NOW)
    assert report.markets == 3                                     # leader, LOOM (held), XRP (top 1)
    report = collectors.VenueCollector(feed(server, clock), top_n=0).run(NOW)
    assert set(MarketSnapshot.objects.filter(exchange="upbit").values_list("symbol", flat=True)) == {"KRW-BTC",
                                                                                                    "KRW-LOOM"}


def test_dispatch_by_name():
    assert "historical" in collectors.collect("replay", NOW).note
    with pytest.raises(ValueError, match="unknown market-data source"):
        collectors.collect("kraken", NOW)
    with pytest.raises(ValueError, match="longer than"):
        collectors.collect("ccxt:coinbaseexchange", NOW)


# ---------------------------------------------------------------------------- ccxt

def test_ccxt_collector_pages_forward_and_counts_gaps(server, clock, settings):
    from execution.adapters.ccxt_adapter import CcxtExchange

    settings.QUANTWEB_CCXT_QUOTE = "USDT"
    collectors._RULES.clear()
    server.add("GET", "/public/exchangeInfo", Reply(fixture("binance/exchange_info_spot.json")))
    ticker = fixture("binance/ticker_24hr.json")
    if isinstance(ticker, dict):
        ticker = [ticker]
    for t in ticker:
        t["closeTime"] = int(NOW * 1000)
    server.add("GET", "/public/ticker/24hr", Reply(ticker))
    depth = fixture("binance/depth.json")
    server.add("GET", "/public/depth", Reply(depth))
    now_ms = int(NOW) * 1000

    def klines(rec: Recorded) -> Reply:
        start, limit = int(rec.query["startTime"][0]), int(rec.query["limit"][0])
        rows, ts = [], start
        while len(rows) < min(limit, 150) and ts <= now_ms:         # the venue caps pages at 150 rows
            if (ts // 60000) % 11 != 4:                             # and has holes
                rows.append([ts, "67000.0", "67010.0", "66990.0", "67005.0", "1.5", ts + 59999, "1", 5, "1", "1", "0"])
            ts += 60000
        return Reply(rows)

    server.add("GET", "/public/klines", klines)
    client = CcxtExchange("binance", options={"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False},
                          clock=clock, sleep=clock.sleep, limiter_registry=LimiterRegistry(rng=random.Random(1)),
                          timeout_ms=300)
    client.client.enableRateLimit = False
    for key in list(client.client.urls["api"]):
        client.client.urls["api"][key] = f"{server.url}/{key}"
    feed_ = collectors.CcxtFeed("binance", client=client)
    report = collectors.collect("ccxt:binance", NOW, feed=feed_)
    assert report.markets >= 1 and not report.failed
    ts = np.array(Candle.objects.filter(exchange="ccxt:binance", symbol="BTC/USDT").order_by("ts")
                  .values_list("ts", flat=True))
    assert ts[-1] == LAST and ts[0] >= LAST - (marketdata.LEADER_KEEP_BARS - 1) * 60
    assert not ((ts // 60) % 11 == 4).any()
    pages = server.calls("GET", "/public/klines")
    assert all(int(p.query["limit"][0]) <= 200 for p in pages)
    q = quality("BTC/USDT", "ccxt:binance")
    assert q.count("gap", "flagged") == int(((np.arange(ts[0], ts[-1] + 60, 60) // 60) % 11 == 4).sum())
    assert q.fetched_to == LAST
    view = marketdata.load_view("ccxt:binance", LAST)
    assert view.candles.symbols[0] == "BTC/USDT" and view.books["BTC/USDT"].best_bid > 0


def test_a_paper_trader_on_upbit_ticks_on_the_collected_prices(server, clock, upbit, admin_user):
    """PAPER on real prices [EXE-4]: the tick reads the Upbit source like the sim (no venue call)."""
    from strategies.models import ScanRun
    from tests.factories import make_trader
    from traders.models import Trader
    from traders.trading import run_tick

    trader = make_trader(admin_user)
    Trader.objects.filter(pk=trader.pk).update(exchange="upbit", status="running")
    collectors.collect("upbit", NOW, feed=feed(server, clock))
    sent = len(server.requests)
    report = run_tick(trader.pk, LAST)
    assert report.outcome == "ok"
    assert len(server.requests) == sent                           # the tick never called the venue
    scan = ScanRun.objects.get(trader=trader, bar_ts=LAST)
    assert scan.regime is not None
