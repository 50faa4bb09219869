from __future__ import annotations

from decimal import Decimal

from django import forms

from strategies.models import StrategyProfile
from traders.models import Credential, Exchange, IntentKind, TraderMode
from traders.permissions import credentials_for


class TraderForm(forms.Form):
    name = forms.CharField(max_length=80)
    profile = forms.ModelChoiceField(queryset=StrategyProfile.objects.all(), label="Strategy profile",
                                     empty_label=None)
    seed_money = forms.DecimalField(max_digits=28, decimal_places=2, min_value=Decimal("5000"),
                                    label="Seed money (KRW)", help_text="at least the 5,000 KRW minimum order")
    credential = forms.ModelChoiceField(queryset=Credential.objects.all(), required=False,
                                        label="Credential", help_text="optional in PAPER (sim exchange)")

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        # Non-staff pick from their own credentials only [issue 21 #4].
        self.fields["credential"].queryset = credentials_for(user)


class ModeForm(forms.Form):
    mode = forms.ChoiceField(choices=TraderMode.choices)


class ActionForm(forms.Form):
    action = forms.ChoiceField(choices=[(k, k) for k in (IntentKind.START, IntentKind.STOP, IntentKind.REMOVE,
                                                         IntentKind.ARM, IntentKind.DISARM, IntentKind.LIQUIDATE)])


class CredentialForm(forms.ModelForm):
    api_key = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=True)
    api_secret = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=True)

    class Meta:
        model = Credential
        fields = ["exchange", "ccxt_id", "label", "api_key", "api_secret", "sandbox"]

    def clean(self):
        data = super().clean()
        if data.get("exchange") == Exchange.SIM:
            self.add_error("exchange", "The sim exchange needs no credential.")
        if data.get("exchange") == Exchange.CCXT and not data.get("ccxt_id"):
            self.add_error("ccxt_id", "Name the ccxt exchange id (e.g. binance, bybit).")
        return data


class AuditExportForm(forms.Form):
    format = forms.ChoiceField(choices=[("csv", "CSV"), ("jsonl", "JSON Lines")])
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    trader = forms.IntegerField(required=False, min_value=1)
    kind = forms.CharField(required=False, max_length=40)

    def clean(self):
        data = super().clean()
        if data.get("since") and data.get("until") and data["since"] >= data["until"]:
            raise forms.ValidationError("'since' must be before 'until'.")
        return data
