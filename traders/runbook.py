"""Runbook behaviour [AL-3]: what the workers do when something around them fails.

1. **Database unreachable.** Worker entry points run inside ``database_guard``. A database
   ``OperationalError`` / ``InterfaceError`` is told apart from a query-level failure (a lock
   timeout, a deadlock) by a probe (a trivial query on a fresh connection): only when the probe fails
   too is it an outage. Then the task returns instead of raising (no failure storm, no crash
   loop), its transaction has rolled back (so no order was recorded, and the exchange is never
   called for an order that is not stored first), broken connections are closed, and a CRITICAL
   alert goes out through ``alerts.send_direct``, which needs no database. The outage is kept in
   a small JSON file in the runbook directory (the database cannot hold it); the first process
   of the host that sees the database answer again claims the file, records the outage in the
   action log and sends the recovery alert. A watchdog thread or process (``watch_database``,
   started by ``manage.py run`` and ``manage.py watchdog``) probes with back-off (10 s doubling
   to 60 s) because nothing scheduled runs while the database is down.
2. **Exchange rate limited.** ``report_rate_limited`` (called by the dispatcher and the tick
   task when an adapter raises ``RateLimitedError`` / ``BannedError``, and by any collector that
   catches one) doubles the exchange's tick interval, at most once per widened interval and up
   to ``max_factor()`` bars; a ban also stops its ticks until the ban ends. ``tick_plan`` tells
   the dispatcher which exchanges tick now and halves the factor after every quiet period.
   Changes are events (``RATE_LIMIT_BACKOFF``, ``RATE_LIMIT_EASED``, ``RATE_LIMIT_RESTORED``,
   ``EXCHANGE_BANNED``) and metrics.
3. **Daily self-test** at 00:00 UTC (``run_selftest``): data freshness per exchange with running
   traders, recent ticks, a test order through the sim adapter and the fill model (never a live
   venue) and the alert channel; stored as ``SelfTestRun``, alerted on failure.

Nothing here imports an exchange adapter at module level: the web imports this module for the
CONFIG page and the metrics, and must never load one [RT-1].
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Count, Max
from django.utils import timezone

from quantweb.logging import redact
from traders import alerts
from traders.models import Event, EventLevel, Trader
from traders.models_runbook import ExchangeBackoff, SelfTestRun, SelfTestStatus

logger = logging.getLogger(__name__)

DB_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
BAR = 60

# Defaults; a settings module may override each with the same name (``getattr(settings, ...)``).
DEFAULTS = {
    "QUANTWEB_DB_PROBE_SECONDS": 10.0,          # watchdog probe interval while the database is up
    "QUANTWEB_DB_PROBE_MAX_SECONDS": 60.0,      # back-off cap while it is down
    "QUANTWEB_DB_ALERT_REPEAT_SECONDS": 900.0,  # a reminder this often during a long outage
    "QUANTWEB_DB_RETRY_SECONDS": 20.0,          # the dispatcher waits this long for the database
    "QUANTWEB_RATELIMIT_MAX_FACTOR": 8,         # widest tick interval: every 8 bars
    "QUANTWEB_RATELIMIT_QUIET_SECONDS": 600.0,  # a quiet period halves the factor again
    "QUANTWEB_SELFTEST_MAX_DATA_AGE": 300.0,    # newest bar / book older than this fails the self-test
}


def setting(name: str):
    return getattr(settings, name, DEFAULTS[name])


def cadence_seconds() -> int:
    """The base tick interval (one bar)."""
    return int(getattr(settings, "QUANTWEB_TICK_SECONDS", BAR))


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}".strip())[:300]


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def record_event(kind: str, message: str, *, level: str, data: dict | None = None, ts: datetime | None = None) -> Event:
    """An action-log row for something that was already alerted directly: like
    ``services.log_event`` but without queuing a second Telegram message."""
    from traders import audit, realtime

    event = Event.objects.create(trader=None, kind=kind, message=message[:500], level=level,
                                 data=audit.normalise_payload(data), ts=ts or timezone.now())
    transaction.on_commit(lambda: realtime.publish(realtime.event_payload(event)))
    return event


def log_event(trader, kind: str, message: str, *, level: str = EventLevel.INFO, data: dict | None = None) -> Event:
    from traders.services import log_event as log

    return log(trader, kind, message, level=level, data=data)


# == 1. database unreachable ====================================================================

class DatabaseUnavailable(Exception):
    """The database did not answer a probe after an error: an outage, already reported."""


def reset_connections() -> None:
    """Close connections that errored or outlived their age, so the next query reconnects.

    Connections inside an atomic block are left alone (closing one would break the block)."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            continue
        try:
            conn.close_if_unusable_or_obsolete()
        except Exception:
            try:
                conn.close()
            except Exception:
                pass


def probe_database(using: str = "default") -> Exception | None:
    """One trivial query on a table every migrated database has; None when it answered, else the
    error. (A bare ``SELECT 1`` would succeed on the empty file SQLite creates when the real one
    is gone.)"""
    reset_connections()
    try:
        with connections[using].cursor() as cursor:
            cursor.execute("SELECT 1 FROM django_migrations WHERE 1 = 0")
            cursor.fetchone()
        return None
    except DatabaseError as exc:
        reset_connections()
        return exc


def _outage_path() -> Path:
    return alerts.runbook_dir() / "db-outage.json"


def read_outage() -> dict | None:
    """The current outage of this host, or None."""
    try:
        return json.loads(_outage_path().read_text())
    except (OSError, ValueError):
        return None


def _write_outage(state: dict, *, exclusive: bool) -> bool:
    path = _outage_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh)
        return True
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return True


def report_database_down(exc: BaseException, where: str, *, now: float | None = None) -> dict:
    """Record a failed database check and alert without the database (deduplicated per host:
    one alert when the outage starts, a reminder every ``QUANTWEB_DB_ALERT_REPEAT_SECONDS``)."""
    now = time.time() if now is None else now
    error = _describe(exc)
    state = None
    try:
        state = read_outage()
        if state is None:
            fresh = {"since": now, "where": where, "error": error, "failures": 1, "last": now}
            if _write_outage(fresh, exclusive=True):
                state = fresh
            else:
                state = read_outage()
        if state is not None and state.get("last") != now:
            state.update(failures=int(state.get("failures", 0)) + 1, last=now, last_error=error)
            _write_outage(state, exclusive=False)
    except OSError:
        logger.warning("runbook directory not writable; the outage is tracked in memory only", exc_info=True)
    state = state or {"since": now, "where": where, "error": error, "failures": 1, "last": now}
    since = float(state["since"])
    logger.error("database unreachable (%s, failing for %s): %s", where, _duration(now - since), error)
    repeat = float(setting("QUANTWEB_DB_ALERT_REPEAT_SECONDS"))
    bucket = int((now - since) // repeat) if repeat > 0 else 0
    message = (f"Database unreachable for {_duration(now - since)} (first seen by {state.get('where', where)}: "
               f"{state.get('error', error)}). No new orders are placed and ticks are skipped until it answers "
               "again; the watchdog keeps probing.")
    alerts.send_direct(EventLevel.CRITICAL, "DB_UNREACHABLE", message, dedup_key=f"DB_UNREACHABLE:{since:.3f}:{bucket}",
                       now=now)
    return state


def report_database_ok(where: str, *, now: float | None = None) -> dict | None:
    """Called after every successful guarded call: when this host had an outage open, the first
    caller claims it, records it in the action log and sends the recovery alert. One ``stat``
    otherwise."""
    path = _outage_path()
    if not path.exists():
        return None
    now = time.time() if now is None else now
    claim = path.with_name(f".{path.name}.recovered.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(path, claim)           # atomic: exactly one process wins the recovery
    except FileNotFoundError:
        return None
    except OSError:
        logger.warning("could not claim the outage record %s", path, exc_info=True)
        return None
    try:
        state = json.loads(claim.read_text())
    except (OSError, ValueError):
        state = {"since": now, "failures": 0}
    finally:
        claim.unlink(missing_ok=True)
    since = float(state.get("since", now))
    failures = int(state.get("failures", 0))
    message = (f"Database reachable again after {_duration(now - since)} ({failures} failed checks since "
               f"{_dt(since):%Y-%m-%d %H:%M:%S} UTC). Trading resumes on the next bar; ticks that fell due during "
               "the outage were skipped, not replayed.")
    logger.warning("database reachable again (%s) after %s", where, _duration(now - since))
    data = {"since": _dt(since).isoformat(), "until": _dt(now).isoformat(), "seconds": round(now - since, 1),
            "failed_checks": failures, "first_error": state.get("error", ""), "detected_by": state.get("where", ""),
            "recovered_by": where}
    try:
        record_event("DB_UNREACHABLE", f"Database unreachable from {_dt(since):%H:%M:%S} to {_dt(now):%H:%M:%S} UTC "
                     f"({_duration(now - since)}): {state.get('error', '')}", level=EventLevel.CRITICAL, data=data,
                     ts=_dt(since))
        record_event("DB_RECOVERED", message, level=EventLevel.WARN, data=data)
        alerts.remember_channel()
    except DatabaseError:
        logger.warning("could not record the database recovery in the action log", exc_info=True)
    alerts.send_direct(EventLevel.WARN, "DB_RECOVERED", message, dedup_key=f"DB_RECOVERED:{since:.3f}", now=now)
    return state


@contextmanager
def database_guard(where: str) -> Iterator[None]:
    """Run a worker entry point; turn a database outage into ``DatabaseUnavailable``.

    A database error that the probe does not confirm (the database answers) is re-raised
    unchanged: it is a failed query, not an outage, and the task fails the normal way."""
    try:
        yield
    except DB_ERRORS as exc:
        error = probe_database()
        if error is None:
            raise
        report_database_down(exc, where)
        raise DatabaseUnavailable(_describe(exc)) from exc
    report_database_ok(where)


def wait_for_database(where: str, *, budget: float | None = None, sleep: Callable[[float], None] | None = None,
                      clock: Callable[[], float] | None = None) -> bool:
    """Probe with back-off (1, 2, 4, 8 s ...) for at most ``budget`` seconds; True once it answers."""
    budget = float(setting("QUANTWEB_DB_RETRY_SECONDS")) if budget is None else budget
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    deadline = clock() + budget
    delay = 1.0
    while True:
        left = deadline - clock()
        if left <= 0:
            return False
        sleep(min(delay, left))
        error = probe_database()
        if error is None:
            report_database_ok(where)
            return True
        report_database_down(error, where)
        delay *= 2


def watch_database(stop: threading.Event, *, where: str = "watchdog", probe_seconds: float | None = None,
                   max_seconds: float | None = None) -> None:
    """Probe the database until ``stop`` is set: every ``probe_seconds`` while it answers, with
    doubling back-off up to ``max_seconds`` while it does not. Reports outages and recoveries
    (nothing scheduled runs while the database is down, so somebody has to look)."""
    base = float(setting("QUANTWEB_DB_PROBE_SECONDS")) if probe_seconds is None else probe_seconds
    cap = float(setting("QUANTWEB_DB_PROBE_MAX_SECONDS")) if max_seconds is None else max_seconds
    delay = base
    remembered_at = -math.inf
    while not stop.is_set():
        try:
            error = probe_database()
            if error is None:
                report_database_ok(where)
                if time.monotonic() - remembered_at >= 60:
                    alerts.remember_channel()
                    remembered_at = time.monotonic()
                delay = base
            else:
                report_database_down(error, where)
                delay = min(max(delay, base) * 2, cap)
        except Exception:  # the watchdog must outlive its own bugs
            logger.exception("database watchdog iteration failed")
            reset_connections()
            delay = base
        stop.wait(delay)
    for conn in connections.all(initialized_only=True):
        conn.close()


# == 2. exchange rate limits ====================================================================

def rate_limit_errors() -> tuple[type[Exception], ...]:
    """``RateLimitedError`` and ``BannedError`` (imported late: the web must not load adapters)."""
    from execution.adapters.base import BannedError, RateLimitedError

    return (RateLimitedError, BannedError)


def max_factor() -> int:
    return max(1, int(setting("QUANTWEB_RATELIMIT_MAX_FACTOR")))


def quiet_seconds() -> float:
    return float(setting("QUANTWEB_RATELIMIT_QUIET_SECONDS"))


def report_rate_limited(exchange: str, exc: BaseException | None = None, *, now: datetime | None = None) -> ExchangeBackoff:
    """The venue said "too many requests" (or our limiter ran out, or it banned us): widen this
    exchange's tick interval. Safe to call from any worker; one row per exchange, row-locked.

    Call it outside a transaction that may roll back (a rolled-back tick would lose it)."""
    now = now or timezone.now()
    base = cadence_seconds()
    until_ts = getattr(exc, "until_ts", None)
    banned = until_ts is not None and math.isfinite(float(until_ts))
    error = _describe(exc) if exc is not None else "rate limited"
    with transaction.atomic():
        row, _ = ExchangeBackoff.objects.select_for_update().get_or_create(exchange=exchange)
        row.reports += 1
        row.last_report_at = now
        row.last_error = error
        old = row.factor
        interval = timedelta(seconds=base * max(row.factor, 1))
        if row.factor < max_factor() and (row.changed_at is None or row.factor == 1 or now - row.changed_at >= interval):
            row.factor = min(max_factor(), max(2, row.factor * 2))
            row.changed_at = now
            row.last_dispatch_at = now   # the tick that hit the limit just ran: wait a whole widened interval
        new_ban = None
        if banned:
            until = _dt(float(until_ts))
            if row.banned_until is None or until > row.banned_until:
                row.banned_until = new_ban = until
        row.save()
        if row.factor != old:
            log_event(None, "RATE_LIMIT_BACKOFF",
                      f"{exchange}: {error}. Ticking every {row.factor} bars instead of every {old} until "
                      f"{_duration(quiet_seconds())} pass without a rate limit.",
                      level=EventLevel.WARN, data={"exchange": exchange, "factor": row.factor, "previous": old,
                                                   "reports": row.reports})
        if new_ban is not None:
            log_event(None, "EXCHANGE_BANNED", f"{exchange}: the venue banned this account until "
                      f"{new_ban:%Y-%m-%d %H:%M:%S} UTC; no ticks until then.", level=EventLevel.CRITICAL,
                      data={"exchange": exchange, "until": new_ban.isoformat()})
    logger.warning("%s rate limited (%s): tick factor %d", exchange, error, row.factor)
    return row


@dataclass(frozen=True, slots=True)
class TickDecision:
    tick: bool
    factor: int = 1
    reason: str = ""


def tick_plan(exchanges, *, now: datetime | None = None) -> dict[str, TickDecision]:
    """Which exchanges the dispatcher ticks now. One query; rows are written only for exchanges
    under back-off (the quiet-period restore and the last dispatch time)."""
    now = now or timezone.now()
    exchanges = sorted(set(exchanges))
    plan = {exchange: TickDecision(True) for exchange in exchanges}
    if not exchanges:
        return plan
    base = cadence_seconds()
    quiet = timedelta(seconds=quiet_seconds())
    for row in ExchangeBackoff.objects.filter(exchange__in=exchanges):
        changed = []
        if row.factor > 1:
            moments = [t for t in (row.last_report_at, row.changed_at) if t is not None]
            calm_since = max(moments) if moments else now
            if now - calm_since >= quiet:
                old = row.factor
                row.factor = max(1, row.factor // 2)
                row.changed_at = now
                changed += ["factor", "changed_at"]
                restored = row.factor == 1
                log_event(None, "RATE_LIMIT_RESTORED" if restored else "RATE_LIMIT_EASED",
                          f"{row.exchange}: no rate limit for {_duration((now - calm_since).total_seconds())}; "
                          + ("ticking every bar again." if restored else f"ticking every {row.factor} bars (was {old})."),
                          level=EventLevel.INFO, data={"exchange": row.exchange, "factor": row.factor, "previous": old})
        if row.banned_until is not None and row.banned_until > now:
            plan[row.exchange] = TickDecision(False, row.factor, f"banned until {row.banned_until:%H:%M:%S} UTC")
        elif row.factor > 1 and row.last_dispatch_at is not None and \
                (now - row.last_dispatch_at).total_seconds() < base * row.factor - base / 2:
            plan[row.exchange] = TickDecision(False, row.factor, f"rate-limit back-off: every {row.factor} bars")
        else:
            plan[row.exchange] = TickDecision(True, row.factor)
            if row.factor > 1:
                row.last_dispatch_at = now
                changed.append("last_dispatch_at")
        if changed:
            row.save(update_fields=changed)
    return plan


# == 3. the daily self-test =====================================================================

SELFTEST_SCHEDULE = "quantweb-selftest"
CHECK_NAMES = ("data_freshness", "ticks", "sim_order", "alert_channel")


def _check(name: str, status: str, detail: str, **data) -> dict:
    return {"name": name, "ok": status != "failed", "status": status, "detail": detail[:500], "data": data}


def _exchanges_with_running_traders() -> list[str]:
    return sorted(set(Trader.objects.running().values_list("exchange", flat=True)))


def check_data_freshness(now: float) -> dict:
    """The newest closed bar and the newest book of every exchange with running traders."""
    from execution.marketdata import latest_bar
    from execution.models import MarketSnapshot

    exchanges = _exchanges_with_running_traders()
    if not exchanges:
        return _check("data_freshness", "skipped", "no running traders")
    limit = float(setting("QUANTWEB_SELFTEST_MAX_DATA_AGE"))
    factors = dict(ExchangeBackoff.objects.filter(exchange__in=exchanges).values_list("exchange", "factor"))
    per, problems = {}, []
    for exchange in exchanges:
        if exchange == "replay":
            per[exchange] = {"status": "skipped", "detail": "replay data is historical"}
            continue
        allowed = limit * max(factors.get(exchange, 1), 1)
        bar = latest_bar(exchange)
        snap = MarketSnapshot.objects.filter(exchange=exchange).aggregate(ts=Max("ts"), markets=Count("id"))
        bar_age = None if bar is None else round(now - (bar + BAR), 1)
        book_age = None if snap["ts"] is None else round(now - snap["ts"], 1)
        ok = bar_age is not None and bar_age <= allowed and book_age is not None and book_age <= allowed
        per[exchange] = {"status": "ok" if ok else "failed", "bar_ts": bar, "bar_age_s": bar_age,
                         "book_age_s": book_age, "markets": snap["markets"], "limit_s": allowed}
        if not ok:
            what = "no bars" if bar_age is None else f"newest bar {bar_age:.0f} s old"
            what += ", no books" if book_age is None else f", books {book_age:.0f} s old"
            problems.append(f"{exchange}: {what} (limit {allowed:.0f} s)")
    if problems:
        return _check("data_freshness", "failed", "; ".join(problems), exchanges=per)
    fresh = [f"{ex} {v['bar_age_s']:.0f} s" for ex, v in per.items() if v["status"] == "ok"]
    return _check("data_freshness", "ok", "newest bar: " + (", ".join(fresh) or "no live exchange"), exchanges=per)


def check_ticks(now: float) -> dict:
    """The execution path runs: every running trader ticked recently (its exchange's back-off
    and one extra bar of slack allowed)."""
    traders = list(Trader.objects.running().values_list("name", "exchange", "last_tick_at"))
    if not traders:
        return _check("ticks", "skipped", "no running traders")
    factors = dict(ExchangeBackoff.objects.values_list("exchange", "factor"))
    late, never, worst = [], [], 0.0
    for name, exchange, last_tick_at in traders:
        allowed = cadence_seconds() * (max(factors.get(exchange, 1), 1) + 2)
        if last_tick_at is None:
            never.append(name)
            continue
        age = now - last_tick_at.timestamp()
        worst = max(worst, age)
        if age > allowed:
            late.append(f"{name} {age:.0f} s ago")
    if late or (never and len(never) == len(traders)):
        detail = "; ".join(filter(None, [("late: " + ", ".join(late[:10])) if late else "",
                                         ("never ticked: " + ", ".join(never[:10])) if never else ""]))
        return _check("ticks", "failed", f"{detail} (is the trading cluster running?)", late=len(late),
                      never=len(never), traders=len(traders))
    note = f"; {len(never)} not ticked yet" if never else ""
    return _check("ticks", "ok", f"{len(traders)} running traders, oldest tick {worst:.0f} s ago{note}",
                  traders=len(traders), oldest_tick_s=round(worst, 1), never=len(never))


def check_sim_order(run_id: int | str) -> dict:
    """A market buy and the sell back on a throwaway account of the sim exchange: the sim
    adapter and the same fill model PAPER and backtests use. The market's current state is
    loaded from the database (never saved back), so the live simulation is not disturbed."""
    from execution.adapters.sim import SimExchange
    from execution.engine.sim import SimConfig, SimMarket
    from execution.engine.types import OrderRequest, OrderStatus, OrderType, Side
    from execution.models import SimMarketState

    row = SimMarketState.objects.filter(name="sim").first()
    if row is not None:
        market = SimMarket.from_state(row.state)
        source = f"sim exchange state at bar {row.last_bar_ts}"
    else:
        market = SimMarket(SimConfig(seed=settings.QUANTWEB_SIM_SEED, n_markets=min(settings.QUANTWEB_SIM_MARKETS, 5),
                                     start_ts=int(time.time()) // BAR * BAR - 10 * BAR))
        market.generate(10)
        source = "a fresh simulator (no sim market collected yet)"
    infos = {m.symbol: m for m in market.market_info()}
    tickers = {t.symbol: t for t in market.tickers()}
    symbol = max(infos, key=lambda s: (tickers[s].value_24h if s in tickers else 0.0, s))
    info = infos[symbol]
    book = market.order_book(symbol)
    best_bid, best_ask = Decimal(repr(float(book.best_bid))), Decimal(repr(float(book.best_ask)))
    notional = (info.min_notional * 3).quantize(Decimal(1)) if info.min_notional >= 1 else info.min_notional * 3
    start = notional * 10
    venue = SimExchange(market=market, balances={info.quote: start})
    started = time.perf_counter()
    buy = venue.create_order(OrderRequest(client_order_id=f"selftest-{run_id}-buy", symbol=symbol, side=Side.BUY,
                                          type=OrderType.MARKET, quote_amount=notional))
    held = venue.balances().get(info.base, Decimal(0))
    sell = None
    if held > 0:
        sell = venue.create_order(OrderRequest(client_order_id=f"selftest-{run_id}-sell", symbol=symbol,
                                               side=Side.SELL, type=OrderType.MARKET, qty=held))
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    end = venue.balances().get(info.quote, Decimal(0))
    cost = start - end
    problems = []
    if buy.status is not OrderStatus.FILLED or buy.filled_qty <= 0:
        problems.append(f"buy ended {buy.status.value} with {buy.filled_qty} filled")
    if buy.avg_price is not None and buy.avg_price < best_ask:
        problems.append(f"buy filled at {buy.avg_price}, better than the best ask {best_ask}")
    if held != buy.filled_qty:
        problems.append(f"account holds {held} {info.base}, the buy filled {buy.filled_qty}")
    if sell is None or sell.status is not OrderStatus.FILLED:
        problems.append(f"sell back ended {sell.status.value if sell else 'not sent'}")
    elif sell.avg_price is not None and sell.avg_price > best_bid:
        problems.append(f"sell filled at {sell.avg_price}, better than the best bid {best_bid}")
    if venue.balances().get(info.base, Decimal(0)) != 0:
        problems.append(f"{venue.balances().get(info.base)} {info.base} left after selling everything")
    if (info.taker_fee > 0 and (buy.fee <= 0 or (sell is not None and sell.fee <= 0))) or cost <= 0:
        problems.append(f"round trip cost {cost} {info.quote}: fees or spread missing")
    if cost > notional * Decimal("0.05"):
        problems.append(f"round trip cost {cost} {info.quote} is over 5% of {notional}")
    data = {"source": source, "symbol": symbol, "quote": info.quote, "notional": str(notional),
            "best_bid": str(best_bid), "best_ask": str(best_ask),
            "buy": {"status": buy.status.value, "qty": str(buy.filled_qty), "avg_price": str(buy.avg_price),
                    "fee": str(buy.fee)},
            "sell": None if sell is None else {"status": sell.status.value, "qty": str(sell.filled_qty),
                                               "avg_price": str(sell.avg_price), "fee": str(sell.fee)},
            "round_trip_cost": str(cost), "cost_bps": round(float(cost / notional * 10_000), 2), "ms": elapsed_ms}
    if problems:
        return _check("sim_order", "failed", "; ".join(problems), **data)
    return _check("sim_order", "ok", f"bought and sold {buy.filled_qty} {symbol} for {notional} {info.quote}: "
                  f"round trip cost {cost} {info.quote} ({data['cost_bps']} bps) in {elapsed_ms} ms", **data)


def check_alert_channel(text: str, *, now: float, send: bool = True) -> dict:
    """Send ``text`` to the configured channel and record what Telegram answered."""
    from traders.models_alerts import AlertSettings

    cfg = AlertSettings.load()
    alerts.remember_channel(cfg)
    if not cfg.configured:
        return _check("alert_channel", "skipped", "not configured (no bot token or chat id)")
    if not send:
        return _check("alert_channel", "skipped", "not sent (--no-alert)")
    if cfg.rate_limited_until is not None and cfg.rate_limited_until.timestamp() > now:
        return _check("alert_channel", "skipped",
                      f"Telegram asked us to wait until {cfg.rate_limited_until:%H:%M:%S} UTC (429)")
    started = time.perf_counter()
    result = alerts.send_telegram(settings.TELEGRAM_API_URL, cfg.effective_token, cfg.effective_chat_id, text,
                                  timeout=alerts.http_timeout())
    ms = round((time.perf_counter() - started) * 1000, 1)
    if result.ok:
        return _check("alert_channel", "ok", f"test message delivered in {ms} ms", http_status=result.status, ms=ms)
    return _check("alert_channel", "failed", f"test message not delivered: {result.error}", http_status=result.status,
                  ms=ms)


def _guarded_check(name: str, fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except DB_ERRORS:
        raise
    except Exception as exc:
        logger.exception("self-test check %s raised", name)
        return _check(name, "failed", f"raised {_describe(exc)}")


def run_selftest(*, trigger: str = "schedule", now: float | None = None, send_alert: bool = True) -> SelfTestRun:
    """Run every check, store the result, alert on failure. Never places an order on a venue."""
    now = time.time() if now is None else now
    started = time.perf_counter()
    run = SelfTestRun.objects.create(trigger=trigger, started_at=_dt(now))
    checks = [
        _guarded_check("data_freshness", lambda: check_data_freshness(now)),
        _guarded_check("ticks", lambda: check_ticks(now)),
        _guarded_check("sim_order", lambda: check_sim_order(run.pk)),
    ]
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    verdict = f"FAILED ({', '.join(failed)})" if failed else "passed so far"
    text = alerts.render_direct(EventLevel.WARN if failed else EventLevel.INFO, "SELFTEST",
                                f"Self-test ({trigger}) {verdict}.\n"
                                + "\n".join(f"{c['name']}: {c['status']} - {c['detail']}" for c in checks)
                                + "\nThis message is the alert channel check.", now=now)
    checks.append(_guarded_check("alert_channel", lambda: check_alert_channel(text, now=now, send=send_alert)))
    failed = [c["name"] for c in checks if c["status"] == "failed"]
    run.status = SelfTestStatus.FAILED if failed else SelfTestStatus.PASSED
    run.checks = checks
    run.finished_at = timezone.now()
    run.duration_ms = int((time.perf_counter() - started) * 1000)
    run.summary = (f"failed: {', '.join(failed)}" if failed else "passed") + " · " + "; ".join(
        f"{c['name']} {c['status']}" for c in checks)
    run.save(update_fields=["status", "checks", "finished_at", "duration_ms", "summary"])
    if failed:
        details = "; ".join(f"{c['name']}: {c['detail']}" for c in checks if c["status"] == "failed")
        log_event(None, "SELFTEST_FAILED", f"Self-test failed: {details}", level=EventLevel.CRITICAL,
                  data={"run": run.pk, "failed": failed})
    else:
        log_event(None, "SELFTEST_PASSED", f"Self-test passed ({run.duration_ms} ms): {run.summary}",
                  data={"run": run.pk})
    return run


def next_midnight_utc(now: datetime | None = None) -> datetime:
    now = (now or timezone.now()).astimezone(UTC)
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def selftest_schedule():
    from django_q.models import Schedule

    return Schedule.objects.filter(name=SELFTEST_SCHEDULE).first()


# == status for the CONFIG page and /metrics ====================================================

def status() -> dict:
    """The last self-test, the schedule and the exchanges under back-off (three small queries)."""
    last = SelfTestRun.objects.exclude(status=SelfTestStatus.RUNNING).first()
    schedule = selftest_schedule()
    outage = read_outage()
    if outage is not None:
        outage = {**outage, "since": _dt(float(outage.get("since", 0)))}
    return {
        "last_selftest": last,
        "selftest_next_run": schedule.next_run if schedule is not None else None,
        "selftest_scheduled": schedule is not None,
        "backoffs": [b for b in ExchangeBackoff.objects.all()
                     if b.factor > 1 or (b.banned_until is not None and b.banned_until > timezone.now())],
        "db_outage": outage,
    }


def _label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metric_samples(now: datetime | None = None) -> list[tuple[str, str, float, dict, str]]:
    """Runbook metrics as ``(name, help, value, labels, kind)`` samples, in two small queries:
    the last finished self-test and the exchanges that were ever rate limited."""
    now = now or timezone.now()
    samples: list[tuple[str, str, float, dict, str]] = []
    last = SelfTestRun.objects.exclude(status=SelfTestStatus.RUNNING).first()
    if last is not None:
        samples.append(("quantweb_selftest_passed", "1 when the last finished self-test passed, 0 when it failed.",
                        1 if last.ok else 0, {}, "gauge"))
        samples.append(("quantweb_selftest_last_run_timestamp_seconds", "When the last finished self-test started.",
                        round(last.started_at.timestamp()), {}, "gauge"))
        samples += [("quantweb_selftest_check_passed",
                     "Result of each check of the last self-test (skipped checks are absent).",
                     1 if c["status"] == "ok" else 0, {"check": c["name"]}, "gauge")
                    for c in last.checks if c.get("status") in ("ok", "failed")]
    for row in ExchangeBackoff.objects.all():
        labels = {"exchange": row.exchange}
        samples.append(("quantweb_exchange_tick_interval_factor",
                        "Tick interval in bars after rate limiting (1 = every bar).", row.factor, labels, "gauge"))
        samples.append(("quantweb_exchange_rate_limited_total", "Rate-limit and ban reports per exchange.",
                        row.reports, labels, "counter"))
        samples.append(("quantweb_exchange_banned", "1 while the venue bans the account.",
                        1 if row.banned_until is not None and row.banned_until > now else 0, labels, "gauge"))
    return samples


def add_metrics(exposition, now: datetime | None = None) -> None:
    """Add the runbook families to ``traders.metrics.Exposition`` (anything with its ``add``)."""
    for name, help_text, value, labels, kind in metric_samples(now):
        exposition.add(name, help_text, value, labels, kind=kind)


def prometheus_lines(now: datetime | None = None) -> list[str]:
    """The same families rendered on their own (text format 0.0.4): one HELP and TYPE per family."""
    families: dict[str, tuple[str, str, list[str]]] = {}   # grouped: a family's samples must be together
    for name, help_text, value, labels, kind in metric_samples(now):
        label_text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        families.setdefault(name, (help_text, kind, []))[2].append(
            f"{name}{{{label_text}}} {value}" if label_text else f"{name} {value}")
    lines: list[str] = []
    for name, (help_text, kind, samples) in families.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return lines
