"""Server-rendered pages: DASHBOARD, TRADERS, STRATEGY, CONFIG [UI-1..UI-4].

Views read, and record intents; they never talk to an exchange [RT-1]. Every page needs login
(LoginRequiredMiddleware). Bad input re-renders with a message (4xx), never a 500.
"""

from __future__ import annotations

from collections import defaultdict

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.http import HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from execution.models import Order, Position, Trade
from regime.models import MarketRegime
from risk.models import KillSwitch
from strategies.models import ConfigVersion, Signal, StrategyProfile
from traders import audit, services
from traders.auth import ThrottledAuthenticationForm
from traders.forms import ActionForm, AuditExportForm, CredentialForm, ModeForm, TraderForm
from traders.models import Credential, EquitySnapshot, Event, IntentKind, Trader, TraderMode

CHART_POINTS = 720   # per trader on the dashboard (12 h of 1-minute ticks)
LOG_ROWS = 100




@method_decorator(login_not_required, name="dispatch")
class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"
    authentication_form = ThrottledAuthenticationForm
    redirect_authenticated_user = True


def _equity_series(trader_ids: list[int], points: int = CHART_POINTS) -> dict[int, list[list]]:
    """{trader_id: [[ts, return_pct], ...]} for the last ``points`` ticks, in one query."""
    if not trader_ids:
        return {}
    latest = EquitySnapshot.objects.filter(trader_id__in=trader_ids).order_by("-ts").values_list("ts", flat=True).first()
    if latest is None:
        return {}
    since = latest - points * 60
    series: dict[int, list[list]] = defaultdict(list)
    rows = (EquitySnapshot.objects.filter(trader_id__in=trader_ids, ts__gte=since)
            .order_by("ts").values_list("id", "trader_id", "ts", "equity", "seed_money"))
    for _id, trader_id, ts, equity, seed in rows:
        series[trader_id].append([ts, round(float((equity - seed) / seed * 100), 4)])
    return dict(series)


def _last_ids() -> dict[str, int]:
    return {
        "event": Event.objects.order_by("-id").values_list("id", flat=True).first() or 0,
        "equity": EquitySnapshot.objects.order_by("-id").values_list("id", flat=True).first() or 0,
    }


@require_GET
def dashboard(request):
    traders = list(Trader.objects.active().select_related("profile"))
    counts = Trader.objects.active().aggregate(
        total=Count("id"), paper=Count("id", filter=Q(mode=TraderMode.PAPER)), live=Count("id", filter=Q(mode=TraderMode.LIVE))
    )
    ids = _last_ids()
    events = list(Event.objects.select_related("trader").order_by("-id")[:LOG_ROWS])
    chart = {
        "traders": [{"id": t.id, "name": t.name} for t in traders],
        "series": _equity_series([t.id for t in traders]),
    }
    from traders.metrics import dashboard_metrics

    return render(request, "traders/dashboard.html", {
        "metrics": dashboard_metrics(),
        "regime": MarketRegime.objects.order_by("-bar_ts").first(),
        "counts": counts,
        "traders": traders,
        "events": events,
        "chart": chart,
        "last_ids": ids,
        "kill_switch": KillSwitch.objects.filter(pk=1).first(),
        "open_positions": Position.objects.filter(status=Position.Status.OPEN, trader__removed_at__isnull=True).count(),
    })


@require_http_methods(["GET", "POST"])
def trader_list(request):
    form = TraderForm(request.POST or None)
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
                messages.error(request, str(exc))
                return redirect("traders")
            else:
                messages.success(request, f"Trader {trader.name} created (PAPER, stopped).")
                return redirect("traders")
        status = 400
    traders = Trader.objects.active().select_related("profile", "config_version", "credential")
    return render(request, "traders/traders.html", {
        "traders": traders,
        "form": form,
        "open_add": request.method == "POST",
        "modes": TraderMode.choices,
        "can_operate": services.can_operate(request.user),
        "can_manage_live": services.can_manage_live(request.user),
        "last_ids": _last_ids(),
    }, status=status)


def _intent_response(request, trader, kind, payload=None):
    try:
        services.request_intent(user=request.user, kind=kind, trader=trader, payload=payload or {})
    except PermissionDenied as exc:
        messages.error(request, str(exc))
        return redirect(request.POST.get("next") or "traders"), 403
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(request.POST.get("next") or "traders"), 400
    messages.success(request, f"{IntentKind(kind).label}: requested; the worker applies it within seconds.")
    return redirect(request.POST.get("next") or "traders"), 302


def _safe_next(request) -> None:
    nxt = request.POST.get("next", "")
    if nxt and not nxt.startswith("/"):
        raise ValidationError("bad redirect")


@require_POST
def trader_action(request, pk: int):
    trader = get_object_or_404(Trader.objects.active(), pk=pk)
    form = ActionForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("unknown action")
    _safe_next(request)
    response, _status = _intent_response(request, trader, form.cleaned_data["action"])
    return response


@require_POST
def trader_mode(request, pk: int):
    trader = get_object_or_404(Trader.objects.active(), pk=pk)
    form = ModeForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest("run mode must be PAPER or LIVE")
    _safe_next(request)
    response, _status = _intent_response(request, trader, IntentKind.SET_MODE, {"mode": form.cleaned_data["mode"]})
    return response


@require_POST
def kill_switch(request):
    action = request.POST.get("action")
    kinds = {"engage": IntentKind.KILL_ALL, "release": IntentKind.RELEASE_KILL, "emergency": IntentKind.EMERGENCY_STOP}
    if action not in kinds:
        return HttpResponseBadRequest("unknown kill-switch action")
    _safe_next(request)
    response, _status = _intent_response(request, None, kinds[action], {"reason": request.POST.get("reason", "")[:200]})
    return response


@require_GET
def trader_detail(request, pk: int):
    trader = get_object_or_404(Trader.objects.select_related("profile", "config_version", "credential"), pk=pk)
    snaps = list(EquitySnapshot.objects.filter(trader=trader).order_by("-ts").values_list("ts", "equity")[:2000])[::-1]
    curve, peak, drawdown = [], None, []
    for ts, equity in snaps:
        value = float(equity)
        peak = value if peak is None else max(peak, value)
        curve.append([ts, value])
        drawdown.append([ts, round((value / peak - 1) * 100, 4) if peak else 0.0])
    return render(request, "traders/trader_detail.html", {
        "trader": trader,
        "safety": getattr(trader, "safety", None),
        "positions": Position.objects.filter(trader=trader, status=Position.Status.OPEN),
        "orders": Order.objects.filter(trader=trader).order_by("-id")[:50],
        "trades": Trade.objects.filter(trader=trader).order_by("-id")[:50],
        "signals": Signal.objects.filter(trader=trader).order_by("-id")[:50],
        "events": Event.objects.filter(trader=trader).order_by("-id")[:LOG_ROWS],
        "chart": {"equity": curve, "drawdown": drawdown},
        "last_ids": _last_ids(),
        "modes": TraderMode.choices,
        "can_operate": services.can_operate(request.user),
        "can_manage_live": services.can_manage_live(request.user),
    })


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
            messages.error(request, "Only staff may manage credentials.")
            return redirect("config")
        if form.is_valid():
            credential = form.save(commit=False)
            credential.created_by = request.user
            credential.save()
            audit.record("CREDENTIAL_ADDED", actor=request.user, obj=credential,
                         payload={"exchange": credential.exchange, "label": credential.label, "key": credential.masked_key})
            messages.success(request, f"Credential {credential.label} saved; the secret is no longer shown.")
            return redirect("config")
        status = 400
    return render(request, "traders/config.html", {
        "credentials": Credential.objects.all(),
        "form": form,
        "export_form": AuditExportForm(),
        "can_manage": services.can_manage_live(request.user),
        "traders": Trader.objects.all(),
        "audit_kinds": audit.known_kinds(),
    }, status=status)


@require_POST
def credential_delete(request, pk: int):
    if not services.can_manage_live(request.user):
        raise PermissionDenied("Only staff may manage credentials.")
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
    rows = audit.filtered(since=data["since"], until=data["until"], trader_id=data["trader"], kind=data["kind"] or None)
    fmt = data["format"]
    audit.record("AUDIT_EXPORTED", actor=request.user, payload={k: v for k, v in data.items() if v})
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response = StreamingHttpResponse(
        audit.export(rows.iterator(chunk_size=2000), fmt),
        content_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="quantweb-audit-{stamp}.{fmt}"'
    return response
