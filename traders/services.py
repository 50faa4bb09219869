"""Actions on traders: each writes its change, its audit row and its event in one transaction.

The web calls ``create_trader`` and ``request_intent`` only: it records what the operator wants.
Workers call ``process_intents`` and carry it out [RT-1].
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Case, F, IntegerField, Q, Value, When
from django.utils import timezone

from traders import alerts, audit, permissions, realtime
from traders.models import (
    Credential,
    Event,
    EventLevel,
    Intent,
    IntentKind,
    IntentStatus,
    Trader,
    TraderMode,
    TraderStatus,
)
from traders.permissions import can_manage_live, can_operate  # noqa: F401  (one definition)

logger = logging.getLogger(__name__)

MAX_SEED_MONEY = Decimal("100000000000")  # 100 bn KRW: a typo guard, not a business limit


# -- permissions ------------------------------------------------------------------------------

# can_operate / can_manage_live: one definition, in traders.permissions (imported above).


# -- events -----------------------------------------------------------------------------------

def log_event(trader: Trader | None, kind: str, message: str, *, level: str = EventLevel.INFO,
              data: dict | None = None) -> Event:
    """Write an action-log row; it reaches browsers after commit (traders.realtime)."""
    event = Event.objects.create(
        trader=trader, kind=kind, message=message[:500], level=level, data=audit.normalise_payload(data)
    )
    transaction.on_commit(lambda: realtime.publish(realtime.event_payload(event)))
    alerts.on_event(event)  # queues a Telegram alert in this transaction; never raises [AL-1]
    return event


# -- creation ---------------------------------------------------------------------------------

def create_trader(*, user, name: str, profile, seed_money: Decimal, credential: Credential | None = None,
                  exchange: str = "sim") -> Trader:
    """Create a stopped PAPER trader pinned to the profile's current config version."""
    from risk.models import TraderSafetyState

    if not can_operate(user):
        raise PermissionDenied("you may view traders but not create them")
    name = (name or "").strip()
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "A name is required."
    elif Trader.objects.active().filter(name=name).exists():
        errors["name"] = f"A trader named {name!r} already exists."
    if seed_money is None or seed_money <= 0:
        errors["seed_money"] = "Seed money must be positive."
    elif seed_money > MAX_SEED_MONEY:
        errors["seed_money"] = f"Seed money above {MAX_SEED_MONEY:,} is refused."
    if profile is None or profile.current_version_id is None:
        errors["profile"] = "Choose a strategy profile."
    if credential is not None and credential.exchange != exchange and exchange != "sim":
        errors["credential"] = "The credential is for another exchange."
    if credential is not None and not permissions.may_use_credential(user, credential):
        errors["credential"] = "Choose one of your own credentials."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        trader = Trader.objects.create(
            name=name,
            profile=profile,
            config_version=profile.current_version,
            seed_money=seed_money,
            exchange=credential.exchange if credential else exchange,
            credential=credential,
            mode=TraderMode.PAPER,
            status=TraderStatus.STOPPED,
            cash=seed_money,
            equity=seed_money,
            created_by=user,
            owner=user,
        )
        TraderSafetyState.objects.create(trader=trader, peak_equity=seed_money)
        audit.record("TRADER_CREATED", actor=user, trader=trader, obj=trader, payload={
            "name": name, "profile": profile.key, "config_version": profile.current_version.version,
            "seed_money": seed_money, "exchange": trader.exchange,
            "credential": credential.pk if credential else None,
        })
        log_event(trader, "TRADER_CREATED",
                  f"{name} created with {profile.name} v{profile.current_version.version}, seed {seed_money:,}",
                  data={"mode": trader.mode})
    return trader


# -- intents (web side) -----------------------------------------------------------------------

def _validate_intent(user, trader: Trader | None, kind: str, payload: dict) -> None:
    permissions.check_intent(user, trader, kind, payload)   # roles, owner, staff-only LIVE money
    if kind in (IntentKind.KILL_ALL, IntentKind.RELEASE_KILL, IntentKind.EMERGENCY_STOP):
        return
    if trader is None or trader.removed_at is not None:
        raise ValidationError("that trader does not exist")
    if kind == IntentKind.SET_MODE:
        mode = payload.get("mode")
        if mode not in TraderMode.values:
            raise ValidationError({"mode": "Run mode must be PAPER or LIVE."})
        if mode == TraderMode.LIVE and trader.credential_id is None:
            raise ValidationError({"mode": "LIVE needs an exchange credential; this trader has none."})
        if trader.status != TraderStatus.STOPPED:
            raise ValidationError({"mode": "Stop the trader before changing its run mode."})
    if kind == IntentKind.ARM:
        if trader.mode != TraderMode.LIVE:
            raise ValidationError("only a LIVE trader can be armed")
        if not trader.paper_protection_passed():
            raise ValidationError(
                f"paper protection: the strategy must run {settings.QUANTWEB_PAPER_PROTECTION_HOURS} h in PAPER first"
            )
    if kind == IntentKind.REMOVE and trader.status == TraderStatus.RUNNING:
        raise ValidationError("stop the trader before removing it")
    if kind == IntentKind.START and trader.status == TraderStatus.RUNNING:
        raise ValidationError("the trader is already running")


def request_intent(*, user, kind: str, trader: Trader | None = None, payload: dict | None = None) -> Intent:
    """Record what the operator asked for; a worker carries it out. Never touches an exchange."""
    payload = payload or {}
    _validate_intent(user, trader, kind, payload)
    with transaction.atomic():
        intent = Intent.objects.create(trader=trader, kind=kind, payload=payload, created_by=user)
        audit.record(f"INTENT_{kind}", actor=user, trader=trader, obj=intent, payload=payload)
        log_event(trader, "INTENT", f"{user.username} asked: {IntentKind(kind).label}", data={"intent": intent.pk, **payload})
        transaction.on_commit(_nudge_worker)
    return intent


def _nudge_worker() -> None:
    """Ask the workers to pick the intent up now instead of at the next scheduled dispatch."""
    try:
        from django_q.tasks import async_task

        async_task("traders.tasks.process_intents", task_name="process-intents", q_options={"timeout": 30})
    except Exception:  # the scheduled dispatcher picks it up anyway
        logger.warning("could not enqueue intent processing; the next dispatch will", exc_info=True)


# -- runtime guard (web side) ------------------------------------------------------------------

GUARD_RESET_REASON_MAX = 200


def _trip_rules():
    from risk.engine.guard import CONSECUTIVE_LOSSES, EMERGENCY_STOP, TRIP_RULES, ClearMode

    manual = {code for code, (_sev, mode) in TRIP_RULES.items() if mode is ClearMode.MANUAL}
    # EMERGENCY_STOP is reset by releasing the master kill switch once the liquidation is done
    # (the tick does it); CONSECUTIVE_LOSSES clears after its cooldown, and a reset acknowledges
    # the run early.
    resettable = (manual - {EMERGENCY_STOP}) | {CONSECUTIVE_LOSSES}
    return TRIP_RULES, manual, resettable


def _clears_text(trip: dict, manual: set[str]) -> str:
    from risk.engine.guard import EMERGENCY_STOP

    code, mode = trip.get("code"), trip.get("clear_mode")
    if code == EMERGENCY_STOP:
        return "when the master kill switch is released, after the liquidation"
    if code in manual:
        return "only by a staff reset"
    if mode == "TIME" and trip.get("clears_at_ts"):
        return "at the time shown"
    if mode == "CONDITION":
        return "by itself once the condition is gone (after the hold time)"
    return "by itself"


def _utc(ts) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(ts), UTC) if ts is not None else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def guard_state(trader: Trader) -> dict:
    """The trader's runtime guard for pages and the API [RK-4]: its trading state and every
    active trip with its severity, since when, how it clears and whether it needs a reset."""
    from risk.models import TraderSafetyState

    try:
        safety = trader.safety
    except TraderSafetyState.DoesNotExist:
        safety = None
    _rules, manual, resettable = _trip_rules()
    trips = []
    for trip in (safety.trips if safety else []) or []:
        if not isinstance(trip, dict) or "code" not in trip:
            continue
        trips.append({
            "code": str(trip["code"]),
            "severity": str(trip.get("severity", "")),
            "detail": str(trip.get("detail", "")),
            "since": _utc(trip.get("since_ts")),
            "clear_mode": str(trip.get("clear_mode", "")),
            "clears_at": _utc(trip.get("clears_at_ts")),
            "clears": _clears_text(trip, manual),
            "needs_manual_reset": trip["code"] in manual,
            "resettable": trip["code"] in resettable,
        })
    guard = (safety.state or {}).get("guard") if safety else None
    peak = guard.get("peak_equity") if isinstance(guard, dict) else None
    return {
        "trader": trader.pk,
        "trading_state": safety.trading_state if safety else "ACTIVE",
        "reason": safety.reason if safety else "",
        "trips": trips,
        "drawdown_peak": float(peak) if isinstance(peak, int | float) else None,
        "updated_at": safety.updated_at if safety else None,
    }


def reset_guard(*, user, trader: Trader, reason: str, codes: list[str] | None = None) -> list[str]:
    """Staff clear guard trips that need a manual reset (``risk.engine.guard.reset``): MAX_DRAWDOWN
    rebases the drawdown peak to the current equity (the loss is accepted), CONSECUTIVE_LOSSES
    acknowledges the run. ``codes`` None: every resettable active trip. A condition that still
    holds trips again at the next tick. Writes the state, an audit row and an event together;
    returns the codes reset."""
    from risk.engine.guard import GuardState, TradingState
    from risk.engine.guard import reset as guard_reset
    from risk.models import TraderSafetyState

    if not can_manage_live(user):
        raise PermissionDenied("only staff may reset a guard trip")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the trip may be cleared; the reason is kept in the audit log."})
    if len(reason) > GUARD_RESET_REASON_MAX:
        raise ValidationError({"reason": f"Keep the reason under {GUARD_RESET_REASON_MAX} characters."})
    rules, manual, resettable = _trip_rules()
    with transaction.atomic():
        # Same lock order as the tick (trader, then its safety row): a reset waits for a running tick.
        trader = Trader.objects.select_for_update().get(pk=trader.pk)
        if trader.removed_at is not None:
            raise ValidationError("that trader was removed")
        safety = TraderSafetyState.objects.select_for_update().filter(trader=trader).first()
        state = GuardState.from_dict(safety.state.get("guard")) if safety else GuardState()
        active = {t.code: t for t in state.trips}
        if codes is None:
            chosen = [code for code in active if code in resettable]
            if not chosen:
                raise ValidationError({"codes": "No active trip needs a manual reset."})
        else:
            chosen, errors = [], []
            for code in dict.fromkeys(codes):
                if code not in rules:
                    errors.append(f"{code}: not a guard trip code")
                elif code not in active:
                    errors.append(f"{code}: not tripped")
                elif code not in resettable:
                    errors.append(f"{code}: clears {_clears_text(active[code].to_dict(), manual)}, not by a reset")
                else:
                    chosen.append(code)
            if errors:
                raise ValidationError({"codes": errors})
        new = guard_reset(state, equity=float(trader.equity), consecutive_losses=safety.consecutive_losses,
                          codes=tuple(chosen))
        safety.trading_state = new.trading_state.value
        safety.trips = [t.to_dict() for t in new.trips]
        safety.reason = "; ".join(f"{t.code}: {t.detail}" for t in new.trips)[:300]
        safety.state = {**safety.state, "guard": new.to_dict()}
        safety.save(update_fields=["trading_state", "trips", "reason", "state", "updated_at"])
        if trader.status == TraderStatus.PAUSED and new.trading_state is TradingState.ACTIVE:
            trader.status, trader.status_reason = TraderStatus.RUNNING, ""
            trader.save(update_fields=["status", "status_reason"])
        payload = {"codes": chosen, "reason": reason, "trading_state": new.trading_state.value,
                   "cleared": [active[c].to_dict() for c in chosen], "drawdown_peak": new.peak_equity,
                   "equity": trader.equity}
        audit.record("GUARD_RESET", actor=user, trader=trader, obj=safety, payload=payload)
        log_event(trader, "GUARD_RESET",
                  f"{user.username} reset {', '.join(chosen)} ({reason}); guard now {new.trading_state.value}",
                  level=EventLevel.WARN, data=payload)
    return chosen


# -- intents (worker side) --------------------------------------------------------------------
#
# The control plane always stops (issue 21, item 2). ``process_intents`` claims one due intent at
# a time with a conditional UPDATE (a lease, so two workers never apply one intent at once, on
# any database) and applies it in two phases:
#
# 1. the state phase, one short transaction without venue I/O: the kill switch, the trader's
#    status, liquidation flags, cancel requests on the orders. Committed, it is never undone.
# 2. the venue phase (STOP, KILL_ALL, EMERGENCY_STOP), outside any transaction: working LIVE
#    orders are cancelled on the venue (``execution.live.cancel_working_orders``).
#
# A validation or permission error rejects the intent. Anything else (a venue call that fails
# or answers nonsense, a credential that cannot be decrypted, a bug) is recorded on the intent,
# alerted, and retried with back-off; after ``QUANTWEB_INTENT_MAX_ATTEMPTS`` claims the intent is
# FAILED with its reason. Either way the next intent is applied: one failing intent never blocks
# another. The kill-switch intents are claimed before any other pending intent.

SWITCH_KINDS = (IntentKind.KILL_ALL, IntentKind.EMERGENCY_STOP, IntentKind.RELEASE_KILL)
VENUE_KINDS = (IntentKind.STOP, IntentKind.KILL_ALL, IntentKind.EMERGENCY_STOP, IntentKind.TEST_CREDENTIAL)


def _setting(name: str, default: int) -> int:
    return int(getattr(settings, name, default))


def intent_max_attempts() -> int:
    return max(1, _setting("QUANTWEB_INTENT_MAX_ATTEMPTS", 5))


def intent_retry_seconds(attempt: int) -> float:
    """Back-off after the ``attempt``-th failed claim: base, 2x base, 4x base ... capped."""
    base = _setting("QUANTWEB_INTENT_RETRY_SECONDS", 10)
    cap = _setting("QUANTWEB_INTENT_RETRY_MAX_SECONDS", 600)
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def intent_lease_seconds() -> int:
    """How long a claimed intent is left to its worker before another may claim it again."""
    return _setting("QUANTWEB_INTENT_LEASE_SECONDS", 120)


def _due(now: datetime) -> Q:
    return Q(status=IntentStatus.PENDING) & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))


def process_intents(limit: int = 100, *, now: datetime | None = None, venue: bool = True) -> int:
    """Carry out due intents, kill switches first, then in order; returns how many were handled
    (applied, rejected, failed or put back for a retry). Never stops at a failing intent; safe to
    run concurrently. ``venue=False`` (the dispatcher): state phases only, no venue call; the
    venue phases are left for a ``process_intents`` task (``venue_work_due``). ``now`` is for
    tests (back-off)."""
    handled = 0
    while handled < limit:
        intent = _claim(now or timezone.now(), state_only=not venue)
        if intent is None:
            break
        handled += 1
        try:
            _run_intent(intent, now, venue=venue)
        except Exception:        # bookkeeping failed: the lease runs out and the claim counts
            logger.exception("intent %s could not be recorded; it is retried after its lease", intent.pk)
    return handled


def venue_work_due(now: datetime | None = None) -> bool:
    """Whether an applied intent waits for its venue phase (first run or retry)."""
    return Intent.objects.filter(_due(now or timezone.now()), processed_at__isnull=False).exists()


def _claim(now: datetime, *, state_only: bool = False) -> Intent | None:
    order = Case(When(kind__in=SWITCH_KINDS, then=Value(0)), default=Value(1), output_field=IntegerField())
    due = Intent.objects.filter(_due(now))
    if state_only:
        due = due.filter(processed_at__isnull=True)
    candidates = due.annotate(first=order).order_by("first", "id").values_list("pk", flat=True)[:50]
    for pk in candidates:
        lease = now + timedelta(seconds=intent_lease_seconds())
        if Intent.objects.filter(_due(now), pk=pk).update(attempts=F("attempts") + 1, next_attempt_at=lease):
            return Intent.objects.select_related("trader", "created_by").get(pk=pk)
    return None


def _describe(exc: BaseException) -> str:
    from quantweb.logging import redact

    text = redact(str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_intent(intent: Intent, now: datetime | None, *, venue: bool = True) -> None:
    if intent.processed_at is None:                      # the state phase is not committed yet
        if intent.attempts > intent_max_attempts():      # earlier claims died without a word
            _give_up(intent, f"not applied after {intent.attempts - 1} attempts (worker crashed or timed out)")
            return
        superseded = _superseded_by(intent)
        if superseded is not None:
            _finish_intent(intent, IntentStatus.REJECTED, f"superseded by intent #{superseded}")
            return
        try:
            with transaction.atomic():
                result = _apply_intent(intent)
                intent.result, intent.processed_at = result[:300], timezone.now()
                if intent.kind not in VENUE_KINDS:
                    _finish_intent(intent, IntentStatus.DONE, intent.result)
                    return
                intent.save(update_fields=["result", "processed_at"])
        except (ValidationError, PermissionDenied) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            with transaction.atomic():
                _finish_intent(intent, IntentStatus.REJECTED, message)
                log_event(intent.trader, "INTENT_REJECTED", f"{IntentKind(intent.kind).label} refused: {message}",
                          level=EventLevel.WARN)
            return
        except Exception as exc:
            logger.warning("intent %s (%s) failed: %s", intent.pk, intent.kind, _describe(exc), exc_info=True)
            _attempt_failed(intent, _describe(exc), now)
            return
    if not venue:                                        # left to a process_intents task, at once
        Intent.objects.filter(pk=intent.pk, status=IntentStatus.PENDING).update(next_attempt_at=None)
        return
    failures = _venue_phase(intent)
    if failures:
        _attempt_failed(intent, "venue: " + "; ".join(failures), now)
    else:
        _finish_intent(intent, IntentStatus.DONE, _applied(intent))


def _applied(intent: Intent) -> str:
    """What the committed state phase of a venue intent did (its result before any failure)."""
    if intent.kind == IntentKind.STOP:
        return "stopped"
    if intent.kind == IntentKind.TEST_CREDENTIAL:      # the check's outcome (traders.credential_check)
        return intent.result
    return "kill switch engaged"


def _finish_intent(intent: Intent, status: str, result: str) -> None:
    with transaction.atomic():
        intent.status, intent.result, intent.next_attempt_at = status, (result or "")[:300], None
        intent.processed_at = intent.processed_at or timezone.now()
        intent.save(update_fields=["status", "result", "processed_at", "next_attempt_at"])
        audit.record("INTENT_PROCESSED", actor="system", trader=intent.trader_id, obj=intent,
                     payload={"kind": intent.kind, "status": intent.status, "result": intent.result,
                              "attempts": intent.attempts})


def _attempt_failed(intent: Intent, reason: str, now: datetime | None) -> None:
    """Record a failed attempt: retried with back-off, or FAILED once the attempts are used up.
    The state of an applied intent stays committed; only its venue work is retried."""
    label = IntentKind(intent.kind).label
    applied = f"{_applied(intent)}; " if intent.processed_at is not None else "not applied: "
    if intent.attempts >= intent_max_attempts():
        _give_up(intent, f"{applied}{reason}")
        return
    delay = intent_retry_seconds(intent.attempts)
    with transaction.atomic():
        intent.result = f"{applied}attempt {intent.attempts} failed: {reason}"[:300]
        intent.next_attempt_at = (now or timezone.now()) + timedelta(seconds=delay)
        intent.save(update_fields=["result", "next_attempt_at"])
        critical = intent.kind in SWITCH_KINDS
        log_event(intent.trader, "INTENT_RETRY",
                  f"{label} (intent #{intent.pk}) attempt {intent.attempts} of {intent_max_attempts()} failed: "
                  f"{reason}; retrying in {delay:.0f} s",
                  level=EventLevel.CRITICAL if critical else EventLevel.WARN,
                  data={"intent": intent.pk, "attempt": intent.attempts, "retry_in": delay,
                        "state_applied": intent.processed_at is not None})


def _give_up(intent: Intent, reason: str) -> None:
    label = IntentKind(intent.kind).label
    with transaction.atomic():
        _finish_intent(intent, IntentStatus.FAILED, reason)
        log_event(intent.trader, "INTENT_FAILED",
                  f"{label} (intent #{intent.pk}) FAILED after {intent.attempts} attempts: {reason}",
                  level=EventLevel.CRITICAL, data={"intent": intent.pk, "attempts": intent.attempts})


def _superseded_by(intent: Intent) -> int | None:
    """A kill-switch intent retried after a later one was applied would undo the operator's
    newer wish: it is dropped instead (an emergency stop only by a release or another one)."""
    if intent.kind not in SWITCH_KINDS or intent.attempts <= 1:
        return None
    kinds = SWITCH_KINDS if intent.kind != IntentKind.EMERGENCY_STOP else \
        (IntentKind.RELEASE_KILL, IntentKind.EMERGENCY_STOP)
    return (Intent.objects.filter(pk__gt=intent.pk, kind__in=kinds, processed_at__isnull=False)
            .exclude(status__in=[IntentStatus.REJECTED, IntentStatus.FAILED]).order_by("pk")
            .values_list("pk", flat=True).first())


def _venue_phase(intent: Intent) -> list[str]:
    """Cancel working LIVE orders on the venue, outside any transaction; returns the failures
    (empty when there is nothing to do). Never raises."""
    from execution.live import cancel_working_orders, traders_with_working_orders
    from risk.models import KillSwitch

    if intent.kind == IntentKind.TEST_CREDENTIAL:     # one read-only call: traders.credential_check
        from traders.credential_check import run_check

        return run_check(intent)
    failures: list[str] = []
    if intent.kind == IntentKind.STOP:
        trader = Trader.objects.filter(pk=intent.trader_id).first()
        if trader is None or trader.status != TraderStatus.STOPPED:
            return []                      # started again meanwhile: its ticks manage its orders
        targets, reason, purposes = [trader.pk], "trader stopped", None
    else:
        switch = KillSwitch.objects.filter(pk=1).first()
        if switch is None or not switch.engaged:
            return []                      # released meanwhile
        reason = "emergency stop" if intent.kind == IntentKind.EMERGENCY_STOP else "master kill switch"
        purposes = ("entry",)              # no new exposure; exits (the liquidation) and stops stay
        targets = traders_with_working_orders(purposes=purposes)
    for trader_id in targets:
        try:
            report = cancel_working_orders(trader_id, reason, purposes=purposes)
            failures += report.failed
        except Exception as exc:           # never let one trader's venue stop the others
            logger.warning("venue phase of intent %s, trader %s: %s", intent.pk, trader_id, _describe(exc),
                           exc_info=True)
            failures.append(f"trader {trader_id}: {_describe(exc)}")
    return failures


def _apply_intent(intent: Intent) -> str:
    """The state phase: database changes only, in the caller's transaction; no venue I/O."""
    from risk.models import KillSwitch

    kind, user = intent.kind, intent.created_by
    if kind in SWITCH_KINDS:
        switch = KillSwitch.objects.select_for_update().get_or_create(pk=1)[0]
        switch.engaged = kind != IntentKind.RELEASE_KILL
        switch.reason = intent.payload.get("reason", "") or IntentKind(kind).label
        switch.changed_by, switch.changed_at = user, timezone.now()
        switch.save()
        level = EventLevel.CRITICAL if switch.engaged else EventLevel.WARN
        log_event(None, kind, f"{IntentKind(kind).label} by {user.username if user else 'system'}", level=level)
        if kind == IntentKind.EMERGENCY_STOP:
            for trader in Trader.objects.running().select_for_update():
                _request_liquidation(trader, "EMERGENCY_STOP")
            _liquidate_stopped_live_traders()   # issue 21 #4: stopped traders' LIVE positions too
        if kind == IntentKind.RELEASE_KILL:
            _stop_emergency_restarted()
        return "kill switch engaged" if switch.engaged else "kill switch released"

    if kind == IntentKind.TEST_CREDENTIAL:             # the check itself is the venue phase
        if user is not None and not can_manage_live(user):
            raise PermissionDenied("Only staff may test credentials.")
        return "connection test queued"

    trader = Trader.objects.select_for_update().get(pk=intent.trader_id)
    if user is not None:  # re-check at execution time: the trader may have changed since
        _validate_intent(user, trader, kind, intent.payload)
    if kind == IntentKind.START:
        trader.status, trader.status_reason = TraderStatus.RUNNING, ""
        if trader.mode == TraderMode.PAPER and trader.paper_protection_started_at is None:
            trader.paper_protection_started_at = timezone.now()
        trader.save(update_fields=["status", "status_reason", "paper_protection_started_at"])
        log_event(trader, "TRADER_STARTED", f"{trader.name} started in {trader.mode}")
        return "running"
    if kind == IntentKind.STOP:
        trader.status, trader.status_reason = TraderStatus.STOPPED, "stopped by operator"
        trader.save(update_fields=["status", "status_reason"])
        _cancel_open_orders(trader)
        log_event(trader, "TRADER_STOPPED", f"{trader.name} stopped; open positions are kept")
        return "stopped"
    if kind == IntentKind.REMOVE:
        trader.removed_at = timezone.now()
        trader.save(update_fields=["removed_at"])
        log_event(trader, "TRADER_REMOVED", f"{trader.name} removed (history kept)", data={"mode": trader.mode})
        return "removed"
    if kind == IntentKind.SET_MODE:
        old, trader.mode = trader.mode, intent.payload["mode"]
        trader.armed = False
        trader.save(update_fields=["mode", "armed"])
        log_event(trader, "MODE_CHANGED", f"{trader.name}: {old} -> {trader.mode}", data={"from": old, "to": trader.mode})
        return f"mode {trader.mode}"
    if kind == IntentKind.ARM:
        trader.armed, trader.armed_at, trader.armed_by = True, timezone.now(), user
        trader.save(update_fields=["armed", "armed_at", "armed_by"])
        log_event(trader, "ARMED", f"{trader.name} ARMED for LIVE orders", level=EventLevel.WARN)
        return "armed"
    if kind == IntentKind.DISARM:
        trader.armed = False
        trader.save(update_fields=["armed"])
        log_event(trader, "DISARMED", f"{trader.name} disarmed")
        return "disarmed"
    if kind == IntentKind.LIQUIDATE:
        _request_liquidation(trader, "OPERATOR_LIQUIDATE")
        return "liquidation requested"
    raise ValidationError(f"unknown intent {kind}")


def _request_liquidation(trader: Trader, reason: str) -> None:
    """Mark the trader REDUCING with a liquidate flag; its next tick closes every position."""
    from risk.models import TraderSafetyState, TradingState

    safety, _ = TraderSafetyState.objects.select_for_update().get_or_create(trader=trader)
    safety.trading_state = TradingState.REDUCING
    safety.reason = reason
    safety.state = {**safety.state, "liquidate": True}
    safety.save(update_fields=["trading_state", "reason", "state"])
    log_event(trader, "LIQUIDATION_REQUESTED", f"{trader.name}: close every position ({reason})", level=EventLevel.WARN)


EMERGENCY_RESTARTED = "emergency_restarted"


def _liquidate_stopped_live_traders() -> None:
    """EMERGENCY_STOP closes the LIVE positions of stopped traders too: they only tick while
    running, so each is set running (the engaged kill switch allows no entry) with the liquidate
    flag and a marker; releasing the kill switch stops them again (_stop_emergency_restarted)."""
    from execution.models import Position
    from risk.models import TraderSafetyState

    holders = Position.objects.filter(status=Position.Status.OPEN).values("trader_id")
    stopped = (Trader.objects.active().select_for_update()
               .filter(mode=TraderMode.LIVE, status__in=[TraderStatus.STOPPED, TraderStatus.ERROR], pk__in=holders))
    for trader in stopped:
        trader.status, trader.status_reason = TraderStatus.RUNNING, "emergency stop: liquidating LIVE positions"
        trader.save(update_fields=["status", "status_reason"])
        _request_liquidation(trader, "EMERGENCY_STOP")
        safety = TraderSafetyState.objects.get(trader=trader)
        safety.state = {**safety.state, EMERGENCY_RESTARTED: True}
        safety.save(update_fields=["state"])
        level = EventLevel.CRITICAL if not trader.armed else EventLevel.WARN
        log_event(trader, "EMERGENCY_LIQUIDATE_STOPPED",
                  f"{trader.name} was stopped with open LIVE positions; running it to close them"
                  + ("" if trader.armed else " (NOT ARMED: no venue order can be sent; close them by hand)"),
                  level=level)


def _stop_emergency_restarted() -> None:
    """Releasing the kill switch stops again the traders the emergency stop ran only to liquidate."""
    from risk.models import TraderSafetyState

    for safety in TraderSafetyState.objects.select_for_update().filter(state__has_key=EMERGENCY_RESTARTED):
        safety.state = {k: v for k, v in safety.state.items() if k != EMERGENCY_RESTARTED}
        safety.save(update_fields=["state"])
        trader = Trader.objects.select_for_update().get(pk=safety.trader_id)
        if trader.status in (TraderStatus.RUNNING, TraderStatus.PAUSED):
            trader.status, trader.status_reason = TraderStatus.STOPPED, "stopped again after the emergency liquidation"
            trader.save(update_fields=["status", "status_reason"])
            log_event(trader, "TRADER_STOPPED", f"{trader.name} stopped again after the emergency liquidation")


def _cancel_open_orders(trader: Trader) -> None:
    """STOP's state phase: PAPER orders end here; LIVE ones get a cancel request (never-sent ones
    end here) that the venue phase carries out after the commit."""
    from execution.services import cancel_open_orders

    cancel_open_orders(trader, reason="trader stopped", venue=False)
