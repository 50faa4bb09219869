"""Actions on traders: each writes its change, its audit row and its event in one transaction.

The web calls ``create_trader`` and ``request_intent`` only: it records what the operator wants.
Workers call ``process_intents`` and carry it out [RT-1].
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from traders import alerts, audit, realtime
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

logger = logging.getLogger(__name__)

MAX_SEED_MONEY = Decimal("100000000000")  # 100 bn KRW: a typo guard, not a business limit


# -- permissions ------------------------------------------------------------------------------

def can_operate(user) -> bool:
    """Operators create, run and stop PAPER traders; viewers only look."""
    return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("traders.change_trader")))


def can_manage_live(user) -> bool:
    """Only staff manage credentials, arm LIVE and use the kill switches."""
    return bool(user and user.is_authenticated and user.is_staff)


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
    staff_only = {IntentKind.ARM, IntentKind.KILL_ALL, IntentKind.RELEASE_KILL, IntentKind.EMERGENCY_STOP}
    if kind in staff_only and not can_manage_live(user):
        raise PermissionDenied("only staff may arm LIVE trading or use the kill switches")
    if not can_operate(user):
        raise PermissionDenied("you may view traders but not change them")
    if kind in (IntentKind.KILL_ALL, IntentKind.RELEASE_KILL, IntentKind.EMERGENCY_STOP):
        return
    if trader is None or trader.removed_at is not None:
        raise ValidationError("that trader does not exist")
    if kind == IntentKind.SET_MODE:
        mode = payload.get("mode")
        if mode not in TraderMode.values:
            raise ValidationError({"mode": "Run mode must be PAPER or LIVE."})
        if mode == TraderMode.LIVE and not can_manage_live(user):
            raise PermissionDenied("only staff may switch a trader to LIVE")
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

def process_intents(limit: int = 100) -> int:
    """Carry out pending intents in order. Safe to run concurrently (rows are claimed)."""
    done = 0
    for _ in range(limit):
        with transaction.atomic():
            intent = (
                Intent.objects.select_for_update(skip_locked=True)
                .filter(status=IntentStatus.PENDING)
                .order_by("id")
                .first()
            )
            if intent is None:
                break
            try:
                result = _apply_intent(intent)
                intent.status, intent.result = IntentStatus.DONE, result
            except (ValidationError, PermissionDenied) as exc:
                message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                intent.status, intent.result = IntentStatus.REJECTED, message[:300]
                log_event(intent.trader, "INTENT_REJECTED", f"{IntentKind(intent.kind).label} refused: {message}",
                          level=EventLevel.WARN)
            intent.processed_at = timezone.now()
            intent.save(update_fields=["status", "result", "processed_at"])
            audit.record("INTENT_PROCESSED", actor="system", trader=intent.trader_id, obj=intent,
                         payload={"kind": intent.kind, "status": intent.status, "result": intent.result})
            done += 1
    return done


def _apply_intent(intent: Intent) -> str:
    from risk.models import KillSwitch

    kind, user = intent.kind, intent.created_by
    if kind in (IntentKind.KILL_ALL, IntentKind.EMERGENCY_STOP, IntentKind.RELEASE_KILL):
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
        return "kill switch engaged" if switch.engaged else "kill switch released"

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


def _cancel_open_orders(trader: Trader) -> None:
    from execution.services import cancel_open_orders

    cancel_open_orders(trader, reason="trader stopped")
