"""The backtests section of the STRATEGY page: the form to run one and the latest runs."""

from django import template
from django.template.loader import render_to_string

register = template.Library()


@register.simple_tag(takes_context=True)
def backtests_section(context) -> str:
    from strategies.views_backtests import SECTION_ROWS, form_context

    request = context["request"]
    return render_to_string("strategies/backtest_section.html",
                            form_context(request, rows=SECTION_ROWS), request=request)
