"""[AL-3] Exchange rate limited -> back off and scan less often.

A ``RateLimitedError`` / ``BannedError`` from a tick or the collector widens that exchange's tick
interval (doubling, at most once per widened interval, capped at ``QUANTWEB_RATELIMIT_MAX_FACTOR``
bars); the dispatcher then ticks that exchange's traders less often while other exchanges keep
ticking every bar; each quiet period halves the interval again until it is back to every bar.
Every change is an event, and the state is in /metrics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.management import call_command

from execution.adapters.base import BannedError, RateLimitedError
from execution.models import Candle
from tests.traders.runbook.helpers import T0, eager_trader
from traders import runbook, tasks
from traders.models import Event
from traders.models_runbook import ExchangeBackoff

pytestmark = pytest.mark.django_db


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


@pytest.fixture
def two_exchanges(sim, monkeypatch):
    """``alpha`` on the sim exchange, ``bravo`` on upbit (one stored candle is all the dispatcher
    needs to know upbit's newest bar); the dispatcher's enqueues are recorded, not sent."""
    tasks.collect_market_data(T0)
    alpha = eager_trader("alpha")
    bravo = eager_trader("bravo", exchange="upbit")
    Candle.objects.create(exchange="upbit", symbol="KRW-BTC", timeframe="1m", ts=int(T0) - 120, open=Decimal(1),
                          high=Decimal(1), low=Decimal(1), close=Decimal(1), volume=Decimal(1))
    queued = []
    monkeypatch.setattr(tasks, "async_task", lambda func, *args, **kwargs: queued.append((func, args, kwargs)))
    monkeypatch.setattr(tasks, "collect_market_data", lambda now: 0)
    return alpha, bravo, queued


def ticked(queued: list, since: int = 0) -> list[str]:
    return sorted(kwargs["exchange"] for func, args, kwargs in queued[since:] if func == "traders.tasks.tick_trader")


def dispatch_at(queued: list, seconds: float) -> tuple[list[str], dict]:
    before = len(queued)
    summary = tasks.dispatch(now=T0 + seconds)
    return ticked(queued, before), summary


def test_a_rate_limited_tick_widens_its_exchanges_interval_and_others_keep_ticking(two_exchanges, monkeypatch):
    alpha, bravo, queued = two_exchanges
    assert dispatch_at(queued, 0)[0] == ["sim", "upbit"]

    def limited(trader_id, bar_ts, **kwargs):
        raise RateLimitedError("upbit GET /v1/orders: rate limited (HTTP 429)", retry_after=1.0)

    monkeypatch.setattr("traders.trading.run_tick", limited)
    monkeypatch.setattr(runbook.timezone, "now", lambda: at(10))
    outcome = tasks.tick_trader(bravo.pk, int(T0) - 120, exchange="upbit")
    assert outcome == "rate-limited: RateLimitedError; upbit ticks less often"
    row = ExchangeBackoff.objects.get(exchange="upbit")
    assert (row.factor, row.reports, row.last_error) == (
        2, 1, "RateLimitedError: upbit GET /v1/orders: rate limited (HTTP 429)")
    event = Event.objects.get(kind="RATE_LIMIT_BACKOFF")
    assert (event.level, event.data["exchange"], event.data["factor"]) == ("WARN", "upbit", 2)
    assert "Ticking every 2 bars instead of every 1" in event.message

    ticks, summary = dispatch_at(queued, 60)
    assert ticks == ["sim"]                                                    # upbit waits a bar
    assert summary["held_back"] == {"upbit": "rate-limit back-off: every 2 bars"}
    assert dispatch_at(queued, 120)[0] == ["sim", "upbit"]                    # every second bar
    assert dispatch_at(queued, 180)[0] == ["sim"]
    assert dispatch_at(queued, 240)[0] == ["sim", "upbit"]


def test_widening_doubles_once_per_interval_up_to_the_cap_then_quiet_periods_restore_it(two_exchanges, settings):
    alpha, bravo, queued = two_exchanges
    settings.QUANTWEB_RATELIMIT_MAX_FACTOR = 8
    settings.QUANTWEB_RATELIMIT_QUIET_SECONDS = 600
    error = RateLimitedError("429")
    for _ in range(5):                            # a burst inside one tick widens once
        runbook.report_rate_limited("upbit", error, now=at(0))
    assert ExchangeBackoff.objects.get(exchange="upbit").factor == 2
    factors = []
    for seconds in (60, 120, 360, 840, 1800, 2800):   # reports keep coming, each after the widened interval
        factors.append(runbook.report_rate_limited("upbit", error, now=at(seconds)).factor)
    assert factors == [2, 4, 8, 8, 8, 8]
    assert ExchangeBackoff.objects.get(exchange="upbit").reports == 11

    quiet_start = 2800
    seen = []
    for minute in range(1, 41):
        ticks, summary = dispatch_at(queued, quiet_start + 60 * minute)
        seen.append((minute, "upbit" in ticks, ExchangeBackoff.objects.get(exchange="upbit").factor))
    factor_at = {minute: factor for minute, _, factor in seen}
    assert (factor_at[9], factor_at[10], factor_at[19], factor_at[20], factor_at[29], factor_at[30]) == (8, 4, 4, 2, 2, 1)
    # Every 8 bars, then every 4, every 2, and every bar again from the third quiet period on.
    assert [minute for minute, tick, _ in seen if tick] == [1, 9, 13, 17, 20, 22, 24, 26, 28, *range(30, 41)]
    kinds = list(Event.objects.filter(kind__startswith="RATE_LIMIT").order_by("id").values_list("kind", flat=True))
    assert kinds == ["RATE_LIMIT_BACKOFF"] * 3 + ["RATE_LIMIT_EASED", "RATE_LIMIT_EASED", "RATE_LIMIT_RESTORED"]


def test_a_ban_stops_the_exchanges_ticks_until_it_ends(two_exchanges):
    alpha, bravo, queued = two_exchanges
    runbook.report_rate_limited("upbit", BannedError("418", until_ts=T0 + 300), now=at(0))
    event = Event.objects.get(kind="EXCHANGE_BANNED")
    assert event.level == "CRITICAL" and event.data["until"] == at(300).isoformat()
    held = [dispatch_at(queued, s)[0] for s in (60, 120, 180, 240)]
    assert held == [["sim"]] * 4
    assert dispatch_at(queued, 300)[0] == ["sim", "upbit"]


def test_a_rate_limited_collector_is_reported_and_the_dispatch_goes_on(two_exchanges, monkeypatch):
    alpha, bravo, queued = two_exchanges

    def collector(now):
        raise RateLimitedError("sim candles: rate limited")

    monkeypatch.setattr(tasks, "collect_market_data", collector)
    ticks, summary = dispatch_at(queued, 0)
    assert summary["bars"] == 0 and ticks == ["upbit"]            # sim was just limited: it waits
    assert ExchangeBackoff.objects.get(exchange="sim").factor == 2
    assert [func for func, *_ in queued][-1] == "traders.alerts.drain"


def test_the_inline_dispatcher_honours_the_back_off(sim, capsys):
    eager_trader("alpha")
    call_command("dispatch")
    runbook.report_rate_limited("sim", RateLimitedError("429"), now=datetime.now(UTC))
    call_command("dispatch")
    out = capsys.readouterr().out.strip().splitlines()
    assert '"outcome":"held-back"' in out[-1] and "rate-limit back-off: every 2 bars" in out[-1]


def test_back_off_state_is_in_the_metrics(db):
    runbook.report_rate_limited("upbit", RateLimitedError("429"), now=at(0))
    runbook.report_rate_limited("upbit", BannedError("418", until_ts=T0 + 10**9), now=at(200))
    text = "\n".join(runbook.prometheus_lines(now=at(300)))
    assert 'quantweb_exchange_tick_interval_factor{exchange="upbit"} 4' in text
    assert 'quantweb_exchange_rate_limited_total{exchange="upbit"} 2' in text
    assert 'quantweb_exchange_banned{exchange="upbit"} 1' in text
    assert text.count("# TYPE quantweb_exchange_tick_interval_factor gauge") == 1


def test_the_families_plug_into_the_metrics_exposition_grouped_per_family(db):
    from traders.metrics import Exposition

    runbook.report_rate_limited("upbit", RateLimitedError("429"), now=at(0))
    runbook.report_rate_limited("sim", RateLimitedError("429"), now=at(0))
    out = Exposition()
    runbook.add_metrics(out, now=at(10))
    text = out.render()
    assert text == "\n".join(runbook.prometheus_lines(now=at(10))) + "\n"
    lines = text.splitlines()
    factor = [i for i, line in enumerate(lines) if line.startswith("quantweb_exchange_tick_interval_factor{")]
    assert factor == [factor[0], factor[0] + 1]          # both exchanges' samples sit together
    assert "# TYPE quantweb_exchange_rate_limited_total counter" in lines


def test_a_tick_that_waited_longer_than_a_bar_is_skipped_without_touching_the_database(db, django_assert_num_queries):
    import time

    with django_assert_num_queries(0):
        outcome = tasks.tick_trader(1, int(T0), exchange="sim", enqueued_at=time.time() - 75)
    assert outcome.startswith("stale: waited 75 s in the queue")


def test_dispatched_ticks_carry_their_enqueue_time_so_a_late_one_is_skipped(two_exchanges):
    import time

    alpha, bravo, queued = two_exchanges
    summary = tasks.dispatch()
    assert summary["ticks_queued"] == 2 and "held_back" not in summary
    assert not ExchangeBackoff.objects.exists()     # no row is written for an exchange that was never limited
    ticks = [(args, kwargs) for func, args, kwargs in queued if func == "traders.tasks.tick_trader"]
    assert sorted(args[0] for args, _ in ticks) == sorted([alpha.pk, bravo.pk])
    assert all(abs(kwargs["enqueued_at"] - time.time()) < 30 and kwargs["group"] == "ticks" for _, kwargs in ticks)
