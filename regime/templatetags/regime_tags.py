"""The regime-thresholds section of the STRATEGY page."""

from django import template
from django.template.loader import render_to_string

register = template.Library()


@register.simple_tag(takes_context=True)
def regime_thresholds_section(context) -> str:
    from regime.views import section_context

    request = context["request"]
    return render_to_string("regime/thresholds_section.html", section_context(request), request=request)
