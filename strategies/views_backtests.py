"""Backtest pages under STRATEGY [BT-3], [BT-4]: run a backtest, follow its progress, read it.

``/strategy/backtests/`` lists the runs and takes the form (POST); the same form and the most
recent runs are also on the STRATEGY page (``backtest_tags.backtests_section``).
``/strategy/backtests/<id>/`` is the result: report metrics, breakdowns, walk-forward windows,
equity and drawdown charts, trades and the CSV link. Progress is polled from the JSON API by
``static/js/backtest.js``. Submitting goes through the same validation and service as the API;
the page never runs a backtest itself.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods
from rest_framework.exceptions import PermissionDenied as ApiPermissionDenied
from rest_framework.exceptions import ValidationError as ApiValidationError

from strategies import services_backtest as svc
from strategies.api_backtests import attach_summaries, submit
from strategies.models import BacktestRun, BacktestStatus, ProfileKey
from traders.services import can_operate

LIST_ROWS = 50
SECTION_ROWS = 10
TRADE_ROWS = 200

# (report key, label, format): pct = fraction shown as %, num = 2 decimals, int, days, hours, money.
REPORT_ROWS = (
    ("total_return", "total return", "pct"),
    ("annualized_return", "annualised return", "pct"),
    ("volatility", "volatility (annualised)", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"),
    ("max_drawdown", "max drawdown", "pct"),
    ("max_drawdown_duration_days", "max drawdown duration", "days"),
    ("longest_drawdown_days", "longest drawdown", "days"),
    ("trades", "trades", "int"),
    ("closed_trades", "closed trades", "int"),
    ("win_rate", "win rate", "pct"),
    ("profit_factor", "profit factor", "num"),
    ("expectancy", "expectancy per trade", "money"),
    ("avg_trade_return", "average trade return", "pct"),
    ("avg_holding_hours", "average holding time", "hours"),
    ("exposure", "exposure (time in market)", "pct"),
    ("avg_gross_exposure", "average gross exposure", "pct"),
    ("turnover", "turnover", "num"),
    ("annual_turnover", "annual turnover", "num"),
    ("trades_per_day", "trades per day", "num"),
    ("initial_equity", "initial equity", "money"),
    ("final_equity", "final equity", "money"),
    ("bars", "bars", "int"),
    ("period_days", "period", "days"),
)
FORMATS = {key: fmt for key, _, fmt in REPORT_ROWS}
WINDOW_COLUMNS = ("bars", "total_return", "annualized_return", "sharpe", "max_drawdown", "trades", "win_rate")
RESULT_KEYS_SHOWN = {"strategy", "params", "data", "bars", "trades", "closed_trades", "open_position", "final_equity",
                     "fees_paid", "report", "trade_list", "equity", "drawdown", "equity_points", "equity_source",
                     "walk_forward", "evidence"}


def fmt(value: Any, kind: str = "num") -> str:
    """A metric for display; undefined values (None, NaN) as an em dash."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value).lower()
    if not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "days":
        return f"{value:.2f} d"
    if kind == "hours":
        return f"{value:.2f} h"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.2f}" if isinstance(value, float) else f"{value:,}"


# -- the form -------------------------------------------------------------------------------------

FORM_FIELDS = ("strategy", "source", "sim_seed", "sim_markets", "sim_days", "profile", "latency_ms", "participation",
               "spread_bps", "start", "end", "fee", "cash", "fast", "slow", "wf_train_days", "wf_test_days",
               "wf_step_days", "wf_anchored")
DEFAULTS = {"strategy": "sma_cross", "source": "files", "fee": "0.0005", "cash": "10000000", "fast": "10",
            "slow": "30", "sim_seed": "7", "sim_markets": "30", "sim_days": "3", "profile": "STANDARD",
            "latency_ms": "0", "participation": "0.1", "spread_bps": "5"}


def form_data(post) -> dict[str, Any]:
    """The request from a posted form: only the fields that apply to the chosen strategy and
    source (the form shows them all), blanks left out so that defaults apply."""
    strategy = post.get("strategy", "")
    spec = svc.STRATEGIES.get(strategy, {})
    source = post.get("source") or "files"
    keys = ["strategy", "source", "start", "end", "fee", "cash", "wf_train_days", "wf_test_days", "wf_step_days"]
    if source == "sim":
        keys += ["sim_seed", "sim_markets", "sim_days"]
    if strategy == "sma_cross":
        keys += ["fast", "slow"]
    if "profile" in spec.get("options", ()):
        keys.append("profile")
    if "costs" in spec.get("options", ()):
        keys += ["latency_ms", "participation", "spread_bps"]
    data: dict[str, Any] = {k: post.get(k, "").strip() for k in keys if post.get(k, "").strip() != ""}
    if source == "files":
        data["data_files"] = [f for f in post.getlist("data_files") if f]
    if post.get("wf_anchored"):
        data["wf_anchored"] = True
    return data


def form_context(request: HttpRequest, *, values=None, errors=None, rows: int = SECTION_ROWS) -> dict[str, Any]:
    values = dict(DEFAULTS, **(values or {}))
    if hasattr(values.get("data_files"), "__iter__") and not isinstance(values.get("data_files"), str):
        values["data_files"] = list(values["data_files"])
    groups: OrderedDict[str, list[svc.DataFile]] = OrderedDict()
    for f in svc.data_catalogue():
        groups.setdefault(f.id.rsplit("/", 1)[0] if "/" in f.id else ".", []).append(f)
    runs = list(BacktestRun.objects.select_related("submitted_by").defer("result")[:rows])
    attach_summaries(runs)
    return {
        "can_operate": can_operate(request.user),
        "strategies": [(name, spec["label"], ",".join(spec["sources"]), ",".join(spec.get("options", ())),
                        ",".join(spec.get("timeframes", ()))) for name, spec in svc.STRATEGIES.items()],
        "profiles": ProfileKey.choices,
        "data_groups": list(groups.items()),
        "data_root_found": bool(groups),
        "values": values,
        "selected_files": set(values.get("data_files") or []),
        "errors": {k: [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in (errors or {}).items()},
        "runs": runs,
        "run_rows": [_run_row(r) for r in runs],
    }


def _run_row(run: BacktestRun) -> dict[str, Any]:
    opts = run.options or {}
    if opts.get("source") == "sim":
        sim = opts.get("sim") or {}
        data = f"sim seed {sim.get('seed')}, {sim.get('markets')} markets, {sim.get('days')} d"
    else:
        files = opts.get("data_files") or []
        data = files[0] if len(files) == 1 else f"{len(files)} files"
    report = getattr(run, "summary_report", None) or {}
    summary = {key: fmt(report.get(key), FORMATS.get(key, "num")) if report else ""
               for key in ("total_return", "sharpe", "max_drawdown", "trades")}
    return {"run": run, "data": data, "walk_forward": bool(opts.get("walk_forward")), "summary": summary,
            "api": reverse("api-backtest-detail", args=[run.pk]), "stalled": run.is_stalled()}


@require_http_methods(["GET", "POST"])
def backtest_list(request: HttpRequest) -> HttpResponse:
    values, errors, status = None, None, 200
    if request.method == "POST":
        data = form_data(request.POST)
        try:
            run = submit(request.user, data)
        except ApiPermissionDenied as exc:
            messages.error(request, str(exc.detail))
            status = 403
        except ApiValidationError as exc:
            errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
            values = {k: request.POST.get(k, "") for k in FORM_FIELDS}
            values["data_files"] = request.POST.getlist("data_files")
            messages.error(request, "The backtest was not started: check the fields marked below.")
            status = 400
        else:
            messages.success(request, f"Backtest #{run.pk} queued; a worker runs it.")
            return redirect(run)
    context = form_context(request, values=values, errors=errors, rows=LIST_ROWS)
    return render(request, "strategies/backtest_list.html", context, status=status)


# -- the result -----------------------------------------------------------------------------------

def _iso(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "—"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M")


def _breakdowns(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Tables for the result's other mappings: per-group breakdowns (``by_strategy``,
    ``by_regime``, ``regime_bars``, ``breakdowns``: ``{group: {metric: value}}`` or a list of
    rows) and counts (``exit_reasons``, ``guard_trips``, ``timing``: ``{name: value}``)."""
    found: list[tuple[str, Any]] = []
    for key, value in result.items():
        if key in RESULT_KEYS_SHOWN:
            continue
        if key == "breakdowns" and isinstance(value, dict):
            found += [(f"by_{k}", v) for k, v in value.items()]
        elif isinstance(value, (dict, list)):
            found.append((key, value))
    tables = []
    for key, table in found:
        title = ("by " + key[3:] if key.startswith("by_") else key).replace("_", " ")
        if isinstance(table, dict) and table and all(isinstance(v, dict) for v in table.values()):
            rows = [{"": name, **metrics} for name, metrics in table.items()]
        elif isinstance(table, list) and table and all(isinstance(v, dict) for v in table):
            rows = list(table)
        elif isinstance(table, dict) and table and not any(isinstance(v, (dict, list)) for v in table.values()):
            rows = [{"": name, "value": value} for name, value in table.items()]
        else:
            continue
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        tables.append({"title": title, "columns": columns,
                       "rows": [[fmt(row.get(c), FORMATS.get(c, "num")) for c in columns] for row in rows]})
    return tables


def _walk_forward(result: dict[str, Any]) -> dict[str, Any] | None:
    wf = result.get("walk_forward")
    if not isinstance(wf, dict):
        return None
    rows = []
    for w in wf.get("windows") or []:
        cells = []
        for kind in ("in_sample", "out_of_sample"):
            part = w.get(kind) or {}
            if "error" in part:
                cells.append({"error": part["error"]})
            else:
                cells.append({"values": [fmt(part.get(c), FORMATS.get(c, "num")) for c in WINDOW_COLUMNS]})
        rows.append({"index": w.get("index"), "train": f"{w.get('train_start')} → {w.get('train_end')}",
                     "test": f"{w.get('test_start')} → {w.get('test_end')}", "cells": cells})
    mean = wf.get("in_sample_mean") or {}
    return {
        "mode": "anchored" if wf.get("anchored") else "rolling",
        "train_days": (wf.get("train_seconds") or 0) / 86400, "test_days": (wf.get("test_seconds") or 0) / 86400,
        "step_days": (wf.get("step_seconds") or 0) / 86400,
        "windows": rows, "columns": WINDOW_COLUMNS, "tested": wf.get("tested_windows"),
        "in_sample_mean": [fmt(mean.get(c), FORMATS.get(c, "num")) for c in WINDOW_COLUMNS],
        "efficiency": fmt(wf.get("efficiency")),
        "full_period": {k: fmt(v, FORMATS.get(k, "num")) for k, v in (wf.get("full_period") or {}).items()
                        if k not in ("start_ts", "end_ts")},
    }


# (trade key, column label, format) in display order; a column shows when any trade has the key.
TRADE_DISPLAY = (
    ("window", "window", "int"), ("symbol", "market", "text"), ("strategy", "module", "text"),
    ("regime", "regime", "text"), ("entry_time", "entry (UTC)", "text"), ("exit_time", "exit (UTC)", "text"),
    ("entry_price", "entry price", "price"), ("exit_price", "exit price", "price"), ("qty", "qty", "qty"),
    ("fees", "fees", "money"), ("pnl", "PnL", "money"), ("return", "return", "pct"),
    ("exit_reason", "exit reason", "text"), ("is_open", "open", "flag"),
)


def _trade_columns(trades: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    present = set().union(*(t.keys() for t in trades[:TRADE_ROWS])) if trades else set()
    return [c for c in TRADE_DISPLAY if c[0] in present]


def _trade_rows(trades: list[dict[str, Any]], columns) -> list[list[tuple[str, bool]]]:
    rows = []
    for t in trades:
        cells = []
        for key, _, kind in columns:
            value = t.get(key)
            if kind == "text":
                text = "" if value is None else str(value)
                if key.endswith("_time"):
                    text = text.replace("T", " ").removesuffix("Z")
                cells.append((text, False))
            elif kind == "flag":
                cells.append(("open" if value else "", False))
            elif kind == "price":
                cells.append((_num(value, 8), True))
            elif kind == "qty":
                cells.append((_num(value, 8), True))
            else:
                cells.append((fmt(value, kind), True))
        rows.append(cells)
    return rows


def _num(value: Any, digits: int) -> str:
    """A price or quantity (a number, or a Decimal string as the pipeline gives them) with up to
    ``digits`` significant digits."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


CALIBRATION_COLUMNS = (("bucket", "final score", "str"), ("count", "market-bars", "int"),
                       ("n_60", "n (60 min)", "int"), ("mean_net_60", "mean net 60 min", "pct"),
                       ("hit_60", "hit rate 60 min", "pct"), ("n_240", "n (240 min)", "int"),
                       ("mean_net_240", "mean net 240 min", "pct"), ("hit_240", "hit rate 240 min", "pct"))


def _evidence(result: dict[str, Any]) -> dict[str, Any] | None:
    """The pipeline's evidence of signal quality (``strategies.engine.backtest.evidence``) as
    display rows: a summary and the two calibration tables."""
    ev = result.get("evidence")
    if not isinstance(ev, dict) or not ev:
        return None
    base = ev.get("random_baseline") or {}
    strat = ev.get("strategy") or {}
    excess = ev.get("excess") or {}
    bh = ev.get("buy_and_hold") or {}

    def band(prefix: str) -> str:
        return f"{fmt(base.get(prefix + '_mean'), 'pct')} [{fmt(base.get(prefix + '_p05'), 'pct')} … " \
               f"{fmt(base.get(prefix + '_p95'), 'pct')}]"

    pct = excess.get("percentile")
    summary = [
        ("entries", fmt(result.get("entries"), "int")),
        ("entries per day", fmt(result.get("entries_per_day"))),
        ("strategy return (its trades)", fmt(strat.get("total_return"), "pct")),
        (f"random entries, mean [5 % … 95 %] of {base.get('draws', '—')} draws", band("total_return")),
        ("excess over random (strategy − mean)", fmt(excess.get("total_return"), "pct")),
        ("percentile within random draws", "—" if pct is None else f"{pct:.1f}"),
        ("strategy mean trade return", fmt(strat.get("trade_return_mean"), "pct")),
        ("random mean trade return [5 % … 95 %]", band("trade_return")),
        ("buy-and-hold, equal weight", fmt(bh.get("return"), "pct")),
        ("buy-and-hold max drawdown", fmt(bh.get("max_drawdown"), "pct")),
    ]
    cal = ev.get("calibration") or {}
    tables = []
    for key, title in (("all", "every scored market-bar (LONG side)"), ("enter", "ENTER proposals")):
        rows = cal.get(key)
        if rows is None:
            continue
        tables.append({"title": title, "columns": [label for _, label, _ in CALIBRATION_COLUMNS],
                       "rows": [[fmt(r.get(k), kind) if kind != "str" else r.get(k) for k, _, kind in CALIBRATION_COLUMNS]
                                for r in rows]})
    return {"summary": summary, "tables": tables, "fee": ev.get("fee"), "horizon_bars": ev.get("horizon_bars"),
            "seed": base.get("seed")}


@require_GET
def backtest_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(BacktestRun.objects.select_related("submitted_by"), pk=pk)
    result = run.result or {}
    report = result.get("report") or {}
    run.summary_report = report
    trades = result.get("trade_list") or []
    data = result.get("data") or {}
    extras = {k: v for k, v in result.items() if k not in RESULT_KEYS_SHOWN and not isinstance(v, (dict, list))}
    context = {
        "run": run,
        "row": _run_row(run),
        "finished": run.finished,
        "done": run.status == BacktestStatus.DONE,
        "api_url": reverse("api-backtest-detail", args=[run.pk]),
        "csv_url": reverse("api-backtest-trades-csv", args=[run.pk]),
        "metrics": [(label, fmt(report.get(key), kind)) for key, label, kind in REPORT_ROWS if key in report],
        "period": (_iso(report.get("start_ts")), _iso(report.get("end_ts"))),
        "params": {k: v for k, v in (result.get("params") or {}).items() if not isinstance(v, dict)},
        "param_groups": {k: v for k, v in (result.get("params") or {}).items() if isinstance(v, dict)},
        "data": {k: (", ".join(map(str, v[:50])) + (" …" if len(v) > 50 else "") if isinstance(v, list) else v)
                 for k, v in data.items() if not isinstance(v, dict)},
        "quality": data.get("quality") or {},
        "extras": {k: fmt(v) for k, v in extras.items()},
        "breakdowns": _breakdowns(result),
        "evidence": _evidence(result),
        "walk_forward": _walk_forward(result),
        "trade_columns": [label for _, label, _ in _trade_columns(trades)],
        "trade_rows": _trade_rows(trades[:TRADE_ROWS], _trade_columns(trades)),
        "trade_count": len(trades),
        "chart": {"equity": result.get("equity") or [], "drawdown": result.get("drawdown") or [],
                  "source": result.get("equity_source", "bars"), "points": result.get("equity_points")},
        "options": run.options or {},
    }
    return render(request, "strategies/backtest_detail.html", context)
