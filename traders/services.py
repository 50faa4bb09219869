"""Actions on traders: each writes its change, its audit row and its event in one transaction.

The web calls ``create_trader`` and ``request_intent`` only: it records what the operator wants.
Workers call ``process_intents`` and carry it out [RT-1].
"""

from __future__ import annotations

import logging
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
