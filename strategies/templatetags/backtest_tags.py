"""The backtests section of the STRATEGY page."""

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def backtests_section(context) -> str:
    return ""
