"""``{% alert_settings_panel %}``: the CONFIG page's alert section renders its own context, so
the config view does not have to know about alerts."""

from __future__ import annotations

from django import template

register = template.Library()


@register.inclusion_tag("traders/_alert_settings.html", takes_context=True)
def alert_settings_panel(context) -> dict:
    from traders.views_alerts import panel_context

    request = context.get("request")
    data = panel_context(getattr(request, "user", None))
    data["csrf_token"] = context.get("csrf_token")
    return data
