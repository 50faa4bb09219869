"""Data quality counted and visible [EX-5]: book / ticker checks, counting only new rows, the
DataQuality record written by the sim and replay collectors, the read-only API, the dashboard
table, and the leader first in every view."""

from __future__ import annotations

import numpy as np
import pytest
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from execution import collectors, marketdata, quality
from execution.api import DataQualityViewSet
from execution.engine.types import OrderBook, Ticker
from execution.engine.validation import (
    OhlcvSeries,
    check_book,
    check_ticker,
    clean_ohlcv,
    empty_counts,
    quality_counts,
)
from execution.models import DataQuality, MarketSnapshot

NOW = 1_800_000_000.0

router = DefaultRouter()
router.register("data-quality", DataQualityViewSet, basename="api-data-quality")
urlpatterns = [path("api/", include(router.urls))]      # this module is the urlconf of the API tests


def book(bids, asks, ts=NOW) -> OrderBook:
    return OrderBook("KRW-BTC", int(ts), np.array(bids, dtype=float).reshape(-1, 2), np.array(asks, dtype=float).reshape(-1, 2))


# ---------------------------------------------------------------------------- engine checks

def test_book_checks():
    ok = check_book(book([[100, 1], [99, 2]], [[101, 1], [102, 3]]), NOW)
    assert ok.value is not None and ok.problems == () and ok.counts == empty_counts()
    messy = check_book(book([[99, 2], [float("nan"), 1], [100, 1], [100, 4]], [[102, 3], [101, -1], [101.5, 1]]), NOW)
    assert messy.value.bids.tolist() == [[100, 5], [99, 2]] and messy.value.asks.tolist() == [[101.5, 1], [102, 3]]
    assert messy.counts["book"]["repaired"] == 1 and "2 bad levels dropped" in messy.problems[0]
    crossed = check_book(book([[101, 1]], [[100, 1]]), NOW)
    assert crossed.value is None and crossed.counts["book"]["rejected"] == 1 and "crossed" in crossed.problems[0]
    empty = check_book(book([], [[100, 1]]), NOW)
    assert empty.value is None and "empty side" in empty.problems[0]
    stale = check_book(book([[100, 1]], [[101, 1]], ts=NOW - 121), NOW)
    assert stale.value is None and stale.counts["stale"]["rejected"] == 1


def test_ticker_checks():
    t = Ticker("KRW-BTC", int(NOW), 100.0, 99.0, 101.0, 5e9, 1.2)
    assert check_ticker(t, NOW).value == t
    crossed = check_ticker(Ticker("KRW-BTC", int(NOW), 100.0, 102.0, 101.0, -1.0, 0.0), NOW)
    assert np.isnan(crossed.value.bid) and np.isnan(crossed.value.ask) and np.isnan(crossed.value.value_24h)
    assert crossed.counts["book"]["repaired"] == 1
    no_quotes = check_ticker(Ticker("KRW-BTC", int(NOW), 100.0, float("nan"), float("nan"), 1.0, 0.0), NOW)
    assert no_quotes.problems == ()                                  # a ticker without quotes is fine
    assert check_ticker(Ticker("KRW-BTC", int(NOW), 0.0, 1, 2, 1, 0), NOW).value is None
    assert check_ticker(Ticker("KRW-BTC", int(NOW) - 601, 1.0, 1, 2, 1, 0), NOW).counts["stale"]["rejected"] == 1


def series(ts, close, high=None) -> OhlcvSeries:
    ts = np.asarray(ts, dtype=np.int64)
    c = np.asarray(close, dtype=float)
    h = c * 1.001 if high is None else np.asarray(high, dtype=float)
    return OhlcvSeries("KRW-BTC", "1m", ts, c, h, c * 0.999, c, np.ones(len(ts)))


def test_count_from_counts_only_new_rows_and_the_gap_that_ends_in_them():
    rng = np.random.default_rng(1)
    ts = np.arange(0, 60 * 40, 60)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, len(ts))))
    high = close * 1.001
    high[5] = close[5] * 0.9                        # a repair in the context: not counted again
    keep = np.ones(len(ts), bool)
    keep[[10, 11, 36]] = False                     # a hole in the context and one among the new rows
    s = series(ts[keep], close[keep], high[keep])
    whole, mq_all = clean_ohlcv(s, grid_offset=0)
    assert mq_all.count("high_below_body") == 1 and mq_all.count("missing_bars") == 3
    part, mq_new = clean_ohlcv(s, grid_offset=0, count_from=int(ts[30]))
    assert mq_new.count("high_below_body") == 0 and mq_new.count("missing_bars") == 1
    np.testing.assert_array_equal(whole.high, part.high)                 # cleaned all the same
    boundary, mq_b = clean_ohlcv(series(ts[keep], close[keep]), grid_offset=0, count_from=int(ts[12]))
    assert mq_b.count("missing_bars") == 3                               # the hole before the first new bar counts
    assert quality_counts(mq_all)["ohlc"]["repaired"] == 1 and quality_counts(mq_all)["gap"]["flagged"] == 3


# ---------------------------------------------------------------------------- sim and replay collectors

@pytest.fixture
def small_sim(settings):
    settings.QUANTWEB_SIM_SEED, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_WARMUP_BARS = 7, 6, 120
    marketdata._view_cache.clear()


@pytest.mark.django_db
def test_sim_collector_validates_and_records_every_market(small_sim):
    report = collectors.collect("sim", NOW)
    assert report.bars == 120 and report.newest_bar == marketdata.last_closed_bar(NOW)
    rows = {q.symbol: q for q in DataQuality.objects.filter(exchange="sim")}
    assert len(rows) == 6
    btc = rows["KRW-BTC"]
    assert btc.rows_checked == 120 + 2 and btc.rows_rejected == 0 and btc.rows_repaired == 0
    assert btc.last_good_ts == report.newest_bar and btc.last_snapshot_ts == report.newest_bar + 60
    assert btc.last_problem == ""
    collectors.collect("sim", NOW + 60)
    btc.refresh_from_db()
    assert btc.rows_checked == 120 + 2 + 1 + 2 and btc.last_good_ts == report.newest_bar + 60


@pytest.mark.django_db
def test_replay_load_records_quality_and_replaces_the_previous_load(tmp_path):
    rows = ["timestamp,open,high,low,close,volume"]
    t0 = 1_700_000_000 // 60 * 60
    for k in range(50):
        rows.append(f"{t0 + 60 * k},100,101,99,100.5,3")
    rows.append(f"{t0 + 60 * 20},100,101,99,100.7,3")          # duplicate timestamp
    rows.append(f"{t0 + 60 * 50},100,99,99.5,100.2,3")         # high below the body
    path_ = tmp_path / "KRW-TEST.csv"
    path_.write_text("\n".join(rows) + "\n")
    data = collectors.load_replay_files([path_])
    assert data.candles.symbols == ("KRW-TEST",)
    q = DataQuality.objects.get(exchange="replay", symbol="KRW-TEST")
    assert q.count("duplicate", "rejected") == 1 and q.count("ohlc", "repaired") == 1
    assert q.rows_checked == 52 and q.last_good_ts == t0 + 60 * 50
    collectors.load_replay_files([path_])
    q.refresh_from_db()
    assert q.count("duplicate", "rejected") == 1 and q.rows_checked == 52          # replaced, not doubled


@pytest.mark.django_db
def test_record_adds_counts_and_keeps_the_newest_times():
    res = quality.MarketResult()
    res.add("ohlc", "rejected", 2, "2 unreadable rows")
    res.last_good_ts = 600
    quality.record("upbit", {"KRW-BTC": res})
    older = quality.MarketResult(last_good_ts=540)
    older.add("gap", "flagged", 3)
    quality.record("upbit", {"KRW-BTC": older})
    q = DataQuality.objects.get(exchange="upbit", symbol="KRW-BTC")
    assert q.count("ohlc", "rejected") == 2 and q.count("gap", "flagged") == 3
    assert (q.rows_rejected, q.rows_flagged, q.rows_checked, q.last_good_ts) == (2, 3, 5, 600)
    assert q.last_problem == "2 unreadable rows"
    with pytest.raises(KeyError):
        res.add("weird", "rejected")


@pytest.mark.django_db
def test_view_puts_the_leader_first_whatever_the_snapshot_order(small_sim):
    collectors.collect("sim", NOW)
    bar = marketdata.latest_bar("sim")
    btc = MarketSnapshot.objects.get(exchange="sim", symbol="KRW-BTC")
    btc.delete()
    btc.pk = None
    btc.save()                                                  # now the newest snapshot row
    marketdata._view_cache.clear()
    view = marketdata.load_view("sim", bar)
    assert view.candles.symbols[0] == "KRW-BTC" and view.leader_history.symbols == ("KRW-BTC",)
    assert marketdata.leader_of(["BTC-ETH", "USDT-BTC"]) == "USDT-BTC"
    assert marketdata.leader_of(["ETH/USDT", "BTC/USDT"]) == "BTC/USDT"


# ---------------------------------------------------------------------------- API

def _rows():
    counts = empty_counts()
    counts["duplicate"]["rejected"] = 4
    DataQuality.objects.create(exchange="upbit", symbol="KRW-XRP", counts=counts, rows_checked=50, rows_rejected=4,
                               last_good_ts=int(NOW), last_problem="candles: 4 duplicate rejected")
    DataQuality.objects.create(exchange="sim", symbol="KRW-BTC", counts=empty_counts(), rows_checked=9)
    DataQuality.objects.create(exchange="ccxt:binance", symbol="BTC/USDT", counts=empty_counts(), rows_checked=1)


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_api_lists_filters_and_is_read_only(client, admin_user):
    _rows()
    assert client.get("/api/data-quality/").status_code in (401, 403, 302)
    client.force_login(admin_user)
    data = client.get("/api/data-quality/").json()
    assert [r["exchange"] for r in data["results"]] == ["ccxt:binance", "sim", "upbit"]
    xrp = client.get("/api/data-quality/", {"exchange": "upbit", "problems": "true"}).json()["results"]
    assert len(xrp) == 1 and xrp[0]["counts"]["duplicate"]["rejected"] == 4 and xrp[0]["rows_rejected"] == 4
    assert xrp[0]["age_seconds"] is not None and xrp[0]["last_problem"].startswith("candles")
    assert client.get("/api/data-quality/", {"exchange": "ccxt:binance", "symbol": "BTC/USDT"}).json()["count"] == 1
    assert client.get("/api/data-quality/", {"problems": "false"}).json()["count"] == 2
    detail = client.get(f"/api/data-quality/{xrp[0]['id']}/").json()
    assert detail["symbol"] == "KRW-XRP"
    for bad in ({"exchange": "kraken"}, {"symbol": "no spaces"}, {"problems": "maybe"}, {"nope": "1"}):
        response = client.get("/api/data-quality/", bad)
        assert response.status_code == 400, bad
    assert client.post("/api/data-quality/", {}).status_code == 405
    assert client.delete(f"/api/data-quality/{xrp[0]['id']}/").status_code == 405


# ---------------------------------------------------------------------------- dashboard table

@pytest.mark.django_db
def test_table_lists_problems_first_and_summarises_each_source():
    from django.template import Context, Template

    _rows()
    html = Template("{% load quality_tags %}{% data_quality_table limit=2 %}").render(Context({}))
    assert html.index('data-market="KRW-XRP"') < html.index('data-market="BTC/USDT"')
    assert 'data-market="KRW-BTC"' not in html and "1 more market" in html
    assert "upbit</span>: 1 market, 4 rejected" in html and "1 with problems" in html
    assert "candles: 4 duplicate rejected" in html
    DataQuality.objects.all().delete()
    assert "No market data collected yet" in Template("{% load quality_tags %}{% data_quality_table %}").render(Context({}))


def test_age_filter():
    from execution.templatetags.quality_tags import age, utc_time

    assert [age(x) for x in (None, 5, 95, 3725, 90000)] == ["—", "5s", "1m 35s", "1h 02m", "1d 1h"]
    assert utc_time(1_767_225_600) == "2026-01-01 00:00"
