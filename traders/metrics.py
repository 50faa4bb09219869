"""Operational metrics [AL-2], per trader and overall, for the dashboard and Prometheus.

``collect()`` reads everything in a fixed number of queries (about ten, independent of the
number of traders, orders or trades): aggregates in the database, and row loads only for
small sets (open positions, the last 24 h of orders, the held markets' last six hours of
candles). ``dashboard_metrics()`` returns it as a JSON-safe dict; ``prometheus_text()``
renders the text exposition format for ``/metrics`` (``traders.views_metrics``).

Definitions (documented in docs/alerts-and-metrics.md, with the data each comes from):

* max_positions / remaining_slots: ``risk.engine.portfolio.max_positions`` for the latest
  regime of the trader's exchange and the trader's effective profile (what the tick uses).
* portfolio risk %: sum of ``max(direction * (avg_entry - stop), 0) * qty`` over open
  positions, over equity (the engine's open stop-loss risk).
* daily pnl %: equity against the last equity snapshot before 00:00 UTC (seed money if none).
* largest unrealised %: the open position with the largest absolute unrealised PnL, signed,
  as a percent of the trader's equity.
* avg depth ratio: entry order value / top-5 depth at submit. The depth comes from the
  sizing record stored on the order's Signal (``CAP_LIQUIDITY = liquidity_min_ratio * depth /
  entry``), because MarketSnapshot keeps only the latest book.
* slippage: filled-notional-weighted ``(avg fill - limit) / limit`` in basis points, positive
  = worse, over orders with a limit price. An entry's limit is the best ask when it was
  submitted, so this is slippage against the touch. Market orders (exits) store no reference
  price and are left out.
* failed order rate: (rejected + cancelled with an error that is not a policy cancel such as
  the order timeout) / all orders created in the last 24 h.
* fill latency: order created -> its first fill (wall clock), mean over the last 24 h.
* API latency: null. The sim exchange and PAPER fills make no venue call to time; LIVE
  routing does not record call timings yet.
* win rate, profit factor, average holding time: over Trade rows (each exit fill is a trade,
  so a scale-out counts on its own), per strategy (``Trade.strategy``) and overall.
* avg correlation: mean pairwise correlation of 5-minute log returns of the held markets over
  the last six hours (the correlation check's method); null with fewer than two positions or
  too little history.

Market-data quality [EX-5] (``_data_quality``, one more query): per source and market, counters
of rows the collectors rejected / repaired / flagged by kind, rows checked, and the newest good
1m bar with its age (docs/market-data.md).

Alarms (SPEC AL-2): ``RISK_BUDGET_LOW`` (remaining risk budget < risk per trade),
``CORRELATION_HIGH`` (avg correlation > 0.75), ``FAILED_ORDERS_HIGH`` (failed order rate > 2 %).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from django.db.models import (
    Case,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    When,
)

from execution.models import Candle, Fill, Order, Position, Trade
from regime.engine.types import RegimeLabel
from regime.models import MarketRegime
from risk.engine.correlation import correlation_matrix, log_returns
from risk.engine.portfolio import max_positions
from traders.models import EquitySnapshot, Trader

WINDOW_SECONDS = 24 * 3600
ALARM_FAILED_ORDER_RATE = 0.02
ALARM_AVG_CORR = 0.75
CORR_BARS = 360                  # 1-minute bars: six hours
CORR_STEP = 5                    # resampled to 5-minute closes, as the correlation check does
CORR_MIN_PERIODS = 30
POLICY_CANCEL_PREFIXES = ("timeout", "replace", "policy")
SIZING_CHECK = "SIZING"
LIQUIDITY_CAP = "CAP_LIQUIDITY"
API_LATENCY_NOTE = "not measured: the sim exchange and PAPER fills make no venue call; LIVE routing records no timings yet"

ALARMS = {
    "RISK_BUDGET_LOW": "remaining portfolio risk budget below the risk per trade",
    "CORRELATION_HIGH": f"average correlation of open positions above {ALARM_AVG_CORR}",
    "FAILED_ORDERS_HIGH": f"failed order rate above {ALARM_FAILED_ORDER_RATE:.0%} over 24 h",
}


@dataclass
class StrategyStats:
    trades: int = 0
    wins: int = 0
    gross_profit: float = 0.0
    gross_loss: float = 0.0        # a positive number
    holding_seconds: float = 0.0   # summed

    def add(self, other: StrategyStats) -> None:
        self.trades += other.trades
        self.wins += other.wins
        self.gross_profit += other.gross_profit
        self.gross_loss += other.gross_loss
        self.holding_seconds += other.holding_seconds

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None

    @property
    def profit_factor(self) -> float | None:
        """Gross profit / gross loss; None when there is no losing trade (undefined)."""
        return self.gross_profit / self.gross_loss if self.gross_loss > 0 else None

    @property
    def avg_holding_seconds(self) -> float | None:
        return self.holding_seconds / self.trades if self.trades else None

    def as_dict(self) -> dict:
        return {"trades": self.trades, "wins": self.wins, "win_rate": _r(self.win_rate),
                "profit_factor": _r(self.profit_factor), "avg_holding_seconds": _r(self.avg_holding_seconds)}


@dataclass
class OrderStats:
    total: int = 0
    failed: int = 0
    slip_num: float = 0.0
    slip_den: float = 0.0
    depth_ratios: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def add(self, other: OrderStats) -> None:
        self.total += other.total
        self.failed += other.failed
        self.slip_num += other.slip_num
        self.slip_den += other.slip_den
        self.depth_ratios += other.depth_ratios
        self.latencies += other.latencies

    @property
    def failed_rate(self) -> float | None:
        return self.failed / self.total if self.total else None

    @property
    def slippage_bps(self) -> float | None:
        return self.slip_num / self.slip_den * 10_000 if self.slip_den > 0 else None

    @property
    def avg_depth_ratio(self) -> float | None:
        return sum(self.depth_ratios) / len(self.depth_ratios) if self.depth_ratios else None

    @property
    def fill_latency(self) -> float | None:
        return sum(self.latencies) / len(self.latencies) if self.latencies else None


@dataclass
class TraderMetrics:
    trader_id: int
    name: str
    mode: str
    status: str
    exchange: str
    equity: float
    day_open_equity: float
    max_positions: int
    open_positions: int
    risk_per_trade: float          # fractions of equity
    max_portfolio_risk: float
    open_risk: float = 0.0         # quote currency
    largest_unrealised: float = 0.0
    largest_unrealised_symbol: str = ""
    avg_corr: float | None = None
    api_calls: int | None = None   # venue calls in the API error window (LIVE only; execution.callstats)
    api_errors: int | None = None
    orders: OrderStats = field(default_factory=OrderStats)
    strategies: dict[str, StrategyStats] = field(default_factory=dict)

    @property
    def remaining_slots(self) -> int:
        return max(self.max_positions - self.open_positions, 0)

    @property
    def portfolio_risk_pct(self) -> float | None:
        return self.open_risk / self.equity * 100 if self.equity > 0 else None

    @property
    def remaining_risk_budget_pct(self) -> float | None:
        risk = self.portfolio_risk_pct
        return max(self.max_portfolio_risk * 100 - risk, 0.0) if risk is not None else 0.0

    @property
    def api_error_rate(self) -> float | None:
        return self.api_errors / self.api_calls if self.api_calls else None

    @property
    def daily_pnl_pct(self) -> float | None:
        return (self.equity / self.day_open_equity - 1) * 100 if self.day_open_equity > 0 else None

    @property
    def largest_unrealised_pct(self) -> float | None:
        if not self.largest_unrealised_symbol or self.equity <= 0:
            return None
        return self.largest_unrealised / self.equity * 100

    @property
    def overall(self) -> StrategyStats:
        total = StrategyStats()
        for stats in self.strategies.values():
            total.add(stats)
        return total

    @property
    def alarms(self) -> list[str]:
        found = []
        if self.remaining_risk_budget_pct is not None and self.remaining_risk_budget_pct < self.risk_per_trade * 100:
            found.append("RISK_BUDGET_LOW")
        if self.avg_corr is not None and self.avg_corr > ALARM_AVG_CORR:
            found.append("CORRELATION_HIGH")
        if self.orders.failed_rate is not None and self.orders.failed_rate > ALARM_FAILED_ORDER_RATE:
            found.append("FAILED_ORDERS_HIGH")
        return found

    def as_dict(self) -> dict:
        overall = self.overall
        return {
            "id": self.trader_id, "name": self.name, "mode": self.mode, "status": self.status,
            "equity": _r(self.equity),
            "max_positions": self.max_positions, "open_positions_count": self.open_positions,
            "remaining_slots": self.remaining_slots,
            "portfolio_risk_pct": _r(self.portfolio_risk_pct),
            "max_portfolio_risk_pct": _r(self.max_portfolio_risk * 100),
            "risk_per_trade_pct": _r(self.risk_per_trade * 100),
            "remaining_risk_budget_pct": _r(self.remaining_risk_budget_pct),
            "daily_pnl_pct": _r(self.daily_pnl_pct),
            "largest_unrealised_pct": _r(self.largest_unrealised_pct),
            "largest_unrealised_symbol": self.largest_unrealised_symbol or None,
            "avg_depth_ratio": _r(self.orders.avg_depth_ratio),
            "slippage_bps": _r(self.orders.slippage_bps),
            "orders_24h": self.orders.total, "failed_orders_24h": self.orders.failed,
            "failed_order_rate": _r(self.orders.failed_rate),
            "fill_latency_seconds": _r(self.orders.fill_latency),
            "api_latency_seconds": None,
            "api_calls_window": self.api_calls, "api_errors_window": self.api_errors,
            "api_error_rate": _r(self.api_error_rate),
            "trades": overall.trades, "win_rate": _r(overall.win_rate), "profit_factor": _r(overall.profit_factor),
            "avg_holding_seconds": _r(overall.avg_holding_seconds),
            "win_rate_by_strategy": {k or "none": _r(v.win_rate) for k, v in sorted(self.strategies.items())},
            "avg_corr": _r(self.avg_corr),
            "alarms": self.alarms,
        }


@dataclass
class MetricsReport:
    generated_at: float
    traders: list[TraderMetrics]

    @property
    def strategies(self) -> dict[str, StrategyStats]:
        merged: dict[str, StrategyStats] = defaultdict(StrategyStats)
        for t in self.traders:
            for name, stats in t.strategies.items():
                merged[name].add(stats)
        return dict(sorted(merged.items()))

    @property
    def orders(self) -> OrderStats:
        total = OrderStats()
        for t in self.traders:
            total.add(t.orders)
        return total

    def overall(self) -> dict:
        equity = sum(t.equity for t in self.traders)
        day_open = sum(t.day_open_equity for t in self.traders)
        open_risk = sum(t.open_risk for t in self.traders)
        largest = max((t for t in self.traders if t.largest_unrealised_pct is not None),
                      key=lambda t: abs(t.largest_unrealised_pct), default=None)
        orders = self.orders
        trades = StrategyStats()
        for stats in self.strategies.values():
            trades.add(stats)
        alarm_counts = {code: sum(1 for t in self.traders if code in t.alarms) for code in ALARMS}
        return {
            "traders": len(self.traders),
            "max_positions": sum(t.max_positions for t in self.traders),
            "open_positions_count": sum(t.open_positions for t in self.traders),
            "remaining_slots": sum(t.remaining_slots for t in self.traders),
            "portfolio_risk_pct": _r(open_risk / equity * 100) if equity > 0 else None,
            "daily_pnl_pct": _r((equity / day_open - 1) * 100) if day_open > 0 else None,
            "largest_unrealised_pct": _r(largest.largest_unrealised_pct) if largest else None,
            "largest_unrealised": ({"trader": largest.name, "symbol": largest.largest_unrealised_symbol}
                                   if largest else None),
            "avg_depth_ratio": _r(orders.avg_depth_ratio),
            "slippage_bps": _r(orders.slippage_bps),
            "orders_24h": orders.total, "failed_orders_24h": orders.failed,
            "failed_order_rate": _r(orders.failed_rate),
            "fill_latency_seconds": _r(orders.fill_latency),
            "api_latency_seconds": None,
            "trades": trades.trades, "win_rate": _r(trades.win_rate), "profit_factor": _r(trades.profit_factor),
            "avg_holding_seconds": _r(trades.avg_holding_seconds),
            "alarms": alarm_counts,
        }


def _r(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


# -- collection --------------------------------------------------------------------------------

def collect(now: float | None = None, traders=None) -> MetricsReport:
    """Every metric for every active trader (or for the ``traders`` queryset: a non-staff user's
    own), in a fixed number of queries."""
    from strategies.services import effective_profile

    now = time.time() if now is None else now
    day_start = int(now) - int(now) % 86_400
    since = datetime.fromtimestamp(now - WINDOW_SECONDS, UTC)
    day_open = (EquitySnapshot.objects.filter(trader=OuterRef("pk"), ts__lt=day_start)
                .order_by("-ts").values("equity")[:1])
    traders = list((Trader.objects.active() if traders is None else traders).select_related("profile", "config_version")
                   .annotate(day_open_equity=Subquery(day_open)).order_by("id"))
    if not traders:
        return MetricsReport(now, [])
    ids = [t.pk for t in traders]

    regimes: dict[str, tuple[RegimeLabel | None, int | None]] = {}
    for exchange in sorted({t.exchange for t in traders}):
        row = MarketRegime.objects.filter(exchange=exchange).order_by("-bar_ts").values_list("label", "bar_ts").first()
        regimes[exchange] = (RegimeLabel(row[0]), row[1]) if row else (None, None)

    profiles: dict[tuple[int, int], object] = {}
    result: dict[int, TraderMetrics] = {}
    liquidity_ratio: dict[int, float] = {}
    for t in traders:
        key = (t.profile_id, t.config_version_id)
        if key not in profiles:
            profiles[key] = effective_profile(t.profile, params=t.config_version.params)
        profile = profiles[key]
        liquidity_ratio[t.pk] = profile.liquidity_min_ratio
        result[t.pk] = TraderMetrics(
            trader_id=t.pk, name=t.name, mode=t.mode, status=t.status, exchange=t.exchange,
            equity=float(t.equity), day_open_equity=float(t.day_open_equity if t.day_open_equity is not None
                                                          else t.seed_money),
            max_positions=max_positions(regimes[t.exchange][0], profile), open_positions=0,
            risk_per_trade=profile.risk_per_trade, max_portfolio_risk=profile.max_portfolio_risk,
        )

    held: dict[int, list[str]] = defaultdict(list)
    for trader_id, symbol, direction, qty, entry, stop, last in Position.objects.filter(
            trader_id__in=ids, status=Position.Status.OPEN, qty__gt=0).values_list(
            "trader_id", "symbol", "direction", "qty", "avg_entry", "stop_price", "last_price"):
        m = result[trader_id]
        m.open_positions += 1
        held[trader_id].append(symbol)
        if stop is not None:
            m.open_risk += max(float(direction * (entry - stop)), 0.0) * float(qty)
        unrealised = float((last - entry) * qty * direction) if last is not None else 0.0
        if not m.largest_unrealised_symbol or abs(unrealised) > abs(m.largest_unrealised):
            m.largest_unrealised, m.largest_unrealised_symbol = unrealised, symbol

    _order_stats(result, ids, since)
    _depth_and_latency(result, ids, since, liquidity_ratio)
    _trade_stats(result, ids)
    _correlations(result, held, regimes)
    _api_window(result, ids, now)
    return MetricsReport(now, [result[i] for i in ids])


def _api_window(result: dict[int, TraderMetrics], ids: list[int], now: float) -> None:
    """Venue calls and errors in each LIVE trader's API error window (``execution.callstats``,
    the guard's API_ERROR_RATE input; one query). None for traders that never called a venue."""
    from execution.callstats import STATE_KEY
    from execution.engine.callwindow import totals
    from risk.models import TraderSafetyState

    for trader_id, state in TraderSafetyState.objects.filter(trader_id__in=ids).values_list("trader_id", "state"):
        rows = (state or {}).get(STATE_KEY)
        if rows is not None:
            result[trader_id].api_calls, result[trader_id].api_errors = totals(rows, now)


def _order_stats(result: dict[int, TraderMetrics], ids: list[int], since: datetime) -> None:
    """Counts and the slippage sums per trader, aggregated in the database (one query)."""
    policy_cancel = Q()
    for prefix in POLICY_CANCEL_PREFIXES:
        policy_cancel |= Q(error__istartswith=prefix)
    failed = Q(status=Order.Status.REJECTED) | (Q(status=Order.Status.CANCELLED) & ~Q(error="") & ~policy_cancel)
    sign = Case(When(side="buy", then=Value(1)), default=Value(-1), output_field=IntegerField())
    priced = Q(price__isnull=False, price__gt=0, avg_price__isnull=False, filled_qty__gt=0)
    rows = (Order.objects.filter(trader_id__in=ids, created_at__gte=since).values("trader_id")
            .annotate(total=Count("id"), failed=Count("id", filter=failed),
                      slip_num=Sum(ExpressionWrapper((F("avg_price") - F("price")) * F("filled_qty") * sign,
                                                     output_field=FloatField()), filter=priced),
                      slip_den=Sum(ExpressionWrapper(F("price") * F("filled_qty"), output_field=FloatField()),
                                   filter=priced))
            .order_by())
    for row in rows:
        stats = result[row["trader_id"]].orders
        stats.total, stats.failed = row["total"], row["failed"]
        stats.slip_num, stats.slip_den = float(row["slip_num"] or 0), float(row["slip_den"] or 0)


def _depth_and_latency(result: dict[int, TraderMetrics], ids: list[int], since: datetime,
                       liquidity_ratio: dict[int, float]) -> None:
    """Entry depth ratios (from the sizing record) and first-fill latencies (one query)."""
    first_fill = Fill.objects.filter(order=OuterRef("pk")).order_by("id").values("created_at")[:1]
    rows = (Order.objects.filter(trader_id__in=ids, created_at__gte=since)
            .filter(Q(filled_qty__gt=0) | Q(purpose="entry", signal__isnull=False))
            .annotate(first_fill=Subquery(first_fill))
            .values_list("trader_id", "purpose", "qty", "price", "created_at", "first_fill", "signal__checks"))
    for trader_id, purpose, qty, price, created_at, filled_at, checks in rows:
        stats = result[trader_id].orders
        if filled_at is not None:
            stats.latencies.append(max((filled_at - created_at).total_seconds(), 0.0))
        if purpose == "entry" and qty and price:
            ratio = _depth_ratio(checks, float(qty) * float(price), liquidity_ratio[trader_id])
            if ratio is not None:
                stats.depth_ratios.append(ratio)


def _depth_ratio(checks, order_value: float, liquidity_min_ratio: float) -> float | None:
    """order value / top-5 depth, the depth recovered from the sizing cap
    ``CAP_LIQUIDITY = liquidity_min_ratio * depth / entry_price``."""
    for check in checks or []:
        if isinstance(check, dict) and check.get("code") == SIZING_CHECK and isinstance(check.get("detail"), dict):
            detail = check["detail"]
            cap = (detail.get("caps") or {}).get(LIQUIDITY_CAP)
            try:
                depth = float(cap) * float(detail["entry_price"]) / liquidity_min_ratio
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                return None
            return order_value / depth if depth > 0 else None
    return None


def _trade_stats(result: dict[int, TraderMetrics], ids: list[int]) -> None:
    """Per trader and strategy: trades, wins, gross profit and loss, holding time (one query)."""
    rows = (Trade.objects.filter(trader_id__in=ids).values("trader_id", "strategy")
            .annotate(n=Count("id"), wins=Count("id", filter=Q(pnl__gt=0)),
                      profit=Sum("pnl", filter=Q(pnl__gt=0)), loss=Sum("pnl", filter=Q(pnl__lt=0)),
                      held=Sum(F("exit_ts") - F("entry_ts")))
            .order_by())
    for row in rows:
        result[row["trader_id"]].strategies[row["strategy"]] = StrategyStats(
            trades=row["n"], wins=row["wins"], gross_profit=float(row["profit"] or 0),
            gross_loss=-float(row["loss"] or 0), holding_seconds=float(row["held"] or 0))


def _correlations(result: dict[int, TraderMetrics], held: dict[int, list[str]],
                  regimes: dict[str, tuple[RegimeLabel | None, int | None]]) -> None:
    """Average pairwise correlation per trader holding two or more markets (one query per
    exchange, only the held markets' last ``CORR_BARS`` one-minute closes)."""
    by_exchange: dict[str, set[str]] = defaultdict(set)
    for trader_id, symbols in held.items():
        if len(symbols) >= 2:
            by_exchange[result[trader_id].exchange].update(symbols)
    for exchange, symbols in by_exchange.items():
        last_ts = regimes.get(exchange, (None, None))[1]
        if last_ts is None:
            continue
        first_ts = last_ts - (CORR_BARS - 1) * 60
        index = {s: i for i, s in enumerate(sorted(symbols))}
        closes = np.full((len(index), CORR_BARS), np.nan)
        for symbol, ts, close in Candle.objects.filter(
                exchange=exchange, timeframe="1m", symbol__in=list(index), ts__gte=first_ts, ts__lte=last_ts,
        ).values_list("symbol", "ts", "close"):
            closes[index[symbol], (ts - first_ts) // 60] = float(close)
        sampled = closes[:, CORR_STEP - 1::CORR_STEP]          # the close of each 5-minute bucket
        corr = correlation_matrix(log_returns(sampled), CORR_MIN_PERIODS)
        for trader_id, mine in held.items():
            if len(mine) < 2 or result[trader_id].exchange != exchange:
                continue
            rows = [index[s] for s in mine]
            sub = corr[np.ix_(rows, rows)]
            upper = sub[np.triu_indices(len(rows), k=1)]
            upper = upper[np.isfinite(upper)]
            result[trader_id].avg_corr = float(upper.mean()) if upper.size else None


# -- outputs -----------------------------------------------------------------------------------

def dashboard_metrics(now: float | None = None, traders=None) -> dict:
    """Everything the dashboard shows, JSON-safe (floats rounded, None where undefined);
    ``traders``: only these (a non-staff user's own, traders.permissions)."""
    from traders.alerts import channel_status

    report = collect(now, traders)
    alerts = channel_status()
    return {
        "generated_at": datetime.fromtimestamp(report.generated_at, UTC).isoformat(),
        "overall": report.overall(),
        "traders": [t.as_dict() for t in report.traders],
        "strategies": {k or "none": v.as_dict() for k, v in report.strategies.items()},
        "alarms": [{"trader_id": t.trader_id, "trader": t.name, "code": code, "detail": ALARMS[code]}
                   for t in report.traders for code in t.alarms],
        "alerts": {"pending": alerts["pending"], "sent_24h": alerts["sent_24h"], "failed_24h": alerts["failed_24h"]},
        "notes": {"api_latency_seconds": API_LATENCY_NOTE},
    }


def escape_label(value: str) -> str:
    """Label value escaping of the text exposition format: backslash, double quote, newline."""
    return str(value).replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def escape_help(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class Exposition:
    """Metric families in registration order; each gets one HELP and one TYPE line."""

    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[tuple[dict, float]]]] = {}

    def add(self, name: str, help_text: str, value: float | int | None, labels: dict | None = None,
            kind: str = "gauge") -> None:
        family = self.families.setdefault(name, (kind, help_text, []))
        if value is not None:
            family[2].append((labels or {}, value))

    def render(self) -> str:
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines.append(f"# HELP {name} {escape_help(help_text)}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                label_text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{label_text}}} {format_value(value)}" if label_text
                             else f"{name} {format_value(value)}")
        return "\n".join(lines) + "\n"


def prometheus_text(report: MetricsReport | None = None, alerts: dict | None = None) -> str:
    """The text exposition format (version 0.0.4). Undefined values are left out, not NaN."""
    from traders.alerts import channel_status

    report = report or collect()
    alerts = alerts if alerts is not None else channel_status()
    out = Exposition()
    per_trader = [
        ("quantweb_trader_equity", "Trader equity at its last tick (quote currency).", lambda t: t.equity),
        ("quantweb_trader_max_positions", "Max concurrent positions (regime table, profile cap, 10).",
         lambda t: t.max_positions),
        ("quantweb_trader_open_positions", "Open positions with a filled quantity.", lambda t: t.open_positions),
        ("quantweb_trader_remaining_slots", "max_positions - open positions, floored at 0.", lambda t: t.remaining_slots),
        ("quantweb_trader_portfolio_risk_percent", "Open stop-loss risk as a percent of equity.",
         lambda t: t.portfolio_risk_pct),
        ("quantweb_trader_risk_budget_remaining_percent", "Max portfolio risk minus current portfolio risk (percent).",
         lambda t: t.remaining_risk_budget_pct),
        ("quantweb_trader_risk_per_trade_percent", "Profile risk per trade (percent of equity).",
         lambda t: t.risk_per_trade * 100),
        ("quantweb_trader_daily_pnl_percent", "Equity change since 00:00 UTC (percent).", lambda t: t.daily_pnl_pct),
        ("quantweb_trader_largest_unrealised_percent",
         "Largest absolute unrealised PnL of one open position, signed, percent of equity.",
         lambda t: t.largest_unrealised_pct),
        ("quantweb_trader_depth_ratio_avg", "Mean entry order value / top-5 book depth at submit, 24 h.",
         lambda t: t.orders.avg_depth_ratio),
        ("quantweb_trader_slippage_bps", "Notional-weighted fill slippage against the limit (touch) price, 24 h.",
         lambda t: t.orders.slippage_bps),
        ("quantweb_trader_orders_24h", "Orders created in the last 24 h.", lambda t: t.orders.total),
        ("quantweb_trader_failed_orders_24h", "Rejected or failed-cancelled orders in the last 24 h.",
         lambda t: t.orders.failed),
        ("quantweb_trader_failed_order_ratio", "Failed orders / all orders, 24 h.", lambda t: t.orders.failed_rate),
        ("quantweb_trader_fill_latency_seconds", "Mean order-created to first-fill time, 24 h.",
         lambda t: t.orders.fill_latency),
        ("quantweb_trader_api_latency_seconds", "Venue API latency; absent: " + API_LATENCY_NOTE, lambda t: None),
        ("quantweb_trader_api_calls_window", "Venue calls in the API error window (15 min; LIVE traders).",
         lambda t: t.api_calls),
        ("quantweb_trader_api_errors_window", "Failed venue calls in the API error window (15 min; LIVE traders).",
         lambda t: t.api_errors),
        ("quantweb_trader_trades", "Trades (exit fills) since the trader was created.", lambda t: t.overall.trades),
        ("quantweb_trader_profit_factor", "Gross profit / gross loss; absent without a losing trade.",
         lambda t: t.overall.profit_factor),
        ("quantweb_trader_holding_seconds_avg", "Mean holding time of a trade.",
         lambda t: t.overall.avg_holding_seconds),
        ("quantweb_trader_correlation_avg", "Mean pairwise 5-minute return correlation of the open positions.",
         lambda t: t.avg_corr),
    ]
    for name, help_text, getter in per_trader:
        out.add(name, help_text, None)
        for t in report.traders:
            out.add(name, help_text, getter(t), _trader_labels(t))
    out.add("quantweb_trader_win_ratio", "Winning trades / trades, per strategy.", None)
    for t in report.traders:
        for strategy, stats in sorted(t.strategies.items()):
            out.add("quantweb_trader_win_ratio", "", stats.win_rate, {**_trader_labels(t), "strategy": strategy or "none"})
    out.add("quantweb_trader_alarm", "1 when the alarm is raised: " + "; ".join(f"{k}: {v}" for k, v in ALARMS.items()),
            None)
    for t in report.traders:
        raised = t.alarms
        for code in ALARMS:
            out.add("quantweb_trader_alarm", "", int(code in raised), {**_trader_labels(t), "alarm": code})

    overall = report.overall()
    totals = [
        ("quantweb_traders", "Active traders.", "traders"),
        ("quantweb_max_positions", "Sum of max_positions over traders.", "max_positions"),
        ("quantweb_open_positions", "Open positions over all traders.", "open_positions_count"),
        ("quantweb_remaining_slots", "Sum of remaining slots over traders.", "remaining_slots"),
        ("quantweb_portfolio_risk_percent", "Open stop-loss risk / total equity (percent).", "portfolio_risk_pct"),
        ("quantweb_daily_pnl_percent", "Total equity change since 00:00 UTC (percent).", "daily_pnl_pct"),
        ("quantweb_largest_unrealised_percent", "The largest trader-level largest unrealised percent.",
         "largest_unrealised_pct"),
        ("quantweb_depth_ratio_avg", "Mean entry order value / top-5 depth, 24 h.", "avg_depth_ratio"),
        ("quantweb_slippage_bps", "Notional-weighted slippage against the limit price, 24 h.", "slippage_bps"),
        ("quantweb_orders_24h", "Orders created in the last 24 h.", "orders_24h"),
        ("quantweb_failed_orders_24h", "Failed orders in the last 24 h.", "failed_orders_24h"),
        ("quantweb_failed_order_ratio", "Failed orders / all orders, 24 h.", "failed_order_rate"),
        ("quantweb_fill_latency_seconds", "Mean order-created to first-fill time, 24 h.", "fill_latency_seconds"),
        ("quantweb_trades", "Trades over all traders.", "trades"),
        ("quantweb_win_ratio", "Winning trades / trades over all traders.", "win_rate"),
        ("quantweb_profit_factor", "Gross profit / gross loss over all traders.", "profit_factor"),
        ("quantweb_holding_seconds_avg", "Mean holding time of a trade over all traders.", "avg_holding_seconds"),
    ]
    for name, help_text, key in totals:
        out.add(name, help_text, overall[key])
    for name, help_text, getter in [
        ("quantweb_strategy_trades", "Trades per strategy (module that led the entry).", lambda s: s.trades),
        ("quantweb_strategy_win_ratio", "Winning trades / trades per strategy.", lambda s: s.win_rate),
        ("quantweb_strategy_profit_factor", "Gross profit / gross loss per strategy.", lambda s: s.profit_factor),
        ("quantweb_strategy_holding_seconds_avg", "Mean holding time per strategy.", lambda s: s.avg_holding_seconds),
    ]:
        out.add(name, help_text, None)
        for strategy, stats in report.strategies.items():
            out.add(name, help_text, getter(stats), {"strategy": strategy or "none"})
    out.add("quantweb_alarm_traders", "Traders with the alarm raised.", None)
    for code, count in overall["alarms"].items():
        out.add("quantweb_alarm_traders", "", count, {"alarm": code})
    out.add("quantweb_alerts_pending", "Alerts waiting in the outbox.", alerts["pending"])
    out.add("quantweb_alerts_sent_24h", "Alerts delivered in the last 24 h.", alerts["sent_24h"])
    out.add("quantweb_alerts_failed_24h", "Alerts given up in the last 24 h.", alerts["failed_24h"])
    oldest = alerts.get("oldest_pending")
    out.add("quantweb_alerts_oldest_pending_seconds", "Age of the oldest undelivered alert; absent when none waits.",
            max(report.generated_at - oldest.timestamp(), 0.0) if oldest is not None else None)
    _data_quality(out, report.generated_at)
    from traders import runbook

    runbook.add_metrics(out)   # self-test result, per-exchange back-off [AL-3]
    out.add("quantweb_metrics_generated_timestamp_seconds", "When these metrics were computed (epoch seconds).",
            report.generated_at)
    return out.render()


def _data_quality(out: Exposition, now: float) -> None:
    """Market-data quality [EX-5] per source and market (one query): counters of rejected,
    repaired and flagged rows by kind, rows checked, and the newest good bar with its age."""
    from execution.engine.validation import QUALITY_PAIRS
    from execution.models import DataQuality

    rows = list(DataQuality.objects.order_by("exchange", "symbol").values_list(
        "exchange", "symbol", "counts", "rows_checked", "last_good_ts"))
    helps = {
        "rejected": "Market-data rows rejected (never stored) by kind: ohlc, duplicate, off_grid, outlier "
                    "(reverting spike), stale, book.",
        "repaired": "Market-data rows repaired before storing by kind: ohlc (high/low outside the body), "
                    "out_of_order, book (bad or unsorted levels, crossed ticker quotes).",
        "flagged": "Market-data rows kept but counted by kind: gap (missing 1m bars; normal on Upbit when "
                   "nothing traded), outlier (large real move).",
    }
    for action in ("rejected", "repaired", "flagged"):
        name = f"quantweb_market_data_{action}_total"
        out.add(name, helps[action], None, kind="counter")
        for exchange, symbol, counts, _checked, _ts in rows:
            for kind, act in QUALITY_PAIRS:
                if act == action:
                    out.add(name, "", int((counts or {}).get(kind, {}).get(action, 0)),
                            {"exchange": exchange, "market": symbol, "kind": kind}, kind="counter")
    out.add("quantweb_market_data_rows_checked_total", "Candles, books and tickers validated per market.", None,
            kind="counter")
    for exchange, symbol, _counts, checked, _ts in rows:
        out.add("quantweb_market_data_rows_checked_total", "", int(checked), {"exchange": exchange, "market": symbol},
                kind="counter")
    out.add("quantweb_market_data_last_good_timestamp_seconds",
            "Bar-open time of the newest 1m candle that passed validation (epoch seconds).", None)
    out.add("quantweb_market_data_age_seconds",
            "Seconds since the close of the newest good 1m candle (a quiet Upbit market ages without a problem).",
            None)
    for exchange, symbol, _counts, _checked, ts in rows:
        if ts is not None:
            labels = {"exchange": exchange, "market": symbol}
            out.add("quantweb_market_data_last_good_timestamp_seconds", "", int(ts), labels)
            out.add("quantweb_market_data_age_seconds", "", max(0.0, now - (ts + 60)), labels)


def _trader_labels(t: TraderMetrics) -> dict[str, str]:
    return {"trader_id": str(t.trader_id), "trader": t.name, "mode": t.mode}
