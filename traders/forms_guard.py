"""The trader page's guard reset form [RK-4]."""

from __future__ import annotations

from django import forms

from risk.engine.guard import TRIP_RULES


class GuardResetForm(forms.Form):
    code = forms.ChoiceField(choices=[("", "every trip that needs a reset")] + [(c, c) for c in TRIP_RULES],
                             required=False)
    reason = forms.CharField(max_length=200, strip=True,
                             help_text="why the trip may be cleared; kept in the audit log")
