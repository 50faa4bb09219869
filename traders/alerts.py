"""Telegram alerts [AL-1]: an outbox written with the event, drained by a worker.

Enqueue (in the caller's transaction, never raises):
    ``log_event`` -> ``on_event(event)``: an event at or above ``AlertSettings.min_level`` whose
    kind is not muted becomes an ``AlertOutbox`` row in the same transaction, so an alert exists
    exactly when its event does (a rolled-back tick alerts nothing). Identical alerts (kind,
    trader, message) inside ``dedup_seconds`` fold into one row and are sent once with a count;
    a repeat after that row went out becomes one follow-up row, due when the window closes.

Deliver (worker only, never inside a tick):
    ``drain()`` runs as its own django-q2 task: the dispatcher enqueues it every minute and a
    CRITICAL event enqueues it on commit. It claims due rows with a conditional UPDATE (a lease,
    so two drains never send one row twice), calls the Bot API ``sendMessage`` outside any
    transaction, and records the outcome. Non-CRITICAL messages are limited to
    ``rate_per_minute`` per chat in any 60 s (a sliding window over the sent rows, which is how
    Telegram states its own group limit); CRITICAL skips that limit but not deduplication. A 429
    pauses the channel for ``parameters.retry_after``; 5xx, timeouts and connection errors retry
    with exponential backoff and jitter up to ``MAX_ATTEMPTS``. The first failure ends the run
    (the channel is unhealthy), so a dead Telegram costs one request timeout per minute of one
    worker and nothing else. Stale rows expire instead of arriving hours late.

Without the database (``send_direct``, [AL-3]): when the database itself is unreachable the
runbook posts straight to the Bot API from a daemon thread, with the channel remembered while
the database was up, deduplicated per host by a stamp file and limited per process.

The bot token is part of the request URL; it is registered with ``quantweb.logging`` and every
error text is passed through ``redact`` before it is stored or logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, IntegerField, Min, Q, Value, When
from django.utils import timezone

from quantweb.logging import redact, register_secret
from traders.models import EventLevel
from traders.models_alerts import AlertOutbox, AlertSettings, AlertStatus

logger = logging.getLogger(__name__)

TEST_KIND = "ALERT_TEST"
TELEGRAM_MAX_CHARS = 4096
RATE_WINDOW_SECONDS = 60
LEASE_SECONDS = 90                 # longer than one request timeout plus bookkeeping
MAX_ATTEMPTS = 8                   # 5 s .. 10 min of backoff, about 20 minutes in all
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 600.0
SHORT_WAIT_SECONDS = 5.0           # a drain waits in-run at most this long for a retry or the limit
MAX_AGE_SECONDS = {EventLevel.INFO: 3600, EventLevel.WARN: 3600, EventLevel.CRITICAL: 86_400}
KEEP_FINISHED_DAYS = 7


def http_timeout() -> float:
    """Seconds one sendMessage may take (connect + read); ``ALERT_HTTP_TIMEOUT`` overrides."""
    return float(getattr(settings, "ALERT_HTTP_TIMEOUT", 5.0))


def drain_budget() -> float:
    """Seconds one drain run may spend; below django-q2's task timeout (``ALERT_DRAIN_SECONDS``)."""
    return float(getattr(settings, "ALERT_DRAIN_SECONDS", 30.0))


# -- enqueue (caller's transaction) -----------------------------------------------------------

def dedup_key(kind: str, trader_id: int | None, message: str) -> str:
    return hashlib.sha1(f"{kind}\x1f{trader_id or ''}\x1f{message}".encode()).hexdigest()


def on_event(event) -> None:
    """Hook called by ``traders.services.log_event``: queue an alert for ``event`` if the settings
    want one. Never raises into the caller; the writes run in a savepoint so a failure here
    cannot poison the caller's transaction."""
    try:
        cfg = AlertSettings.load()
        if not cfg.wants(event.level, event.kind):
            return
        with transaction.atomic():
            enqueue(level=event.level, kind=event.kind, message=event.message, trader=event.trader,
                    event=event, dedup_seconds=cfg.dedup_seconds)
        if event.level == EventLevel.CRITICAL:
            transaction.on_commit(kick_drain)
    except Exception:  # an alert must never break the action it reports
        logger.warning("could not queue an alert for event %s (%s)", getattr(event, "pk", None),
                       getattr(event, "kind", "?"), exc_info=True)


def enqueue(*, level: str, kind: str, message: str, trader=None, event=None, dedup_seconds: int = 0,
            now: datetime | None = None) -> AlertOutbox:
    """Queue one alert, folding it into an identical one inside the dedup window."""
    now = now or timezone.now()
    subject = trader.name[:80] if trader is not None else ""
    key = dedup_key(kind, trader.pk if trader is not None else None, message) if dedup_seconds > 0 else ""
    window = timedelta(seconds=dedup_seconds)
    fields = {"event": event, "trader": trader, "subject": subject, "level": level, "kind": kind,
              "message": message[:500], "dedup_key": key, "created_at": now}
    if key:
        latest = (AlertOutbox.objects.filter(dedup_key=key, window_until__gt=now,
                                             status__in=[AlertStatus.PENDING, AlertStatus.SENT])
                  .order_by("-id").first())
        if latest is not None:
            folded = latest.status == AlertStatus.PENDING and AlertOutbox.objects.filter(
                _unleased(now), pk=latest.pk, status=AlertStatus.PENDING,
            ).update(occurrences=F("occurrences") + 1)
            if folded:
                latest.occurrences += 1
                return latest
            # Already sent (or being sent): one follow-up, due when that window closes.
            return AlertOutbox.objects.create(**fields, is_repeat=True, next_attempt_at=latest.window_until,
                                              window_until=latest.window_until + window)
    return AlertOutbox.objects.create(**fields, next_attempt_at=now, window_until=now + window)


def enqueue_test(user) -> AlertOutbox:
    """A test message from the CONFIG page: ignores the level, the mute list and ``enabled``."""
    name = getattr(user, "username", None) or "system"
    row = enqueue(level=EventLevel.INFO, kind=TEST_KIND, message=f"Test alert from quantweb, requested by {name}.")
    transaction.on_commit(kick_drain)
    return row


def kick_drain() -> None:
    """Ask a worker to drain now rather than at the next dispatch (best effort)."""
    try:
        from django_q.tasks import async_task

        async_task("traders.alerts.drain", q_options={"task_name": "alerts-drain", "group": "alerts",
                                                      "save": False, "timeout": int(drain_budget()) + 15})
    except Exception:  # the dispatcher drains every minute anyway
        logger.warning("could not enqueue the alert drain; the next dispatch will", exc_info=True)


# -- Telegram ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Delivery:
    """What one sendMessage call came to. ``error`` is already redacted."""

    ok: bool
    status: int | None = None
    retry_after: float | None = None
    error: str = ""

    @property
    def rate_limited(self) -> bool:
        return self.status == 429


def send_telegram(api_url: str, token: str, chat_id: str, text: str, *, timeout: float) -> Delivery:
    """POST ``sendMessage``. Never raises; never puts the token in its result."""
    register_secret(token)
    url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
    body = json.dumps({"chat_id": chat_id, "text": text[:TELEGRAM_MAX_CHARS],
                       "disable_web_page_preview": True}).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "quantweb-alerts"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = _json(response.read())
            if payload.get("ok") is False:
                return Delivery(False, response.status, error=_clean(f"not ok: {payload.get('description', '')}"))
            return Delivery(True, response.status)
    except urllib.error.HTTPError as exc:
        payload = _json(exc.read() if exc.fp is not None else b"")
        params = payload.get("parameters") if isinstance(payload.get("parameters"), dict) else {}
        retry_after = _number(params.get("retry_after")) or _number(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
        return Delivery(False, exc.code, retry_after,
                        _clean(f"HTTP {exc.code}: {payload.get('description') or exc.reason}"))
    except TimeoutError:
        return Delivery(False, error=f"timeout after {timeout:g} s")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            return Delivery(False, error=f"timeout after {timeout:g} s")
        return Delivery(False, error=_clean(f"connection failed: {exc.reason}"))
    except (OSError, ValueError) as exc:
        return Delivery(False, error=_clean(f"{type(exc).__name__}: {exc}"))


def _json(raw: bytes) -> dict:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _clean(text: str) -> str:
    return redact(str(text))[:300]


def render(row: AlertOutbox) -> str:
    """The message text: level, who, what, when; the count when alerts were folded."""
    when = row.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"[{row.level}] {row.subject or 'platform'} · {row.kind} · {when}", row.message]
    if row.is_repeat:
        lines.append(f"(repeated ×{row.occurrences} since the last message)")
    elif row.occurrences > 1:
        lines.append(f"(×{row.occurrences})")
    return "\n".join(lines)


def backoff_seconds(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with equal jitter: half the step fixed, half random."""
    step = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return step / 2 + rng() * step / 2


# -- drain (worker) ---------------------------------------------------------------------------

def _unleased(now: datetime) -> Q:
    return Q(lease_until__isnull=True) | Q(lease_until__lte=now)


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def drain(*, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
          rng: Callable[[], float] = random.random, budget: float | None = None) -> dict:
    """Send what is due. A django-q2 task; returns a small summary and never raises."""
    summary = {"sent": 0, "retry": 0, "failed": 0, "expired": 0}
    try:
        _drain(summary, clock, sleep, rng, drain_budget() if budget is None else budget)
    except Exception as exc:  # a broken alert channel must never surface as a failing task storm
        logger.warning("alert drain stopped: %s", _clean(f"{type(exc).__name__}: {exc}"))
        summary["error"] = type(exc).__name__
    return summary


def _drain(summary: dict, clock, sleep, rng, budget: float) -> None:
    deadline = clock() + budget
    summary["expired"] = _housekeeping(_dt(clock()))
    cfg = AlertSettings.load()
    if not cfg.configured:
        return
    token, chat_id, api_url = cfg.effective_token, cfg.effective_chat_id, settings.TELEGRAM_API_URL
    register_secret(token)
    paused_until = cfg.rate_limited_until
    recent = sorted(t.timestamp() for t in AlertOutbox.objects.filter(
        chat_id=chat_id, status=AlertStatus.SENT, sent_at__gt=_dt(clock() - RATE_WINDOW_SECONDS),
    ).exclude(level=EventLevel.CRITICAL).values_list("sent_at", flat=True))
    while True:
        now = clock()
        if now >= deadline:
            return
        recent = [t for t in recent if t > now - RATE_WINDOW_SECONDS]
        bucket_free = len(recent) < cfg.rate_per_minute
        paused = paused_until is not None and paused_until.timestamp() > now
        row = None if paused else _claim(_dt(now), normal=bucket_free, enabled=cfg.enabled)
        if row is None:
            wait = _wait_seconds(now, paused_until if paused else None, None if bucket_free else recent[0] + RATE_WINDOW_SECONDS,
                                 enabled=cfg.enabled)
            if wait is None or wait > SHORT_WAIT_SECONDS or now + wait >= deadline:
                return
            sleep(max(wait, 0.01))
            continue
        result = send_telegram(api_url, token, chat_id, render(row), timeout=http_timeout())
        done = clock()
        _record(row, result, done, chat_id, rng, summary)
        if result.ok:
            if row.level != EventLevel.CRITICAL:
                recent.append(done)
            continue
        if result.rate_limited:
            wait = result.retry_after if result.retry_after is not None else backoff_seconds(1, rng)
            paused_until = _dt(done + wait)
            if not AlertSettings.objects.filter(pk=1).update(rate_limited_until=paused_until):
                cfg.rate_limited_until = paused_until   # channel from the environment: remember the pause
                cfg.save()
            continue  # wait in-run if the pause is short, otherwise the next run resumes
        return  # 5xx, timeout, refused: the channel is unhealthy, try again next run


def _claim(now: datetime, *, normal: bool, enabled: bool) -> AlertOutbox | None:
    """Lease the most urgent due row (CRITICAL first, then oldest) with a conditional UPDATE,
    so concurrent drains (or a drain and a redelivered drain) never send one row twice."""
    due = AlertOutbox.objects.filter(_unleased(now), status=AlertStatus.PENDING, next_attempt_at__lte=now)
    if not enabled:
        due = due.filter(kind=TEST_KIND)
    if not normal:
        due = due.filter(level=EventLevel.CRITICAL)
    urgency = Case(When(level=EventLevel.CRITICAL, then=Value(0)), default=Value(1), output_field=IntegerField())
    for pk in due.order_by(urgency, "id").values_list("pk", flat=True)[:5]:
        claimed = AlertOutbox.objects.filter(_unleased(now), pk=pk, status=AlertStatus.PENDING).update(
            lease_until=now + timedelta(seconds=LEASE_SECONDS), attempts=F("attempts") + 1)
        if claimed:
            return AlertOutbox.objects.get(pk=pk)
    return None


def _wait_seconds(now: float, paused_until: datetime | None, bucket_refill: float | None, *,
                  enabled: bool) -> float | None:
    """Seconds until something could be sent, or None when nothing is queued."""
    pending = AlertOutbox.objects.filter(status=AlertStatus.PENDING)
    if not enabled:
        pending = pending.filter(kind=TEST_KIND)
    due = pending.aggregate(any=Min("next_attempt_at"),
                            critical=Min("next_attempt_at", filter=Q(level=EventLevel.CRITICAL)))
    if due["any"] is None:
        return None
    earliest = due["any"].timestamp()
    if bucket_refill is not None:   # only CRITICAL may go before the window frees up
        earliest = max(earliest, bucket_refill)
        if due["critical"] is not None:
            earliest = min(earliest, due["critical"].timestamp())
    if paused_until is not None:
        earliest = max(earliest, paused_until.timestamp())
    return max(earliest - now, 0.0)


def _record(row: AlertOutbox, result: Delivery, now: float, chat_id: str, rng, summary: dict) -> None:
    at = _dt(now)
    if result.ok:
        AlertOutbox.objects.filter(pk=row.pk).update(status=AlertStatus.SENT, sent_at=at, chat_id=chat_id,
                                                     lease_until=None, last_error="")
        summary["sent"] += 1
        logger.info("alert %s sent (%s %s)", row.pk, row.level, row.kind)
        return
    if result.rate_limited:
        wait = result.retry_after if result.retry_after is not None else backoff_seconds(1, rng)
        # Honour retry_after exactly as the floor; a little jitter spreads several workers.
        retry_at = _dt(now + wait + rng() * 0.5)
        AlertOutbox.objects.filter(pk=row.pk).update(next_attempt_at=retry_at, lease_until=None,
                                                     last_error=result.error)
        summary["retry"] += 1
        logger.warning("alert %s rate limited by Telegram, retry after %.1f s", row.pk, wait)
        return
    if row.attempts >= MAX_ATTEMPTS:
        AlertOutbox.objects.filter(pk=row.pk).update(status=AlertStatus.FAILED, lease_until=None,
                                                     last_error=result.error)
        summary["failed"] += 1
        logger.warning("alert %s given up after %s attempts: %s", row.pk, row.attempts, result.error)
        return
    delay = backoff_seconds(row.attempts, rng)
    AlertOutbox.objects.filter(pk=row.pk).update(next_attempt_at=_dt(now + delay), lease_until=None,
                                                 last_error=result.error)
    summary["retry"] += 1
    logger.warning("alert %s not delivered (%s), attempt %s, retry in %.0f s", row.pk, result.error,
                   row.attempts, delay)


def _housekeeping(now: datetime) -> int:
    """Expire alerts too old to matter and forget finished rows after a week."""
    expired = 0
    for level, seconds in MAX_AGE_SECONDS.items():
        expired += AlertOutbox.objects.filter(
            status=AlertStatus.PENDING, level=level, created_at__lt=now - timedelta(seconds=seconds),
        ).update(status=AlertStatus.EXPIRED, lease_until=None)
    AlertOutbox.objects.filter(
        status__in=[AlertStatus.SENT, AlertStatus.FAILED, AlertStatus.EXPIRED],
        created_at__lt=now - timedelta(days=KEEP_FINISHED_DAYS),
    ).delete()
    return expired


# -- status for the CONFIG page and the metrics ---------------------------------------------

def channel_status(now: datetime | None = None) -> dict:
    """Queue counts, the last delivery and the last error (redacted), in two queries."""
    from django.db.models import Count, Max

    now = now or timezone.now()
    since = now - timedelta(hours=24)
    stats = AlertOutbox.objects.aggregate(
        pending=Count("id", filter=Q(status=AlertStatus.PENDING)),
        failed_24h=Count("id", filter=Q(status=AlertStatus.FAILED, created_at__gte=since)),
        expired_24h=Count("id", filter=Q(status=AlertStatus.EXPIRED, created_at__gte=since)),
        sent_24h=Count("id", filter=Q(status=AlertStatus.SENT, sent_at__gte=since)),
        last_sent_at=Max("sent_at"),
        oldest_pending=Min("created_at", filter=Q(status=AlertStatus.PENDING)),
    )
    last_error = (AlertOutbox.objects.exclude(last_error="").order_by("-id").values_list("last_error", flat=True)
                  .first())
    stats["last_error"] = redact(last_error) if last_error else ""
    return stats


# -- direct send: when the database itself is down [AL-3] -------------------------------------
#
# The outbox needs the database. When the database is what failed, ``send_direct`` posts one
# message straight to the Bot API from a daemon thread (the caller never waits), using the
# channel this process remembered while the database was up (``remember_channel``) or the
# environment. Rate limits without the database: a process sends at most
# ``DIRECT_MAX_PER_MINUTE`` messages a minute, and a ``dedup_key`` is claimed with an exclusive
# file create under the runbook directory, so the worker processes of one host send a given
# alert once, however many of them notice the outage.

DIRECT_MAX_PER_MINUTE = 6
DIRECT_KEEP_SECONDS = 7 * 86_400         # stamp files older than this are removed
_direct_lock = threading.Lock()
_direct_channel: dict | None = None       # {"token", "chat_id", "api_url", "enabled"} or None
_direct_sent: deque[float] = deque()
direct_log: deque[dict] = deque(maxlen=50)   # what the direct path did in this process (no secrets)


def runbook_dir() -> Path:
    """Where hosts keep runbook state that must work without the database."""
    configured = getattr(settings, "QUANTWEB_RUNBOOK_DIR", None)
    return Path(configured) if configured else Path(settings.VAR_DIR) / "runbook"


def remember_channel(cfg: AlertSettings | None = None) -> bool:
    """Keep the alert channel in process memory for ``send_direct``; True when one is configured.

    Workers call it while the database is up (the dispatcher once a minute, the watchdog), so a
    token saved on the CONFIG page is known when the database later fails.
    """
    global _direct_channel
    cfg = cfg if cfg is not None else AlertSettings.load()
    with _direct_lock:
        if cfg.configured:
            register_secret(cfg.effective_token)
            _direct_channel = {"token": cfg.effective_token, "chat_id": cfg.effective_chat_id,
                               "api_url": settings.TELEGRAM_API_URL, "enabled": cfg.enabled}
        else:
            _direct_channel = {"token": "", "chat_id": "", "api_url": settings.TELEGRAM_API_URL,
                               "enabled": cfg.enabled}
    return cfg.configured


def forget_channel() -> None:
    """Drop what ``remember_channel`` kept (tests; a process that must re-read the settings)."""
    global _direct_channel
    with _direct_lock:
        _direct_channel = None
        _direct_sent.clear()


def direct_channel() -> dict | None:
    """The channel ``send_direct`` would use: remembered, else the environment; None if none."""
    with _direct_lock:
        remembered = dict(_direct_channel) if _direct_channel is not None else None
    if remembered is None:
        remembered = {"token": settings.TELEGRAM_BOT_TOKEN or "", "chat_id": settings.TELEGRAM_CHAT_ID or "",
                      "api_url": settings.TELEGRAM_API_URL, "enabled": True}
    if not (remembered["token"] and remembered["chat_id"]):
        return None
    return remembered


def render_direct(level: str, kind: str, message: str, *, subject: str = "", now: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"[{level}] {subject or 'platform'} · {kind} · {when}\n{message}"


def claim_once(key: str, *, now: float | None = None) -> bool:
    """Claim ``key`` for this host: True for the first process that asks, False afterwards.

    An exclusive create of a stamp file; when the directory cannot be written, every process
    claims for itself (an extra message is better than a silent outage)."""
    now = time.time() if now is None else now
    folder = runbook_dir() / "direct-alerts"
    name = hashlib.sha1(key.encode()).hexdigest()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError:
        logger.warning("runbook directory %s is not writable; direct alerts are deduplicated per process only",
                       folder)
        return True
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{now:.0f} {key[:200]}\n")
    _prune_stamps(folder, now)
    return True


def _prune_stamps(folder: Path, now: float) -> None:
    try:
        for path in folder.iterdir():
            if now - path.stat().st_mtime > DIRECT_KEEP_SECONDS:
                path.unlink(missing_ok=True)
    except OSError:
        pass


def send_direct(level: str, kind: str, message: str, *, dedup_key: str | None = None,
                now: float | None = None) -> threading.Thread | None:
    """Post one alert without touching the database; returns the sending thread, or None when
    nothing is sent (no channel, alerts switched off, the key already claimed, or the
    per-process rate limit). Never raises and never waits for the network."""
    try:
        now = time.time() if now is None else now
        channel = direct_channel()
        if channel is None or not channel["enabled"]:
            _note_direct(kind, "skipped", "no alert channel" if channel is None else "alerts are switched off", now)
            return None
        with _direct_lock:
            while _direct_sent and _direct_sent[0] <= now - RATE_WINDOW_SECONDS:
                _direct_sent.popleft()
            if len(_direct_sent) >= DIRECT_MAX_PER_MINUTE:
                limited = True
            else:
                limited = False
        if limited:
            _note_direct(kind, "skipped", "direct rate limit reached", now)
            return None
        if dedup_key is not None and not claim_once(dedup_key, now=now):
            _note_direct(kind, "skipped", "already sent from this host", now)
            return None
        with _direct_lock:
            _direct_sent.append(now)
        text = render_direct(level, kind, message, now=now)
        thread = threading.Thread(target=_send_direct, args=(channel, kind, text), name="alert-direct", daemon=True)
        thread.start()
        return thread
    except Exception as exc:  # the fallback of the fallback: only a log line
        logger.warning("direct alert %s not sent: %s", kind, _clean(f"{type(exc).__name__}: {exc}"))
        return None


def _send_direct(channel: dict, kind: str, text: str) -> None:
    result = send_telegram(channel["api_url"], channel["token"], channel["chat_id"], text, timeout=http_timeout())
    if result.ok:
        _note_direct(kind, "sent", "", time.time())
        logger.info("direct alert %s sent", kind)
    else:
        _note_direct(kind, "failed", result.error, time.time())
        logger.warning("direct alert %s not delivered: %s", kind, result.error)


def _note_direct(kind: str, outcome: str, detail: str, now: float) -> None:
    direct_log.append({"kind": kind, "outcome": outcome, "detail": redact(detail)[:200], "at": now})
