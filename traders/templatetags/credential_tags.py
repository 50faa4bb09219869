"""CONFIG's credential table: the outcome of each credential's latest connection test."""

from __future__ import annotations

from django import template

from traders.credential_check import FAILED_KIND, OK_KIND
from traders.models import Event

register = template.Library()


@register.simple_tag
def credential_tests(credentials) -> dict[int, Event]:
    """{credential id: its latest CREDENTIAL_TEST_* event}, in one query."""
    wanted = {c.pk for c in credentials}
    latest: dict[int, Event] = {}
    if not wanted:
        return latest
    for event in Event.objects.filter(kind__in=[OK_KIND, FAILED_KIND]).order_by("-id")[:500]:
        pk = (event.data or {}).get("credential")
        if pk in wanted and pk not in latest:
            latest[pk] = event
    return latest


@register.filter
def for_credential(tests: dict, pk: int):
    return tests.get(pk)
