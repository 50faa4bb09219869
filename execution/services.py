"""Execution services used by workers (never by web views)."""

from __future__ import annotations

from execution.models import Order


def cancel_open_orders(trader, reason: str) -> int:
    """Cancel every resting order of a trader. PAPER orders live only here; LIVE orders are
    cancelled on the venue by the runtime before this bookkeeping."""
    from traders.services import log_event

    count = 0
    for order in Order.objects.select_for_update().filter(
            trader=trader, status__in=[Order.Status.NEW, Order.Status.OPEN, Order.Status.PARTIALLY_FILLED]):
        order.status, order.error = Order.Status.CANCELLED, reason[:300]
        order.save(update_fields=["status", "error", "updated_at"])
        count += 1
    if count:
        log_event(trader, "ORDERS_CANCELLED", f"{count} open orders cancelled ({reason})")
    return count
