"""The model versions / tuning / bandit section of the STRATEGY page."""

from django import template

register = template.Library()


@register.simple_tag(takes_context=True)
def learning_section(context) -> str:
    return ""
