from django.contrib import admin

from execution.models import (
    Candle,
    DataQuality,
    ExecutionFailure,
    Fill,
    MarketBlacklist,
    Order,
    Position,
    SimAccount,
    SimMarketState,
    Trade,
)
from traders.admin import ReadOnlyAdmin


@admin.register(Candle)
class CandleAdmin(ReadOnlyAdmin):
    list_display = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
    list_filter = ["exchange", "timeframe"]
    search_fields = ["symbol"]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["client_order_id", "trader", "mode", "symbol", "side", "type", "qty", "price", "status", "filled_qty", "avg_price", "fee"]
    list_filter = ["status", "mode", "side", "type"]
    search_fields = ["client_order_id", "exchange_order_id", "symbol", "trader__name"]


@admin.register(Fill)
class FillAdmin(ReadOnlyAdmin):
    list_display = ["trade_id", "trader", "symbol", "side", "price", "qty", "fee", "liquidity", "ts"]
    list_filter = ["side", "liquidity"]
    search_fields = ["symbol", "trade_id", "trader__name"]


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = ["trader", "symbol", "status", "qty", "avg_entry", "stop_price", "last_price", "realised_pnl",
                    "model_version", "opened_ts"]
    list_filter = ["status", "trader"]
    search_fields = ["symbol"]


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ["trader", "symbol", "qty", "entry_price", "exit_price", "pnl", "fees", "exit_reason", "mode",
                    "model_version"]
    list_filter = ["mode", "exit_reason", "trader"]
    search_fields = ["symbol"]


@admin.register(SimMarketState)
class SimMarketStateAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_bar_ts", "updated_at"]
    exclude = ["state"]


@admin.register(ExecutionFailure)
class ExecutionFailureAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "trader", "mode", "symbol", "code", "detail"]
    list_filter = ["code", "mode"]
    search_fields = ["symbol", "trader__name"]


@admin.register(MarketBlacklist)
class MarketBlacklistAdmin(ReadOnlyAdmin):
    list_display = ["trader", "symbol", "until", "reason", "updated_at"]
    search_fields = ["symbol", "trader__name"]


@admin.register(SimAccount)
class SimAccountAdmin(ReadOnlyAdmin):
    list_display = ["trader", "last_bar_ts", "updated_at"]
    exclude = ["state"]   # the simulated venue's internal book: large and not for reading here


@admin.register(DataQuality)
class DataQualityAdmin(ReadOnlyAdmin):
    list_display = ["exchange", "symbol", "rows_checked", "rows_rejected", "rows_repaired", "rows_flagged", "last_good_ts", "last_problem"]
    list_filter = ["exchange"]
    search_fields = ["symbol"]
