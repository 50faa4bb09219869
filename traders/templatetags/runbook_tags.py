"""``{% selftest_panel %}``: the CONFIG page's runbook section (the last self-test, when the next
one runs, exchanges under rate-limit back-off, an open database outage) renders its own context,
so the config view does not have to know about the runbook [AL-3]."""

from __future__ import annotations

from django import template

register = template.Library()


@register.inclusion_tag("traders/_selftest.html")
def selftest_panel() -> dict:
    from traders.runbook import status

    return status()
