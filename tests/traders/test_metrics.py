"""Metrics [AL-2] on constructed rows with exact expected values, the Prometheus exposition
format parsed back, the query budget, and the /metrics authentication."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from execution.models import Candle, Fill, Order, Position, Trade
from regime.models import MarketRegime
from strategies.models import Signal
from tests.factories import make_trader
from traders import metrics
from traders.models import EquitySnapshot, Trader

pytestmark = pytest.mark.django_db

NOW = time.time()
DAY_START = int(NOW) - int(NOW) % 86_400
BAR_TS = int(NOW) // 60 * 60 - 60
T0 = datetime.fromtimestamp(NOW - 3600, UTC)
WEIRD = 'beta "q" \\ x'


def _position(trader, symbol, qty, entry, stop, last, status=Position.Status.OPEN) -> Position:
    return Position.objects.create(trader=trader, symbol=symbol, qty=D(qty), avg_entry=D(entry), cost=D(qty) * D(entry),
                                   stop_price=D(stop) if stop is not None else None, last_price=D(last),
                                   opened_ts=BAR_TS - 3600, status=status)


def _order(trader, n, *, side="buy", purpose="entry", type_="limit", price=None, qty="1", status="filled",
           filled="0", avg=None, error="", signal=None, created=T0, fill_after=None) -> Order:
    order = Order.objects.create(
        trader=trader, client_order_id=f"t{trader.pk}-{n}", mode="PAPER", symbol="BTC", side=side, type=type_,
        purpose=purpose, price=D(price) if price else None, qty=D(qty), status=status, filled_qty=D(filled),
        avg_price=D(avg) if avg else None, error=error, signal=signal, bar_ts=BAR_TS)
    Order.objects.filter(pk=order.pk).update(created_at=created)
    if fill_after is not None:
        fill = Fill.objects.create(order=order, trader=trader, trade_id=f"f{order.pk}", symbol="BTC", side=side,
                                   price=D(avg), qty=D(filled), fee=D("0"), liquidity="taker", ts=BAR_TS)
        Fill.objects.filter(pk=fill.pk).update(created_at=created + timedelta(seconds=fill_after))
    return order


def _signal(trader, liquidity_cap: float, entry: str) -> Signal:
    checks = [{"check": "liquidity", "passed": True, "code": "LIQUIDITY_OK", "detail": "..."},
              {"code": "SIZING", "passed": True, "detail": {"entry_price": entry, "caps": {"CAP_LIQUIDITY": liquidity_cap}}}]
    return Signal.objects.create(trader=trader, symbol="BTC", bar_ts=BAR_TS, base_score=80, total_score=80,
                                 final_score=80, action="ENTER", checks=checks)


def _trade(trader, position, pnl, held, strategy) -> Trade:
    return Trade.objects.create(trader=trader, position=position, symbol=position.symbol, mode="PAPER", qty=D(1),
                                entry_price=D(100), exit_price=D(100), entry_ts=BAR_TS - held, exit_ts=BAR_TS,
                                pnl=D(pnl), fees=D(0), exit_reason="EXIT", strategy=strategy)


@pytest.fixture
def book(admin_user):
    """alpha (STANDARD) with positions, orders and trades; beta (SAFETY FIRST) over its risk
    budget with two perfectly correlated positions; a removed trader that must not count."""
    MarketRegime.objects.create(exchange="sim", bar_ts=BAR_TS, label="TREND", regime_score=70, confidence=0.8, inputs={})
    alpha = make_trader(admin_user, name="alpha", key="STANDARD", seed=D("10000000"))
    beta = make_trader(admin_user, name="beta", key="SAFETY_FIRST", seed=D("1000000"))
    gone = make_trader(admin_user, name="gone", seed=D("1000000"))
    Trader.objects.filter(pk=alpha.pk).update(equity=D("10200000"))
    Trader.objects.filter(pk=beta.pk).update(name=WEIRD + "\nline2", equity=D("1000000"))
    Trader.objects.filter(pk=gone.pk).update(removed_at=timezone.now())
    EquitySnapshot.objects.create(trader=alpha, ts=DAY_START - 120, equity=D("9000000"), cash=D(0), seed_money=D("10000000"))
    EquitySnapshot.objects.create(trader=alpha, ts=DAY_START - 60, equity=D("10000000"), cash=D(0), seed_money=D("10000000"))
    EquitySnapshot.objects.create(trader=alpha, ts=DAY_START + 60, equity=D("12000000"), cash=D(0), seed_money=D("10000000"))

    _position(alpha, "BTC", "2", "100000", "95000", "110000")          # risk 10,000, unrealised +20,000
    _position(alpha, "ETH", "10", "50000", "48000", "45000")           # risk 20,000, unrealised -50,000
    _position(alpha, "XRP", "0", "500", "480", "500")                  # a resting entry: not a position yet
    closed = _position(alpha, "SOL", "0", "200", None, "210", status=Position.Status.CLOSED)
    _position(gone, "BTC", "5", "100000", "1", "100000")

    _order(alpha, 1, price="100000", qty="2", filled="2", avg="100050", signal=_signal(alpha, 20.0, "100000"),
           fill_after=2)
    _order(alpha, 2, price="50000", qty="10", filled="10", avg="49995", signal=_signal(alpha, 50.0, "50000"),
           fill_after=4)
    _order(alpha, 3, side="sell", purpose="exit", type_="market", filled="1", avg="110000", fill_after=1)
    _order(alpha, 4, status="rejected", error="insufficient funds", price="100")
    _order(alpha, 5, status="cancelled", error="timeout: remainder cancelled", price="100")
    _order(alpha, 6, status="cancelled", error="venue error: order not found", price="100")
    _order(alpha, 7, side="sell", purpose="exit", price="110000", filled="1", avg="109900", fill_after=3)
    _order(alpha, 8, status="rejected", error="old", created=datetime.fromtimestamp(NOW - 25 * 3600, UTC))

    for pnl, held, strategy in [("300", 600, "TP"), ("100", 1200, "TP"), ("-200", 1800, "TP"), ("-100", 300, "VCB")]:
        _trade(alpha, closed, pnl, held, strategy)

    _position(beta, "BTC", "1", "100000", "82000", "100000")            # risk 18,000 = 1.8 % of 2 % budget
    _position(beta, "SOL", "10", "200", None, "200")
    rng = np.random.default_rng(3)
    btc = 100000 * np.exp(np.cumsum(rng.normal(0, 0.002, metrics.CORR_BARS)))
    first = BAR_TS - (metrics.CORR_BARS - 1) * 60
    Candle.objects.bulk_create([
        Candle(exchange="sim", symbol=symbol, timeframe="1m", ts=first + i * 60, open=D(1), high=D(1), low=D(1),
               close=D(repr(float(c * scale))), volume=D(1))
        for symbol, scale in (("BTC", 1.0), ("SOL", 0.002)) for i, c in enumerate(btc)
    ])
    return alpha, beta


def test_per_trader_metrics_are_exact(book):
    alpha, beta = book
    report = metrics.collect(NOW)
    assert [t.trader_id for t in report.traders] == [alpha.pk, beta.pk]
    a, b = report.traders

    assert (a.max_positions, a.open_positions, a.remaining_slots) == (5, 2, 3)
    assert a.portfolio_risk_pct == pytest.approx(30_000 / 10_200_000 * 100)
    assert a.remaining_risk_budget_pct == pytest.approx(5 - 30_000 / 10_200_000 * 100)
    assert a.daily_pnl_pct == pytest.approx(2.0)
    assert (a.largest_unrealised_symbol, a.largest_unrealised_pct) == ("ETH", pytest.approx(-50_000 / 10_200_000 * 100))
    # depth = CAP_LIQUIDITY * entry / 0.3: 6,666,666.67 and 8,333,333.33 for 200,000 and 500,000
    assert a.orders.avg_depth_ratio == pytest.approx((0.03 + 0.06) / 2)
    # (+50 * 2) + (-5 * 10) + (sell 100 below the limit: +100), over 200,000 + 500,000 + 110,000
    assert a.orders.slippage_bps == pytest.approx(150 / 810_000 * 10_000)
    assert (a.orders.total, a.orders.failed) == (7, 2)
    assert a.orders.failed_rate == pytest.approx(2 / 7)
    assert a.orders.fill_latency == pytest.approx((2 + 4 + 1 + 3) / 4)
    tp, vcb = a.strategies["TP"], a.strategies["VCB"]
    assert (tp.trades, tp.wins, tp.win_rate, tp.profit_factor, tp.avg_holding_seconds) == (
        3, 2, pytest.approx(2 / 3), pytest.approx(2.0), pytest.approx(1200.0))
    assert (vcb.win_rate, vcb.profit_factor, vcb.avg_holding_seconds) == (0.0, 0.0, 300.0)
    assert (a.overall.win_rate, a.overall.profit_factor, a.overall.avg_holding_seconds) == (
        0.5, pytest.approx(400 / 300), 975.0)
    assert a.avg_corr is None                       # no ETH candles: not computable
    assert a.alarms == ["FAILED_ORDERS_HIGH"]

    assert (b.max_positions, b.open_positions, b.remaining_slots) == (3, 2, 1)
    assert b.portfolio_risk_pct == pytest.approx(1.8)
    assert b.remaining_risk_budget_pct == pytest.approx(0.2)
    assert b.daily_pnl_pct == 0.0                   # no snapshot before midnight: against the seed
    assert b.avg_corr == pytest.approx(1.0)
    assert (b.orders.failed_rate, b.overall.win_rate, b.overall.profit_factor) == (None, None, None)
    assert b.alarms == ["RISK_BUDGET_LOW", "CORRELATION_HIGH"]


def test_dashboard_metrics_is_json_safe_with_overall_values(book):
    data = metrics.dashboard_metrics(NOW)
    json.dumps(data, allow_nan=False)
    overall = data["overall"]
    assert overall["traders"] == 2
    assert (overall["max_positions"], overall["open_positions_count"], overall["remaining_slots"]) == (8, 4, 4)
    assert overall["portfolio_risk_pct"] == round(48_000 / 11_200_000 * 100, 6)
    assert overall["daily_pnl_pct"] == round((11_200_000 / 11_000_000 - 1) * 100, 6)
    assert overall["largest_unrealised_pct"] == round(-50_000 / 10_200_000 * 100, 6)
    assert overall["largest_unrealised"] == {"trader": "alpha", "symbol": "ETH"}
    assert overall["failed_order_rate"] == round(2 / 7, 6)
    assert overall["api_latency_seconds"] is None and "not measured" in data["notes"]["api_latency_seconds"]
    assert overall["alarms"] == {"RISK_BUDGET_LOW": 1, "CORRELATION_HIGH": 1, "FAILED_ORDERS_HIGH": 1}
    assert data["strategies"]["TP"] == {"trades": 3, "wins": 2, "win_rate": round(2 / 3, 6), "profit_factor": 2.0,
                                        "avg_holding_seconds": 1200.0}
    alpha = data["traders"][0]
    assert alpha["win_rate_by_strategy"] == {"TP": round(2 / 3, 6), "VCB": 0.0}
    assert alpha["remaining_slots"] == 3 and alpha["api_latency_seconds"] is None
    assert [(a["trader"], a["code"]) for a in data["alarms"]] == [
        ("alpha", "FAILED_ORDERS_HIGH"), (WEIRD + "\nline2", "RISK_BUDGET_LOW"), (WEIRD + "\nline2", "CORRELATION_HIGH")]


def test_no_traders_gives_empty_but_valid_output(db):
    data = metrics.dashboard_metrics(NOW)
    assert data["traders"] == [] and data["overall"]["open_positions_count"] == 0
    parse(metrics.prometheus_text())


# -- exposition format ------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse(text: str) -> dict[str, dict]:
    """A strict reader of the text format: HELP and TYPE once each, before the samples."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in families, f"{name} declared twice"
            families[name] = {"help": line.split(" ", 3)[3], "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and families[name]["type"] is None and kind in ("gauge", "counter")
            families[name]["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            assert name == current and families[name]["type"], line
            parsed, rest = {}, labels or ""
            while rest:
                m = LABEL.match(rest)
                assert m, rest
                parsed[m.group(1)] = _unescape(m.group(2))
                rest = rest[m.end():]
            families[name]["samples"].append((parsed, float(value)))
    return families


def test_prometheus_text_parses_back_with_escaped_labels(book):
    alpha, beta = book
    families = parse(metrics.prometheus_text(metrics.collect(NOW)))

    def value(name, **labels):
        (sample,) = [v for lab, v in families[name]["samples"] if all(lab.get(k) == x for k, x in labels.items())]
        return sample

    beta_name = WEIRD + "\nline2"
    assert value("quantweb_trader_open_positions", trader="alpha") == 2
    assert value("quantweb_trader_open_positions", trader=beta_name, trader_id=str(beta.pk), mode="PAPER") == 2
    assert value("quantweb_trader_failed_order_ratio", trader="alpha") == pytest.approx(2 / 7)
    assert value("quantweb_trader_win_ratio", trader="alpha", strategy="TP") == pytest.approx(2 / 3)
    assert value("quantweb_trader_alarm", trader=beta_name, alarm="CORRELATION_HIGH") == 1
    assert value("quantweb_trader_alarm", trader="alpha", alarm="CORRELATION_HIGH") == 0
    assert value("quantweb_strategy_profit_factor", strategy="TP") == 2.0
    assert value("quantweb_open_positions") == 4
    assert value("quantweb_alarm_traders", alarm="RISK_BUDGET_LOW") == 1
    assert value("quantweb_alerts_pending") == 0
    # undefined values are absent, not NaN; API latency is documented as not measured
    assert families["quantweb_trader_api_latency_seconds"]["samples"] == []
    assert "not measured" in families["quantweb_trader_api_latency_seconds"]["help"]
    assert [lab["trader"] for lab, _ in families["quantweb_trader_correlation_avg"]["samples"]] == [beta_name]
    assert all(f["type"] == ("counter" if name.endswith("_total") else "gauge") for name, f in families.items())


def test_label_and_help_escaping():
    assert metrics.escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert metrics.escape_help("x\\y\nz") == "x\\\\y\\nz"
    assert [metrics.format_value(v) for v in (3, 0.5, float("inf"), float("nan"), True)] == ["3", "0.5", "+Inf", "NaN", "1"]


def test_query_count_does_not_grow_with_traders_or_rows(book, admin_user, django_assert_max_num_queries):
    # 13 = the trader metrics (10, one of them the API error window) + one for the market-data
    # quality table + two for the runbook
    with django_assert_max_num_queries(13):
        metrics.prometheus_text(metrics.collect(NOW))
    for n in range(5):
        trader = make_trader(admin_user, name=f"more{n}")
        _position(trader, "BTC", "1", "100", "90", "100")
        _position(trader, "SOL", "1", "100", "90", "100")
        _order(trader, 1, price="100", filled="1", avg="100", fill_after=1)
        _trade(trader, _position(trader, "ETH", "0", "1", None, "1", status=Position.Status.CLOSED), "5", 60, "TP")
    _quality_rows(20)
    with django_assert_max_num_queries(13):
        text = metrics.prometheus_text(metrics.collect(NOW))
    assert len(parse(text)["quantweb_trader_equity"]["samples"]) == 7


# -- /metrics -----------------------------------------------------------------------------------------

def test_metrics_endpoint_auth(client, admin_user, monkeypatch, caplog):
    url = reverse("metrics")
    assert url == "/metrics"
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    assert client.get(url, HTTP_AUTHORIZATION="Bearer anything").status_code == 401   # token auth off

    token = "m3tr1cs-token-0123456789abcdef"
    monkeypatch.setenv("METRICS_TOKEN", token)
    wrong = client.get(url, HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert client.get(url, HTTP_AUTHORIZATION=f"Basic {token}").status_code == 401
    ok = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert ok.status_code == 200
    assert ok["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "quantweb_traders 0" in ok.content.decode()
    assert token not in ok.content.decode()
    client.force_login(admin_user)
    session = client.get(url)
    assert session.status_code == 200
    parse(session.content.decode())
    assert client.post(url, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 405
    assert all(token not in r.getMessage() for r in caplog.records)


# -- market-data quality [EX-5] -----------------------------------------------------------------------

def _quality_rows(n: int) -> None:
    from execution.engine.validation import empty_counts
    from execution.models import DataQuality

    for i in range(n):
        DataQuality.objects.create(exchange="upbit", symbol=f"KRW-X{i}", counts=empty_counts(), rows_checked=i)


def test_data_quality_is_exported_per_market_and_kind(db):
    from execution.engine.validation import empty_counts
    from execution.models import DataQuality

    counts = empty_counts()
    counts["ohlc"]["rejected"], counts["ohlc"]["repaired"], counts["gap"]["flagged"] = 3, 2, 7
    DataQuality.objects.create(exchange="upbit", symbol='KRW-"Q"', counts=counts, rows_checked=120,
                               rows_rejected=3, rows_repaired=2, rows_flagged=7, last_good_ts=BAR_TS)
    DataQuality.objects.create(exchange="sim", symbol="KRW-BTC", counts=empty_counts(), rows_checked=5)
    families = parse(metrics.prometheus_text(metrics.collect(NOW)))

    def value(name, **labels):
        (sample,) = [v for lab, v in families[name]["samples"] if lab == labels]
        return sample

    assert families["quantweb_market_data_rejected_total"]["type"] == "counter"
    assert value("quantweb_market_data_rejected_total", exchange="upbit", market='KRW-"Q"', kind="ohlc") == 3
    assert value("quantweb_market_data_repaired_total", exchange="upbit", market='KRW-"Q"', kind="ohlc") == 2
    assert value("quantweb_market_data_flagged_total", exchange="upbit", market='KRW-"Q"', kind="gap") == 7
    assert value("quantweb_market_data_rejected_total", exchange="sim", market="KRW-BTC", kind="stale") == 0
    assert value("quantweb_market_data_rows_checked_total", exchange="upbit", market='KRW-"Q"') == 120
    assert value("quantweb_market_data_last_good_timestamp_seconds", exchange="upbit", market='KRW-"Q"') == BAR_TS
    age = value("quantweb_market_data_age_seconds", exchange="upbit", market='KRW-"Q"')
    assert age == pytest.approx(NOW - BAR_TS - 60, abs=1)
    # a market without a good bar yet has no timestamp or age sample (absent, not NaN)
    assert not [lab for lab, _ in families["quantweb_market_data_age_seconds"]["samples"] if lab["exchange"] == "sim"]
    rejected_kinds = {lab["kind"] for lab, _ in families["quantweb_market_data_rejected_total"]["samples"]}
    assert rejected_kinds == {"ohlc", "duplicate", "off_grid", "outlier", "stale", "book"}
