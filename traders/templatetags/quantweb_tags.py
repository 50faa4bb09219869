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


@register.filter
def tp_plan(value) -> str:
    """A take-profit plan ``[[R multiple, fraction of the initial qty], ...]`` (a list or its JSON
    text) in words: "sell 30% at +1.5R, 30% at +3R; trail the rest (40%)". Anything that is not
    such a plan is shown as it is."""
    import json

    plan = value
    if isinstance(value, str):
        try:
            plan = json.loads(value)
        except ValueError:
            return value
    try:
        levels = [(float(r), float(frac)) for r, frac in plan]
    except (TypeError, ValueError):
        return str(value)
    if not levels:
        return "no scale-out; trail the whole position"
    steps = ", ".join(f"{frac * 100:g}% at +{r:g}R" for r, frac in levels)
    rest = 1.0 - sum(frac for _r, frac in levels)
    tail = f"; trail the rest ({rest * 100:g}%)" if rest > 1e-9 else ""
    return f"sell {steps}{tail}"
