from django.contrib import admin

from regime.models import MarketRegime
from traders.admin import ReadOnlyAdmin


@admin.register(MarketRegime)
class MarketRegimeAdmin(ReadOnlyAdmin):
    list_display = ["bar_ts", "exchange", "label", "regime_score", "confidence", "true_label"]
    list_filter = ["exchange", "label"]
