"""Execution services used by workers (never by web views).

* ``record_failure`` / ``is_blacklisted`` / ``blacklisted_markets``: failed orders and the market
  blacklist [EXE-3]. Failures are ``ExecutionFailure`` rows; a ban is a ``MarketBlacklist`` row
  (``execution.engine.blacklist`` decides). Every failure is a WARN event (so an alert, see
  ``traders.alerts``), every new ban another one.
* ``cancel_open_orders``: stop a trader's resting orders (PAPER locally, LIVE on the venue).
"""

from __future__ import annotations

import logging

from django.db import transaction

from execution.engine.blacklist import BlacklistPolicy, evaluate
from execution.models import ExecutionFailure, MarketBlacklist, Order

logger = logging.getLogger(__name__)

BLACKLIST_POLICY = BlacklistPolicy()
MARKET_BLACKLISTED = "MARKET_BLACKLISTED"
#: Failures of the whole account, not of one market: events and alerts, but not counted for the
#: market blacklist (the runtime guard's API error rate and the rate limiter handle them).
NOT_COUNTED = ("RATE_LIMITED", "VENUE_BANNED", "AUTH_FAILED")


def record_failure(trader, symbol: str, code: str, detail: str = "", *, now: float, order: Order | None = None,
                   policy: BlacklistPolicy = BLACKLIST_POLICY) -> bool:
    """Store one failed order of ``trader`` on ``symbol`` (an event and so an alert); blacklist the
    market when it is the third within the window. Returns True when this failure started a ban."""
    from traders import audit
    from traders.models import EventLevel
    from traders.services import log_event

    mode = order.mode if order is not None else trader.mode
    with transaction.atomic():
        ExecutionFailure.objects.create(trader=trader, order=order, symbol=symbol, mode=mode, ts=int(now),
                                        code=code[:40], detail=detail[:300])
        cid = order.client_order_id if order is not None else ""
        log_event(trader, "ORDER_FAILED", f"{symbol}: {code}{' - ' + detail if detail else ''}"[:500],
                  level=EventLevel.WARN, data={"symbol": symbol, "code": code, "client_order_id": cid, "mode": mode})
        row = MarketBlacklist.objects.select_for_update().filter(trader=trader, symbol=symbol).first()
        since = now - policy.window_seconds
        stamps = list(ExecutionFailure.objects.filter(trader=trader, symbol=symbol, ts__gt=since)
                      .exclude(code__in=NOT_COUNTED).values_list("ts", flat=True))
        decision = evaluate(stamps, now, row.until if row else None, policy)
        if not decision.newly_banned:
            return False
        reason = f"{decision.failures_in_window} failed orders within {policy.window_seconds // 60} min (last: {code})"
        MarketBlacklist.objects.update_or_create(trader=trader, symbol=symbol,
                                                 defaults={"until": decision.until, "reason": reason[:300]})
        log_event(trader, MARKET_BLACKLISTED, f"{symbol} blacklisted for {policy.ban_seconds // 60} min: {reason}",
                  level=EventLevel.WARN, data={"symbol": symbol, "until": decision.until, "code": code})
        audit.record(MARKET_BLACKLISTED, actor="system", trader=trader,
                     payload={"symbol": symbol, "until": decision.until, "reason": reason})
        return True


def is_blacklisted(trader, symbol: str, now: float) -> bool:
    """[EXE-3]: may ``trader`` open a position on ``symbol`` at ``now`` (epoch seconds)? A tick's
    checklist denies the entry with reason code ``MARKET_BLACKLISTED`` when this is True."""
    return MarketBlacklist.objects.filter(trader=trader, symbol=symbol, until__gt=int(now)).exists()


def blacklisted_markets(trader, now: float) -> dict[str, int]:
    """Every market ``trader`` may not enter at ``now``: symbol -> epoch seconds the ban ends
    (one query, for the tick's checklist)."""
    return dict(MarketBlacklist.objects.filter(trader=trader, until__gt=int(now)).values_list("symbol", "until"))


def cancel_open_orders(trader, reason: str, *, exchange=None, venue: bool = True) -> int:
    """Cancel every resting order of a trader. PAPER orders live only here. LIVE orders are
    cancelled on the venue (``execution.live.cancel_live_orders``: no venue call inside a
    transaction of its own); one the venue could not confirm keeps its status and a cancel
    request. ``venue=False`` (STOP's state phase, inside its transaction): LIVE orders only get
    the request (never-sent ones end here) and the caller cancels them on the venue after commit."""
    from traders.services import log_event

    count = 0
    if trader.mode == "LIVE" or Order.objects.filter(trader=trader, mode="LIVE", status__in=[
            Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]).exists():
        from execution.live import cancel_live_orders, request_live_cancels

        if venue:
            count += cancel_live_orders(trader, reason, exchange=exchange)
        else:
            count += request_live_cancels(trader, reason)[0]
    with transaction.atomic():
        for order in Order.objects.select_for_update().filter(
                trader=trader, status__in=[Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]
        ).exclude(mode="LIVE"):
            order.status, order.error = Order.Status.CANCELLED, reason[:300]
            order.save(update_fields=["status", "error", "updated_at"])
            count += 1
        if count:
            log_event(trader, "ORDERS_CANCELLED", f"{count} open orders cancelled ({reason})")
    return count
