"""The learning section of the STRATEGY page [UI-3]: model versions with their gate metrics and
lifecycle actions, tuning runs with live progress, candidates with every gate metric and the
deciding rule, recent drift checks and the bandit's weights per regime."""

from django import template
from django.template.loader import render_to_string

register = template.Library()


@register.simple_tag(takes_context=True)
def learning_section(context) -> str:
    from strategies.views_learning import section_context

    request = context["request"]
    return render_to_string("strategies/learning_section.html", section_context(request), request=request)
