from datetime import UTC, datetime

from django import template

register = template.Library()


@register.filter
def epoch(value, fmt: str = "%m-%d %H:%M"):
    """Epoch seconds (bar-open times are stored that way) as a UTC time string."""
    try:
        return datetime.fromtimestamp(int(value), UTC).strftime(fmt)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
