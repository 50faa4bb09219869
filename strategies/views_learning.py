"""Learning actions under STRATEGY (``/strategy/models/``) and the section's context [UI-3].

Every action is a staff-only POST behind a confirm dialog, goes through ``strategies.learning``
(which audits and alerts it) and redirects back to the STRATEGY page with a message. The web
never tunes or trades: starting a tuning run records it and a worker runs it.
"""

from __future__ import annotations

import math
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from strategies import learning
from strategies.engine.learning import lifecycle as lc
from strategies.models import (
    DriftCheck,
    LifecycleError,
    ModelCandidate,
    ModelTransition,
    ModelVersion,
    TuningRun,
)
from traders.services import can_manage_live

MODEL_ROWS = 20
RUN_ROWS = 8
CANDIDATE_ROWS = 30
TRANSITION_ROWS = 15

#: (metric key, label, format) shown for every candidate and model version.
GATE_COLUMNS = (
    ("n", "n", "int"), ("spd", "SPD", "num"), ("e", "E", "pct"), ("sharpe", "Sharpe", "num"),
    ("q05", "Q05", "pct"), ("q01", "Q01", "pct"), ("mae_mean", "MAE mean", "pct"), ("mae_95", "MAE 95", "pct"),
    ("win_rate", "win", "pct"), ("dsr", "DSR", "num"), ("pbo", "PBO", "num"),
    # the backtest report's random-entry baseline on the same hold-out trades (reporting only)
    ("rb_excess_total", "excess vs random", "pct"), ("baseline_percentile", "random %ile", "num"),
)

#: status -> the actions a staff user may take, as (action, label, button class, confirm text).
ACTIONS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    lc.DRAFT: (("validate", "VALIDATE", "run", "Apply the gate decision to {name}?"),),
    lc.VALIDATED: (("deploy", "DEPLOY TO PAPER", "run", "Deploy {name} to AI MODE paper traders?"),
                   ("discard", "DISCARD", "danger", "Discard {name}? It cannot be deployed afterwards.")),
    lc.PAPER_DEPLOYED: (("promote", "MARK LIVE ELIGIBLE", "run", "Mark {name} live eligible (needs 24 h on paper)?"),
                        ("rollback", "ROLL BACK", "danger", "Roll back {name}? Paper traders return to the armed model or STANDARD.")),
    lc.LIVE_ELIGIBLE: (("arm", "ARM LIVE", "danger", "ARM {name} for LIVE AI MODE traders (real money)?"),
                       ("rollback", "ROLL BACK", "danger", "Roll back {name}?")),
    lc.LIVE_ARMED: (("rollback", "ROLL BACK", "danger", "Roll back the armed model {name}? Its baseline is re-armed, or STANDARD."),),
    lc.AUTO_ROLLBACK: (("deploy", "REDEPLOY TO PAPER", "run", "Redeploy {name} to paper (24 h after the last rollback)?"),),
    lc.MANUAL_ROLLBACK: (("deploy", "REDEPLOY TO PAPER", "run", "Redeploy {name} to paper (24 h after the last rollback)?"),),
}


def fmt(value: Any, kind: str) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "int":
        return f"{int(value)}"
    return f"{value:.3f}"


def gate_cells(metrics: dict | None) -> list[str]:
    metrics = metrics or {}
    return [fmt(metrics.get(key), kind) for key, _, kind in GATE_COLUMNS]


def section_context(request: HttpRequest) -> dict[str, Any]:
    """Everything the section shows, in a handful of queries."""
    from strategies.services import deployed_model

    staff = can_manage_live(request.user)
    models = list(ModelVersion.objects.select_related("baseline", "tuning_run").order_by("-id")[:MODEL_ROWS])
    ids = [m.pk for m in models]
    latest_check: dict[int, DriftCheck] = {}
    for check in DriftCheck.objects.filter(model_version_id__in=ids).order_by("model_version_id", "-window_end"):
        latest_check.setdefault(check.model_version_id, check)
    paper, live = deployed_model("PAPER"), deployed_model("LIVE")
    model_rows = [{
        "model": m, "gate": gate_cells(m.gate_metrics), "check": latest_check.get(m.pk),
        "actions": [{"action": a, "label": label, "css": css, "confirm": confirm.format(name=m.name)}
                    for a, label, css, confirm in ACTIONS.get(m.status, ())] if staff else [],
        "runs_for": [mode for mode, model in (("PAPER", paper), ("LIVE", live)) if model and model.pk == m.pk],
    } for m in models]
    runs = list(TuningRun.objects.select_related("created_by").order_by("-id")[:RUN_ROWS])
    candidates = list(ModelCandidate.objects.filter(tuning_run__in=runs).select_related("model_version")
                      .order_by("-tuning_run_id", "-objective")[:CANDIDATE_ROWS])
    return {
        "can_manage": staff,
        "gate_columns": [label for _, label, _ in GATE_COLUMNS],
        "model_rows": model_rows,
        "runs": [{"run": r, "api": reverse("api-learning-tuning-run-detail", args=[r.pk]),
                  "finished": r.status in (TuningRun.Status.DONE, TuningRun.Status.FAILED),
                  "trials": (r.summary or {}).get("trials", []),
                  "pbo": ((r.summary or {}).get("pbo") or {}).get("pbo")} for r in runs],
        "candidates": [{"c": c, "gate": gate_cells(c.metrics)} for c in candidates],
        "transitions": list(ModelTransition.objects.select_related("model_version")
                            .order_by("-created_at", "-id")[:TRANSITION_ROWS]),
        "bandit": learning.bandit_table(),
        "paper_model": paper, "live_model": live,
        "tuning_defaults": learning.TUNING_DEFAULTS,
        "timeframes": list(learning.SIM_TIMEFRAMES),
        "file_bars": list(learning.FILE_BARS),
        "tuning_files": _tuning_files(),
    }


def _tuning_files() -> list:
    """The candle files a tuning run may use (the backtest catalogue), for the real-data form."""
    from strategies.services_backtest import data_catalogue

    try:
        return data_catalogue()
    except OSError:
        return []


def _back() -> HttpResponse:
    return redirect(reverse("strategy") + "#learning")


def _staff_only(request: HttpRequest) -> HttpResponse | None:
    if not can_manage_live(request.user):
        return HttpResponseForbidden("Only staff may change model versions or start tuning runs.")
    return None


@login_required
@require_POST
def model_action(request: HttpRequest, pk: int) -> HttpResponse:
    """One lifecycle action on a model version (``action``: validate, deploy, promote, arm,
    rollback, discard)."""
    refused = _staff_only(request)
    if refused:
        return refused
    model = get_object_or_404(ModelVersion, pk=pk)
    action = request.POST.get("action", "")
    reason = (request.POST.get("reason") or "").strip()[:200]
    handlers = {
        "validate": lambda: learning.validate_model(model, actor=request.user),
        "deploy": lambda: learning.deploy_to_paper(model, actor=request.user, reason=reason),
        "promote": lambda: model.transition(lc.LIVE_ELIGIBLE, actor=request.user, reason=reason or "promoted by staff"),
        "arm": lambda: learning.arm_live(model, actor=request.user),
        "rollback": lambda: learning.rollback(model, actor=request.user, reason=reason or "rolled back by staff"),
        "discard": lambda: learning.discard(model, actor=request.user),
    }
    if action not in handlers:
        return HttpResponseBadRequest(f"unknown action {action[:40]!r}; expected one of {', '.join(handlers)}")
    try:
        handlers[action]()
    except LifecycleError as exc:
        messages.error(request, f"{model.name}: refused by {exc.rule}: {exc.detail}")
        return _back()
    except PermissionDenied as exc:
        return HttpResponseForbidden(str(exc))
    model.refresh_from_db()
    messages.success(request, f"{model.name} is now {model.status}.")
    return _back()


@login_required
@require_POST
def candidate_version(request: HttpRequest, pk: int) -> HttpResponse:
    """Turn a PASS candidate into a VALIDATED model version."""
    refused = _staff_only(request)
    if refused:
        return refused
    candidate = get_object_or_404(ModelCandidate, pk=pk)
    try:
        model = learning.candidate_to_model(candidate, actor=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return _back()
    messages.success(request, f"{model.name} created and VALIDATED.")
    return _back()


@login_required
@require_POST
def start_tuning(request: HttpRequest) -> HttpResponse:
    """Record a tuning run from the section's form; a worker on the slow queue runs it."""
    refused = _staff_only(request)
    if refused:
        return refused
    options: dict[str, Any] = {}
    errors: list[str] = []
    for key in ("sim_markets", "n_trials", "seed", "sim_seed"):
        raw = request.POST.get(key)
        if raw not in (None, ""):
            try:
                options[key] = int(raw)
            except ValueError:
                errors.append(f"{key}: not a whole number")
    for key in ("days", "holdout_fraction", "train_days", "test_days", "last_days"):
        raw = request.POST.get(key)
        if raw not in (None, ""):
            try:
                options[key] = float(raw)
            except ValueError:
                errors.append(f"{key}: not a number")
    for key in ("source", "timeframe", "bar"):
        if request.POST.get(key):
            options[key] = request.POST[key]
    files = request.POST.getlist("data_files")
    if files:
        options["data_files"] = files
    if not errors:
        try:
            run = learning.start_tuning(user=request.user, options=options)
        except ValidationError as exc:
            errors = [f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()]
        else:
            messages.success(request, f"Tuning run {run.pk} queued ({run.n_trials} trials, seed {run.seed}).")
            return _back()
    messages.error(request, "Tuning not started: " + "; ".join(errors))
    return _back()
