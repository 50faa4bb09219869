"""Telegram alerts [AL-1] against a local fake Bot API: delivery, level filter, rate limit,
deduplication, retries (429 retry_after, 5xx, timeouts), a dead channel never reaching a tick,
and the bot token never leaving the encrypted column."""

from __future__ import annotations

import logging
import socket
import time
from datetime import timedelta

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from tests.execution.fake_http import FakeClock, FakeExchangeServer, Reply
from tests.factories import make_trader
from traders import alerts
from traders.models import AuditLog, EventLevel, TraderStatus
from traders.models_alerts import AlertOutbox, AlertSettings, AlertStatus
from traders.services import log_event

pytestmark = pytest.mark.django_db

TOKEN = "123456789:AAH-fake-bot-token-for-tests-0123456789xyz"
CHAT = "-1001234567890"
PATH = f"/bot{TOKEN}/sendMessage"
OK = Reply({"ok": True, "result": {"message_id": 1}})


def zero() -> float:
    return 0.0


@pytest.fixture
def telegram(settings):
    with FakeExchangeServer() as server:
        server.add("POST", PATH, OK)
        settings.TELEGRAM_API_URL = server.url
        settings.ALERT_HTTP_TIMEOUT = 0.5
        yield server


@pytest.fixture
def channel(db):
    cfg = AlertSettings(token=TOKEN, chat_id=CHAT, min_level=EventLevel.WARN, rate_per_minute=20,
                        dedup_seconds=300, muted_kinds="TICK")
    cfg.save()
    return cfg


@pytest.fixture
def trader(admin_user):
    return make_trader(admin_user)


@pytest.fixture
def clock():
    """A clock that moves only when the drain sleeps; a second ahead so rows queued in the test are due."""
    return FakeClock(time.time() + 1)


def texts(server) -> list[str]:
    return [r.body["text"] for r in server.calls("POST", PATH)]


def header(row_or_event, level, subject, kind) -> str:
    when = row_or_event.created_at if hasattr(row_or_event, "created_at") else row_or_event.ts
    return f"[{level}] {subject} · {kind} · {when.strftime('%Y-%m-%d %H:%M')} UTC"


# -- delivery and filtering ---------------------------------------------------------------------

def test_warn_event_is_queued_with_the_event_and_delivered_once(telegram, channel, trader):
    event = log_event(trader, "GUARD_TRIP", "DAILY_LOSS: day return -5.10% <= -5.00%", level=EventLevel.WARN)
    row = AlertOutbox.objects.get()
    assert (row.event_id, row.trader_id, row.level, row.kind, row.status) == (
        event.pk, trader.pk, "WARN", "GUARD_TRIP", AlertStatus.PENDING)
    assert telegram.calls("POST", PATH) == []        # nothing is sent from the caller

    summary = alerts.drain(rng=zero)

    assert summary == {"sent": 1, "retry": 0, "failed": 0, "expired": 0}
    (call,) = telegram.calls("POST", PATH)
    assert call.body["chat_id"] == CHAT
    assert call.body["disable_web_page_preview"] is True
    assert call.body["text"] == header(row, "WARN", "alpha", "GUARD_TRIP") + "\nDAILY_LOSS: day return -5.10% <= -5.00%"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.chat_id, row.last_error) == (AlertStatus.SENT, 1, CHAT, "")
    assert alerts.drain(rng=zero)["sent"] == 0
    assert len(telegram.calls("POST", PATH)) == 1


def test_rolled_back_event_queues_no_alert(telegram, channel, trader):
    with pytest.raises(RuntimeError), transaction.atomic():
        log_event(trader, "ORDER_REJECTED", "BTC: entry rejected", level=EventLevel.WARN)
        raise RuntimeError("the tick failed")
    assert not AlertOutbox.objects.exists()


def test_min_level_mute_list_enabled_and_missing_channel_filter_events(telegram, channel, trader, settings):
    log_event(trader, "ENTRY", "BTC: buy", level=EventLevel.INFO)            # below WARN
    log_event(trader, "TICK", "quiet", level=EventLevel.WARN)                 # muted kind
    log_event(trader, "GUARD_TRIP", "warn", level=EventLevel.WARN)
    log_event(None, "KILL_SWITCH", "critical", level=EventLevel.CRITICAL)
    assert sorted(AlertOutbox.objects.values_list("kind", flat=True)) == ["GUARD_TRIP", "KILL_SWITCH"]

    AlertSettings.objects.filter(pk=1).update(min_level=EventLevel.CRITICAL)
    log_event(trader, "GUARD_TRIP", "warn 2", level=EventLevel.WARN)
    log_event(trader, "GUARD_TRIP", "critical 2", level=EventLevel.CRITICAL)
    AlertSettings.objects.filter(pk=1).update(min_level=EventLevel.INFO, enabled=False)
    log_event(trader, "GUARD_TRIP", "disabled", level=EventLevel.CRITICAL)
    AlertSettings.objects.filter(pk=1).update(enabled=True, token="", chat_id="")
    settings.TELEGRAM_BOT_TOKEN = settings.TELEGRAM_CHAT_ID = ""
    log_event(trader, "GUARD_TRIP", "no channel", level=EventLevel.CRITICAL)
    assert sorted(AlertOutbox.objects.values_list("message", flat=True)) == ["critical", "critical 2", "warn"]


def test_environment_token_and_chat_are_the_default(telegram, trader, settings):
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID = TOKEN, "42"
    log_event(trader, "GUARD_TRIP", "from env", level=EventLevel.WARN)
    assert alerts.drain(rng=zero)["sent"] == 1
    assert telegram.calls("POST", PATH)[0].body["chat_id"] == "42"


# -- rate limit -------------------------------------------------------------------------------------

def test_rate_limit_per_chat_holds_back_warn_but_never_critical(telegram, channel, trader, clock):
    AlertSettings.objects.filter(pk=1).update(rate_per_minute=2)
    for n in range(3):
        log_event(trader, "ORDER_REJECTED", f"warn {n}", level=EventLevel.WARN)
    log_event(trader, "GUARD_TRIP", "critical", level=EventLevel.CRITICAL)

    first = alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)

    assert first["sent"] == 3
    assert [t.splitlines()[1] for t in texts(telegram)] == ["critical", "warn 0", "warn 1"]
    assert clock.sleeps == []                        # a 60 s wait is left to the next run
    assert AlertOutbox.objects.get(status=AlertStatus.PENDING).message == "warn 2"

    log_event(trader, "GUARD_TRIP", "critical again", level=EventLevel.CRITICAL)
    clock.now += 10
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 1   # CRITICAL bypasses
    clock.now += 51
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 1   # the window moved on
    assert [t.splitlines()[1] for t in texts(telegram)][-2:] == ["critical again", "warn 2"]
    assert not AlertOutbox.objects.filter(status=AlertStatus.PENDING).exists()


# -- deduplication ----------------------------------------------------------------------------------

def test_identical_alerts_fold_into_one_message_with_a_count(telegram, channel, trader, admin_user, clock):
    other = make_trader(admin_user, name="beta")
    for _ in range(3):
        log_event(trader, "ORDER_REJECTED", "BTC: entry rejected (insufficient funds)", level=EventLevel.WARN)
    log_event(other, "ORDER_REJECTED", "BTC: entry rejected (insufficient funds)", level=EventLevel.WARN)
    log_event(trader, "ORDER_REJECTED", "ETH: entry rejected (insufficient funds)", level=EventLevel.WARN)
    assert sorted(AlertOutbox.objects.values_list("occurrences", flat=True)) == [1, 1, 3]

    alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)
    first = AlertOutbox.objects.get(subject="alpha", message__startswith="BTC")
    assert texts(telegram)[0] == (header(first, "WARN", "alpha", "ORDER_REJECTED")
                                  + "\nBTC: entry rejected (insufficient funds)\n(×3)")
    assert len(texts(telegram)) == 3

    # Two more inside the window, after the first went out: one follow-up when the window closes.
    log_event(trader, "ORDER_REJECTED", "BTC: entry rejected (insufficient funds)", level=EventLevel.WARN)
    log_event(trader, "ORDER_REJECTED", "BTC: entry rejected (insufficient funds)", level=EventLevel.WARN)
    follow_up = AlertOutbox.objects.get(is_repeat=True)
    assert (follow_up.occurrences, follow_up.next_attempt_at) == (2, first.window_until)
    clock.now += 120
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 0
    clock.now = first.window_until.timestamp() + 1
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 1
    assert texts(telegram)[-1].endswith("BTC: entry rejected (insufficient funds)\n(repeated ×2 since the last message)")


def test_critical_is_deduplicated_too(telegram, channel, trader):
    for _ in range(4):
        log_event(trader, "GUARD_TRIP", "MAX_DRAWDOWN: 15.2% from peak", level=EventLevel.CRITICAL)
    assert alerts.drain(rng=zero)["sent"] == 1
    assert texts(telegram)[0].endswith("MAX_DRAWDOWN: 15.2% from peak\n(×4)")


# -- retries ----------------------------------------------------------------------------------------

def test_429_honours_retry_after(telegram, channel, trader, clock):
    telegram.add("POST", PATH, Reply({"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 3",
                                      "parameters": {"retry_after": 3}}, status=429), OK)
    log_event(trader, "GUARD_TRIP", "slow down", level=EventLevel.WARN)

    summary = alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)

    assert summary["sent"] == 1 and summary["retry"] == 1
    assert clock.sleeps == pytest.approx([3.0], abs=1e-3)   # waited retry_after, then sent
    row = AlertOutbox.objects.get()
    assert (row.status, row.attempts) == (AlertStatus.SENT, 2)
    assert AlertSettings.objects.get().rate_limited_until is not None


def test_long_retry_after_pauses_the_channel_across_runs(telegram, channel, trader, clock):
    telegram.add("POST", PATH, Reply({"ok": False, "error_code": 429, "description": "Too Many Requests",
                                      "parameters": {"retry_after": 30}}, status=429), OK)
    log_event(trader, "GUARD_TRIP", "one", level=EventLevel.WARN)
    log_event(trader, "GUARD_TRIP", "two", level=EventLevel.CRITICAL)
    alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)
    assert len(telegram.calls("POST", PATH)) == 1 and clock.sleeps == []
    clock.now += 20
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 0
    assert len(telegram.calls("POST", PATH)) == 1     # paused: not even CRITICAL is tried
    clock.now += 11
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 2


def test_5xx_retries_with_backoff_then_gives_up(telegram, channel, trader, clock):
    telegram.add("POST", PATH, Reply({"ok": False, "error_code": 502, "description": "Bad Gateway"}, status=502), OK)
    log_event(trader, "GUARD_TRIP", "flaky", level=EventLevel.WARN)
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero) == {"sent": 0, "retry": 1, "failed": 0, "expired": 0}
    row = AlertOutbox.objects.get()
    assert row.last_error == "HTTP 502: Bad Gateway"
    assert row.next_attempt_at.timestamp() == pytest.approx(clock.now + alerts.BACKOFF_BASE_SECONDS / 2, abs=0.01)
    clock.now += 3
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["sent"] == 1

    telegram.add("POST", PATH, Reply({"ok": False, "description": "Internal Server Error"}, status=500))
    log_event(trader, "GUARD_TRIP", "doomed", level=EventLevel.WARN)
    delays = []
    for _ in range(alerts.MAX_ATTEMPTS):
        alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)
        row = AlertOutbox.objects.get(message="doomed")
        delays.append(round(row.next_attempt_at.timestamp() - clock.now, 2))
        clock.now = row.next_attempt_at.timestamp() + 0.01
    assert delays[:4] == [2.5, 5.0, 10.0, 20.0]      # exponential, half of it jitter (rng = 0 here)
    assert (row.status, row.attempts) == (AlertStatus.FAILED, alerts.MAX_ATTEMPTS)


def test_timeout_is_retried_and_ends_the_run(telegram, channel, trader, settings):
    settings.ALERT_HTTP_TIMEOUT = 0.2
    telegram.add("POST", PATH, Reply({"ok": True}, delay=1.0))
    log_event(trader, "GUARD_TRIP", "a", level=EventLevel.WARN)
    log_event(trader, "GUARD_TRIP", "b", level=EventLevel.WARN)
    started = time.monotonic()
    summary = alerts.drain(rng=zero)
    assert time.monotonic() - started < 0.9
    assert summary == {"sent": 0, "retry": 1, "failed": 0, "expired": 0}
    assert len(telegram.calls("POST", PATH)) == 1      # the channel is down: the second waits
    row = AlertOutbox.objects.get(attempts=1)
    assert row.last_error == "timeout after 0.2 s" and row.status == AlertStatus.PENDING


def test_stale_alerts_expire_instead_of_arriving_late(telegram, channel, trader):
    log_event(trader, "GUARD_TRIP", "old news", level=EventLevel.WARN)
    AlertOutbox.objects.update(created_at=timezone.now() - timedelta(hours=2))
    assert alerts.drain(rng=zero)["expired"] == 1
    assert telegram.calls("POST", PATH) == []


def test_a_claimed_row_is_never_claimed_twice(channel, trader):
    log_event(trader, "GUARD_TRIP", "once", level=EventLevel.WARN)
    now = timezone.now()
    assert alerts._claim(now, normal=True, enabled=True) is not None
    assert alerts._claim(now, normal=True, enabled=True) is None
    assert alerts._claim(now + timedelta(seconds=alerts.LEASE_SECONDS + 1), normal=True, enabled=True) is not None


# -- a dead channel never blocks trading ---------------------------------------------------------

def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_dead_server_never_raises_into_a_tick_or_the_drain(channel, admin_user, settings):
    from execution.marketdata import latest_bar
    from traders import tasks
    from traders.trading import run_tick

    settings.TELEGRAM_API_URL = _dead_url()
    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS = 400, 4
    AlertSettings.objects.filter(pk=1).update(min_level=EventLevel.INFO, muted_kinds="")
    trader = make_trader(admin_user)
    trader.status = TraderStatus.RUNNING
    trader.save(update_fields=["status"])
    tasks.collect_market_data(1_790_000_000.0)

    report = run_tick(trader.pk, latest_bar("sim"))

    assert report.outcome == "ok"
    assert AlertOutbox.objects.filter(kind="TICK", trader=trader).count() == 1
    summary = alerts.drain(rng=zero)
    assert summary["sent"] == 0 and summary["retry"] == 1
    assert AlertOutbox.objects.filter(last_error__startswith="connection failed").count() == 1
    from traders.metrics import prometheus_text

    text = prometheus_text()
    pending = AlertOutbox.objects.filter(status=AlertStatus.PENDING).count()
    assert pending >= 2     # the tick's events wait for the channel to come back
    assert f"\nquantweb_alerts_pending {pending}\n" in text and "\nquantweb_alerts_oldest_pending_seconds " in text


def test_a_failing_enqueue_never_breaks_log_event_or_its_transaction(channel, trader, monkeypatch, caplog):
    def broken(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(alerts, "enqueue", broken)
    with transaction.atomic():
        event = log_event(trader, "GUARD_TRIP", "still logged", level=EventLevel.CRITICAL)
        log_event(trader, "GUARD_TRIP", "and the transaction still works", level=EventLevel.WARN)
    assert event.pk is not None
    assert trader.events.filter(kind="GUARD_TRIP").count() == 2
    assert "could not queue an alert" in caplog.text


def test_drain_never_raises(channel, monkeypatch):
    def boom(*args, **kwargs):
        raise DatabaseError("database is locked")

    monkeypatch.setattr(alerts, "_housekeeping", boom)
    assert alerts.drain()["error"] == "DatabaseError"


def test_dispatch_enqueues_the_drain_after_the_ticks(monkeypatch):
    from traders import tasks

    calls = []
    monkeypatch.setattr(tasks, "process_intents", lambda: 0)
    monkeypatch.setattr(tasks, "collect_market_data", lambda now: 0)
    monkeypatch.setattr(tasks, "async_task", lambda func, *args, **kwargs: calls.append((func, kwargs)))
    tasks.dispatch(now=1_790_000_000.0)
    assert calls == [("traders.alerts.drain", {"q_options": {"task_name": "alerts-drain", "group": "alerts",
                                                             "save": False, "timeout": 45}})]


# -- the secret ---------------------------------------------------------------------------------------

def test_token_never_in_logs_outbox_pages_or_audit(telegram, admin_client, trader, caplog, settings, clock):
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(reverse("alert-settings"), {
        "enabled": "on", "min_level": "WARN", "chat_id": CHAT, "token": TOKEN, "rate_per_minute": 20,
        "dedup_seconds": 300, "muted_kinds": "tick",
    })
    assert response.status_code == 302
    with connection.cursor() as cursor:
        cursor.execute("SELECT token FROM traders_alertsettings WHERE id = 1")
        (raw,) = cursor.fetchone()
    assert TOKEN not in raw and raw.startswith("fernet:")
    cfg = AlertSettings.objects.get()
    assert cfg.token == TOKEN and cfg.muted_kinds == "TICK" and cfg.masked_token == "****" + TOKEN[-4:]
    assert TOKEN not in repr(cfg) and TOKEN not in repr(cfg.token)

    # success, 5xx, a timeout and a dead host
    telegram.add("POST", PATH, OK, Reply({"ok": False, "description": "Bad Gateway"}, status=502),
                 Reply({"ok": True}, delay=1.0))
    settings.ALERT_HTTP_TIMEOUT = 0.2
    for n in range(3):
        log_event(trader, "GUARD_TRIP", f"trip {n}", level=EventLevel.WARN)
        alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)
        clock.now += 1000
    settings.TELEGRAM_API_URL = _dead_url()
    alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)
    assert AlertOutbox.objects.exclude(last_error="").exists()

    pages = [reverse("config"), reverse("admin:traders_alertsettings_change", args=[1]),
             reverse("admin:traders_alertsettings_changelist"), reverse("admin:traders_alertoutbox_changelist")]
    bodies = {url: admin_client.get(url).content.decode() for url in pages}
    assert all(admin_client.get(url).status_code == 200 for url in pages)
    assert "****" + TOKEN[-4:] in bodies[reverse("config")]
    texts_seen = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    texts_seen += list(bodies.values())
    texts_seen += [str(p) for p in AuditLog.objects.values_list("payload", flat=True)]
    texts_seen += list(AlertOutbox.objects.values_list("last_error", flat=True))
    secret_part = TOKEN.split(":", 1)[1]
    for text in texts_seen:
        assert secret_part not in text


# -- CONFIG page --------------------------------------------------------------------------------------

def test_config_page_saves_audits_keeps_and_clears_the_token(admin_client, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    url = reverse("alert-settings")
    form = {"enabled": "on", "min_level": "CRITICAL", "chat_id": CHAT, "token": TOKEN, "rate_per_minute": 10,
            "dedup_seconds": 60, "muted_kinds": "TICK, intent"}
    assert admin_client.post(url, form).status_code == 302
    row = AuditLog.objects.get(kind="ALERT_SETTINGS_CHANGED")
    assert row.actor == "boss"
    assert row.payload["changes"]["token"] == "replaced"
    assert row.payload["changes"]["min_level"] == ["WARN", "CRITICAL"]
    assert row.payload["token"] == "****" + TOKEN[-4:]

    page = admin_client.get(reverse("config")).content.decode()
    assert 'id="alert-settings-form"' in page and 'name="token"' in page and TOKEN not in page

    assert admin_client.post(url, {**form, "token": "", "rate_per_minute": 5}).status_code == 302
    cfg = AlertSettings.objects.get()
    assert (cfg.token, cfg.rate_per_minute, cfg.muted_kinds) == (TOKEN, 5, "TICK,INTENT")

    assert admin_client.post(url, {**form, "token": "", "clear_token": "on"}).status_code == 302
    cfg = AlertSettings.objects.get()
    assert cfg.token == "" and cfg.token_hint == "" and not cfg.configured
    assert AuditLog.objects.filter(kind="ALERT_SETTINGS_CHANGED").first().payload  # audited each time
    assert AuditLog.objects.filter(kind="ALERT_SETTINGS_CHANGED").count() == 3

    response = admin_client.post(url, {**form, "token": "not a token", "rate_per_minute": 0}, follow=True)
    assert "Alert settings not saved" in response.content.decode()
    assert AuditLog.objects.filter(kind="ALERT_SETTINGS_CHANGED").count() == 3


def test_only_staff_change_alert_settings_or_send_a_test(client, operator, channel):
    client.force_login(operator)
    assert client.post(reverse("alert-settings"), {"min_level": "INFO"}).status_code == 403
    assert client.post(reverse("alert-test")).status_code == 403
    page = client.get(reverse("config")).content.decode()
    assert 'id="alert-settings-form"' not in page and "Only staff change these" in page
    assert AlertSettings.objects.get().min_level == EventLevel.WARN


def test_test_alert_is_sent_even_when_event_alerts_are_off(telegram, admin_client, channel,
                                                           django_capture_on_commit_callbacks, monkeypatch):
    AlertSettings.objects.filter(pk=1).update(enabled=False, min_level=EventLevel.CRITICAL)
    kicked = []
    monkeypatch.setattr(alerts, "kick_drain", lambda: kicked.append(1))
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("alert-test"))
    assert response.status_code == 302 and kicked == [1]
    assert AuditLog.objects.filter(kind="ALERT_TEST_REQUESTED").count() == 1
    assert alerts.drain(rng=zero)["sent"] == 1
    assert texts(telegram)[0].splitlines()[1] == "Test alert from quantweb, requested by boss."


def test_admin_edit_keeps_the_token_and_is_audited(admin_client, channel):
    url = reverse("admin:traders_alertsettings_change", args=[1])
    page = admin_client.get(url).content.decode()
    assert TOKEN not in page and "****" + TOKEN[-4:] in page
    response = admin_client.post(url, {"enabled": "on", "min_level": "INFO", "chat_id": CHAT, "token": "",
                                       "rate_per_minute": 20, "dedup_seconds": 300, "muted_kinds": "TICK"})
    assert response.status_code == 302, response.content.decode()[:2000]
    cfg = AlertSettings.objects.get()
    assert (cfg.min_level, cfg.token) == ("INFO", TOKEN)
    row = AuditLog.objects.get(kind="ALERT_SETTINGS_CHANGED")
    assert row.payload["changes"] == {"min_level": ["WARN", "INFO"]} and row.payload["via"] == "admin"
    assert admin_client.get(reverse("admin:traders_alertsettings_add")).status_code == 403   # a singleton


def test_a_pause_is_remembered_for_an_environment_only_channel(telegram, trader, settings, clock):
    settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_CHAT_ID = TOKEN, CHAT
    telegram.add("POST", PATH, Reply({"ok": False, "parameters": {"retry_after": 60}}, status=429))
    log_event(trader, "GUARD_TRIP", "env only", level=EventLevel.WARN)
    assert alerts.drain(clock=clock, sleep=clock.sleep, rng=zero)["retry"] == 1
    cfg = AlertSettings.objects.get()
    assert cfg.token == "" and cfg.rate_limited_until.timestamp() == pytest.approx(clock.now + 60, abs=0.01)
