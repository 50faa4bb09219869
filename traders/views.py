"""Server-rendered pages: DASHBOARD, TRADERS, STRATEGY, CONFIG [UI-1..UI-4].

Views read, and record intents; they never talk to an exchange [RT-1]. Every page needs login
(LoginRequiredMiddleware). Bad input re-renders with a message (4xx), never a 500.
"""

from __future__ import annotations

import math
from collections import defaultdict

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import ExpressionWrapper, F, FloatField, Q
from django.http import HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from execution.models import Order, Position, Trade
from regime.models import MarketRegime
from risk.models import KillSwitch
from strategies.models import ConfigVersion, Signal, StrategyProfile
from traders import audit, permissions, services
from traders.auth import ThrottledAuthenticationForm
from traders.forms import ActionForm, AuditExportForm, CredentialForm, ModeForm, TraderForm
from traders.forms_guard import GuardResetForm
from traders.models import Credential, EquitySnapshot, Event, IntentKind, Trader, TraderMode

CHART_POINTS = 720   # minutes of history per trader on the dashboard (12 h of 1-minute ticks)
CHART_MAX_POINTS = 5000    # first render: at most about this many points over all traders, then live
LOG_ROWS = 100
DETAIL_ROWS = 50
EVENT_FIELDS = ("id", "trader_id", "ts", "level", "kind", "message")
METRICS_REFRESH_SECONDS = 15   # the dashboard's key metrics refresh at least this often (and after ticks)


def refused(request, message: str) -> HttpResponse:
    """403 with the reason, for an action the user's role does not allow [issue 7 #7]. The
    pages do not offer such actions, so this answers a stale page or a hand-made request."""
    return render(request, "traders/refused.html", {"message": message}, status=403)


@method_decorator(login_not_required, name="dispatch")
class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True


def _equity_series(trader_ids: list[int], points: int = CHART_POINTS) -> dict[int, list[list]]:
    """{trader_id: [[ts, return_pct], ...]} over the last ``points`` minutes, in one query.

    Every minute while that stays under CHART_MAX_POINTS over all traders; with more traders
    one point every ``step`` minutes plus the newest ``step`` in full, so the first render does
    not grow with the number of traders (the page then adds every tick live). Returns are
    computed by the database as floats (no Decimal per row)."""
    if not trader_ids:
        return {}
    step = 60 * max(1, math.ceil(len(trader_ids) * points / CHART_MAX_POINTS))
    latest = EquitySnapshot.objects.filter(trader_id__in=trader_ids).order_by("-ts").values_list("ts", flat=True).first()
    if latest is None:
        return {}
    since = latest - points * 60
    series: dict[int, list[list]] = defaultdict(list)
    rows = (EquitySnapshot.objects.filter(trader_id__in=trader_ids, ts__gte=since)
            .annotate(phase=F("ts") % step,
                      ret=ExpressionWrapper((F("equity") - F("seed_money")) * 100.0 / F("seed_money"),
                                            output_field=FloatField()))
            .filter(Q(phase=0) | Q(ts__gt=latest - step))
            .order_by("ts").values_list("trader_id", "ts", "ret"))
    for trader_id, ts, ret in rows:
        series[trader_id].append([ts, round(ret, 4)])
    return dict(series)


def _last_ids() -> dict[str, int]:
    return {
        "event": Event.objects.order_by("-id").values_list("id", flat=True).first() or 0,
        "equity": EquitySnapshot.objects.order_by("-id").values_list("id", flat=True).first() or 0,
    }


def _traders(request, qs=None):
    """The traders the user may see: staff every one, others their own [issue 21 #4]."""
    return permissions.traders_for(request.user, Trader.objects.all() if qs is None else qs)


@require_GET
def dashboard(request):
    traders = list(_traders(request, Trader.objects.active()).only("id", "name", "mode", "status", "status_reason"))
    counts = {"total": len(traders), "paper": sum(t.mode == TraderMode.PAPER for t in traders),
              "live": sum(t.mode == TraderMode.LIVE for t in traders)}
    ids = _last_ids()
    events = list(permissions.scope_events(Event.objects.select_related("trader"), request.user)
                  .only(*EVENT_FIELDS, "trader__name").order_by("-id")[:LOG_ROWS])
    chart = {
        "traders": [{"id": t.id, "name": t.name} for t in traders],
        "series": _equity_series([t.id for t in traders]),
    }
    from traders.metrics import dashboard_metrics

    return render(request, "traders/dashboard.html", {
        "metrics": dashboard_metrics(traders=_traders(request, Trader.objects.active())),
        "regime": MarketRegime.objects.order_by("-bar_ts").first(),
        "counts": counts,
        "traders": traders,
        "events": events,
        "chart": chart,
        "last_ids": ids,
        "kill_switch": KillSwitch.objects.filter(pk=1).first(),
        "can_manage_live": services.can_manage_live(request.user),
        "metrics_refresh_seconds": METRICS_REFRESH_SECONDS,
    })


@require_http_methods(["GET", "POST"])
def trader_list(request):
    if request.method == "POST" and not services.can_operate(request.user):
        return refused(request, "You may view traders but not create them (operators and staff only).")
    form = TraderForm(request.POST or None, user=request.user)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                trader = services.create_trader(
                    user=request.user, name=form.cleaned_data["name"], profile=form.cleaned_data["profile"],
                    seed_money=form.cleaned_data["seed_money"], credential=form.cleaned_data["credential"],
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            except PermissionDenied as exc:
                return refused(request, str(exc))
            else:
                messages.success(request, f"Trader {trader.name} created (PAPER, stopped).")
                return redirect("traders")
        status = 400
    traders = _traders(request, Trader.objects.active()).select_related("profile", "config_version", "credential")
    return render(request, "traders/traders.html", {
        "traders": traders,
        "form": form,
        "open_add": request.method == "POST",
        "modes": TraderMode.choices,
        "can_operate": services.can_operate(request.user),
        "can_manage_live": services.can_manage_live(request.user),
        "last_ids": _last_ids(),
    }, status=status)


def _intent_response(request, trader, kind, payload=None) -> HttpResponse:
    """Record the intent; back to the page with a message, or 403 when the role does not allow it."""
    try:
        services.request_intent(user=request.user, kind=kind, trader=trader, payload=payload or {})
    except PermissionDenied as exc:
        return refused(request, str(exc))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(request.POST.get("next") or "traders")
    messages.success(request, f"{IntentKind(kind).label}: requested; the worker applies it within seconds.")
    return redirect(request.POST.get("next") or "traders")


def _bad_next(request) -> HttpResponse | None:
    """A 400 when ``next`` is not a path on this site (no open redirect); None when fine."""
    nxt = request.POST.get("next", "")
    if nxt and not (nxt.startswith("/") and url_has_allowed_host_and_scheme(
            nxt, allowed_hosts={request.get_host()}, require_https=request.is_secure())):
        return HttpResponseBadRequest("bad redirect target")
    return None


@require_POST
def trader_action(request, pk: int):
    trader = get_object_or_404(_traders(request, Trader.objects.active()), pk=pk)
    form = ActionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("unknown action")
    return _bad_next(request) or _intent_response(request, trader, form.cleaned_data["action"])


@require_POST
def trader_mode(request, pk: int):
    trader = get_object_or_404(_traders(request, Trader.objects.active()), pk=pk)
    form = ModeForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("run mode must be PAPER or LIVE")
    return _bad_next(request) or _intent_response(request, trader, IntentKind.SET_MODE,
                                                  {"mode": form.cleaned_data["mode"]})


@require_POST
def kill_switch(request):
    action = request.POST.get("action")
    kinds = {"engage": IntentKind.KILL_ALL, "release": IntentKind.RELEASE_KILL, "emergency": IntentKind.EMERGENCY_STOP}
    if action not in kinds:
        return HttpResponseBadRequest("unknown kill-switch action")
    return _bad_next(request) or _intent_response(request, None, kinds[action],
                                                  {"reason": request.POST.get("reason", "")[:200]})


def _render_detail(request, trader: Trader, *, status: int = 200, reset_form: GuardResetForm | None = None):
    snaps = list(EquitySnapshot.objects.filter(trader=trader).order_by("-ts").values_list("ts", "equity")[:2000])[::-1]
    curve, peak, drawdown = [], None, []
    for ts, equity in snaps:
        value = float(equity)
        peak = value if peak is None else max(peak, value)
        curve.append([ts, value])
        drawdown.append([ts, round((value / peak - 1) * 100, 4) if peak else 0.0])
    guard = services.guard_state(trader)
    return render(request, "traders/trader_detail.html", {
        "trader": trader,
        "guard": guard,
        "resettable": [t for t in guard["trips"] if t["resettable"]],
        "reset_form": reset_form or GuardResetForm(),
        "positions": Position.objects.filter(trader=trader, status=Position.Status.OPEN).order_by("symbol"),
        "orders": Order.objects.filter(trader=trader).order_by("-id")[:DETAIL_ROWS],
        "trades": Trade.objects.filter(trader=trader).order_by("-id")[:DETAIL_ROWS],
        "signals": Signal.objects.filter(trader=trader).order_by("-id")[:DETAIL_ROWS],
        "events": Event.objects.filter(trader=trader).only(*EVENT_FIELDS).order_by("-id")[:LOG_ROWS],
        "chart": {"equity": curve, "drawdown": drawdown},
        "last_ids": _last_ids(),
        "modes": TraderMode.choices,
        "can_operate": services.can_operate(request.user),
        "can_manage_live": services.can_manage_live(request.user),
    }, status=status)


def _detail_queryset(request):
    return _traders(request).select_related("profile", "config_version", "credential", "safety")


@require_GET
def trader_detail(request, pk: int):
    return _render_detail(request, get_object_or_404(_detail_queryset(request), pk=pk))


@require_POST
def trader_reset_guard(request, pk: int):
    """Staff clear a guard trip that needs a manual reset, with a reason [RK-4]."""
    trader = get_object_or_404(_detail_queryset(request), pk=pk)
    if not services.can_manage_live(request.user):
        return refused(request, "Only staff may reset a guard trip.")
    form = GuardResetForm(request.POST)
    if form.is_valid():
        try:
            codes = services.reset_guard(user=request.user, trader=trader, reason=form.cleaned_data["reason"],
                                         codes=[form.cleaned_data["code"]] if form.cleaned_data["code"] else None)
        except PermissionDenied as exc:
            return refused(request, str(exc))
        except ValidationError as exc:
            for field, errors in (exc.message_dict.items() if hasattr(exc, "error_dict") else [(None, exc.messages)]):
                form.add_error(field if field in form.fields else None, errors)
        else:
            messages.success(request, f"Guard reset: {', '.join(codes)}. The next tick evaluates the guard again.")
            return redirect("trader-detail", pk=trader.pk)
    messages.error(request, "Guard not reset: " + "; ".join(
        f"{'' if k == '__all__' else k + ': '}{' '.join(v)}" for k, v in form.errors.items()))
    return _render_detail(request, _detail_queryset(request).get(pk=trader.pk), status=400, reset_form=form)


@require_http_methods(["GET", "POST"])
def strategy(request):
    from strategies import services as strategy_services

    profiles = list(StrategyProfile.objects.select_related("current_version"))
    preview = None
    status = 200
    if request.method == "POST":
        profile = get_object_or_404(StrategyProfile, pk=request.POST.get("profile"))
        try:
            params = strategy_services.params_from_post(profile, request.POST)
            diff = strategy_services.diff_params(strategy_services.full_params(profile), params)
            if request.POST.get("confirm") == "apply":
                strategy_services.update_profile(profile=profile, params=params, user=request.user,
                                                 comment=request.POST.get("comment", "")[:200])
                messages.success(request, f"{profile.name}: saved as a new version.")
                return redirect("strategy")
            preview = {"profile": profile, "params": params, "diff": diff}
        except PermissionDenied as exc:
            messages.error(request, str(exc))
            status = 403
        except ValidationError as exc:
            messages.error(request, f"{profile.name}: " + " ".join(exc.messages))
            status = 400
    rows = strategy_services.param_rows(profiles)
    return render(request, "strategies/strategy.html", {
        "profiles": profiles,
        "rows": rows,
        "edit_profiles": [{"profile": p, "fields": strategy_services.edit_fields(p)} for p in profiles],
        "preview": preview,
        "versions": ConfigVersion.objects.select_related("profile", "created_by").order_by("-created_at")[:30],
        "can_edit": services.can_manage_live(request.user),
    }, status=status)


@require_http_methods(["GET", "POST"])
def config(request):
    form = CredentialForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if not services.can_manage_live(request.user):
            return refused(request, "Only staff may manage credentials.")
        if form.is_valid():
            credential = form.save(commit=False)
            credential.created_by = credential.owner = request.user
            credential.save()
            audit.record("CREDENTIAL_ADDED", actor=request.user, obj=credential,
                         payload={"exchange": credential.exchange, "label": credential.label, "key": credential.masked_key})
            messages.success(request, f"Credential {credential.label} saved; the secret is no longer shown.")
            return redirect("config")
        status = 400
    return render(request, "traders/config.html", {
        "credentials": permissions.credentials_for(request.user),
        "form": form,
        "export_form": AuditExportForm(),
        "can_manage": services.can_manage_live(request.user),
        "traders": _traders(request),
        "audit_kinds": audit.known_kinds(),
    }, status=status)


@require_POST
def credential_delete(request, pk: int):
    if not services.can_manage_live(request.user):
        return refused(request, "Only staff may manage credentials.")
    credential = get_object_or_404(Credential, pk=pk)
    if credential.traders.filter(removed_at__isnull=True).exists():
        messages.error(request, f"{credential.label} is used by a trader; remove the trader first.")
        return redirect("config")
    audit.record("CREDENTIAL_DELETED", actor=request.user, obj=credential,
                 payload={"exchange": credential.exchange, "label": credential.label, "key": credential.masked_key})
    credential.delete()
    messages.success(request, f"Credential {credential.label} deleted.")
    return redirect("config")


@require_GET
def audit_export(request):
    form = AuditExportForm(request.GET)
    if not form.is_valid():
        return HttpResponse("Bad export filter: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in form.errors.items()), status=400, content_type="text/plain")
    data = form.cleaned_data
    # Non-staff export only their own traders' rows (no platform rows) [issue 21 #4].
    rows = audit.filtered(since=data["since"], until=data["until"], trader_id=data["trader"], kind=data["kind"] or None)
    if not permissions.is_staff(request.user):
        mine = _traders(request)
        if data["trader"] and not mine.filter(pk=data["trader"]).exists():
            return HttpResponse("Bad export filter: trader: no such trader.", status=404, content_type="text/plain")
        rows = rows.filter(trader_id__in=mine.values("id"))
    fmt = data["format"]
    audit.record("AUDIT_EXPORTED", actor=request.user, payload={k: v for k, v in data.items() if v})
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(
        audit.export(rows.iterator(chunk_size=2000), fmt),
        content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="quantweb-audit-{stamp}.{fmt}"'
    return response
