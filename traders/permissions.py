"""Who may see and do what: one definition for the pages, the API, the websocket, the exports,
admin and the worker applying an intent [issue 7 #7, issue 21 #4].

Roles (the role matrix in docs/ui-api.md):

* anonymous: nothing (login required everywhere).
* viewer: logged in, neither staff nor ``traders.change_trader``: reads their own traders.
* operator: ``traders.change_trader``, not staff: creates traders and acts on their own, except
  anything that moves LIVE money.
* staff: ``is_staff``: sees every trader and credential; the only role that moves LIVE money
  (liquidate a LIVE trader, start an armed LIVE trader, arm, switch PAPER <-> LIVE), manages
  credentials and uses the kill switches.

Ownership: a trader and a credential belong to ``owner`` (set to the creating user). Non-staff
see and act on what they own only; a trader without an owner (rows from before owners existed
and no superuser to give them to) is visible to staff only. Someone else's trader is "not
found" (404), not "forbidden", so ids do not reveal what exists.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet

# Messages shown to the user (pages and API) when a LIVE-money action is refused.
LIVE_MONEY_STAFF_ONLY = "only staff may move LIVE money"
MSG_LIQUIDATE_LIVE = "only staff may liquidate a LIVE trader's positions"
MSG_START_ARMED_LIVE = "only staff may start an armed LIVE trader"
MSG_MODE_CHANGE = "only staff may switch a trader between PAPER and LIVE"
MSG_MODE_LIVE = "only staff may switch a trader to LIVE"
MSG_ARM_OR_KILL = "only staff may arm LIVE trading or use the kill switches"
MSG_NOT_OPERATOR = "you may view traders but not change them"
MSG_NOT_OWNER = "that trader is not yours"
MSG_OPEN_LIVE_POSITIONS = ("the trader holds open LIVE positions; close them (LIQUIDATE, staff) before switching "
                           "it to PAPER")


def is_staff(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def can_operate(user) -> bool:
    """Operators create, run and stop their own PAPER traders; viewers only look."""
    return bool(user is not None and user.is_authenticated and user.is_active
                and (user.is_staff or user.has_perm("traders.change_trader")))


def can_manage_live(user) -> bool:
    """Only staff move LIVE money, manage credentials and use the kill switches."""
    return is_staff(user)


def role_of(user) -> str:
    """anonymous, viewer, operator or staff (for messages and the role matrix)."""
    if user is None or not user.is_authenticated:
        return "anonymous"
    if is_staff(user):
        return "staff"
    return "operator" if can_operate(user) else "viewer"


# -- scoping ----------------------------------------------------------------------------------

def traders_for(user, qs: QuerySet | None = None) -> QuerySet:
    """The traders ``user`` may see (removed ones included: their history stays readable)."""
    from traders.models import Trader

    qs = Trader.objects.all() if qs is None else qs
    if is_staff(user):
        return qs
    if user is None or not user.is_authenticated or not user.is_active:
        return qs.none()
    return qs.filter(owner=user)


def credentials_for(user, qs: QuerySet | None = None) -> QuerySet:
    from traders.models import Credential

    qs = Credential.objects.all() if qs is None else qs
    if is_staff(user):
        return qs
    if user is None or not user.is_authenticated or not user.is_active:
        return qs.none()
    return qs.filter(owner=user)


def scope_by_trader(qs: QuerySet, user, field: str = "trader") -> QuerySet:
    """Rows of the traders ``user`` may see (events, orders, fills, positions, signals...)."""
    if is_staff(user):
        return qs
    if user is None or not user.is_authenticated or not user.is_active:
        return qs.none()
    return qs.filter(**{f"{field}__owner": user})


def scope_events(qs: QuerySet, user) -> QuerySet:
    """Action-log rows: non-staff see their traders' rows and platform-wide rows (kill switch,
    config, rate limits: no trader), never another user's trader."""
    from django.db.models import Q

    if is_staff(user):
        return qs
    if user is None or not user.is_authenticated or not user.is_active:
        return qs.none()
    return qs.filter(Q(trader__owner=user) | Q(trader__isnull=True))


def visible_trader_ids(user) -> set[int] | None:
    """The ids of the traders ``user`` may see; None means every trader (staff)."""
    if is_staff(user):
        return None
    return set(traders_for(user).values_list("id", flat=True))


def may_see_trader(user, trader) -> bool:
    if trader is None:
        return False
    return is_staff(user) or (user is not None and user.is_authenticated and user.is_active
                              and trader.owner_id == user.pk)


def may_use_credential(user, credential) -> bool:
    return credential is None or is_staff(user) or (
        user is not None and user.is_authenticated and credential.owner_id == user.pk)


# -- actions on traders -----------------------------------------------------------------------

def has_open_positions(trader) -> bool:
    from execution.models import Position

    return Position.objects.filter(trader_id=trader.pk, status=Position.Status.OPEN).exists()


def check_intent(user, trader, kind: str, payload: dict) -> None:
    """Raise PermissionDenied (403) or ValidationError (4xx) when ``user`` may not ask for
    ``kind`` on ``trader``. Checked when the intent is recorded and again when a worker applies
    it (the trader, its owner or the user's role may have changed in between)."""
    from traders.models import IntentKind, TraderMode

    staff = is_staff(user)
    if kind in (IntentKind.ARM, IntentKind.KILL_ALL, IntentKind.RELEASE_KILL, IntentKind.EMERGENCY_STOP):
        if not staff:
            raise PermissionDenied(MSG_ARM_OR_KILL)
        return
    if not can_operate(user):
        raise PermissionDenied(MSG_NOT_OPERATOR)
    if trader is None:
        return
    if not staff and trader.owner_id != user.pk:
        raise PermissionDenied(MSG_NOT_OWNER)
    live = trader.mode == TraderMode.LIVE
    if kind == IntentKind.LIQUIDATE and live and not staff:
        raise PermissionDenied(MSG_LIQUIDATE_LIVE)
    if kind == IntentKind.START and live and trader.armed and not staff:
        raise PermissionDenied(MSG_START_ARMED_LIVE)
    if kind == IntentKind.SET_MODE:
        mode = payload.get("mode")
        if not staff and mode == TraderMode.LIVE:
            raise PermissionDenied(MSG_MODE_LIVE)
        if not staff and live and mode != trader.mode:
            raise PermissionDenied(MSG_MODE_CHANGE)
        if live and mode == TraderMode.PAPER and has_open_positions(trader):
            raise ValidationError({"mode": MSG_OPEN_LIVE_POSITIONS})
