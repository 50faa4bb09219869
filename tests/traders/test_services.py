"""Trader services: validation, permissions, intents recorded by the web and applied by workers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from strategies.models import ConfigVersion, StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import make_trader, profile
from traders import audit
from traders.models import (
    AuditLog,
    Credential,
    Intent,
    IntentKind,
    IntentStatus,
    Trader,
    TraderMode,
    TraderStatus,
)
from traders.services import create_trader, process_intents, request_intent

pytestmark = pytest.mark.django_db


def test_five_profiles_exist_after_migrate():
    keys = list(StrategyProfile.objects.order_by("id").values_list("key", flat=True))
    assert keys == ["SAFETY_FIRST", "STANDARD", "PROFIT_FIRST", "CRAZY", "AI_MODE"]
    safety = effective_profile(StrategyProfile.objects.get(key="SAFETY_FIRST"))
    assert (safety.risk_per_trade, safety.max_portfolio_risk, safety.entry_threshold, safety.max_positions_cap) == (
        0.0025, 0.02, 80.0, 3)
    assert all(p.current_version.version == 1 for p in StrategyProfile.objects.all())


def test_create_trader_validates_and_audits(admin_user):
    with pytest.raises(ValidationError) as exc:
        create_trader(user=admin_user, name=" ", profile=profile(), seed_money=Decimal("-1"))
    assert set(exc.value.message_dict) == {"name", "seed_money"}
    trader = make_trader(admin_user)
    assert (trader.status, trader.mode, trader.cash, trader.config_version.version) == (
        TraderStatus.STOPPED, TraderMode.PAPER, Decimal("10000000"), 1)
    assert trader.safety.trading_state == "ACTIVE"
    with pytest.raises(ValidationError, match="already exists"):
        make_trader(admin_user)
    row = AuditLog.objects.get(kind="TRADER_CREATED")
    assert row.trader_id == trader.pk and row.actor == "boss" and row.payload["seed_money"] == "10000000"


def test_viewer_cannot_create_or_act(viewer, admin_user):
    with pytest.raises(PermissionDenied):
        make_trader(viewer)
    trader = make_trader(admin_user)
    with pytest.raises(PermissionDenied):
        request_intent(user=viewer, kind=IntentKind.START, trader=trader)
    assert not Intent.objects.exists()


def test_operator_runs_paper_but_cannot_go_live(operator):
    trader = make_trader(operator)
    request_intent(user=operator, kind=IntentKind.START, trader=trader)
    with pytest.raises(PermissionDenied):
        request_intent(user=operator, kind=IntentKind.SET_MODE, trader=trader, payload={"mode": "LIVE"})
    with pytest.raises(PermissionDenied):
        request_intent(user=operator, kind=IntentKind.KILL_ALL)


def test_worker_applies_intents_in_order(admin_user):
    trader = make_trader(admin_user)
    request_intent(user=admin_user, kind=IntentKind.START, trader=trader)
    assert Trader.objects.get(pk=trader.pk).status == TraderStatus.STOPPED   # the web only recorded it
    assert process_intents() == 1
    trader.refresh_from_db()
    assert trader.status == TraderStatus.RUNNING and trader.paper_protection_started_at is not None
    with pytest.raises(ValidationError, match="Stop the trader"):
        request_intent(user=admin_user, kind=IntentKind.SET_MODE, trader=trader, payload={"mode": "PAPER"})
    request_intent(user=admin_user, kind=IntentKind.STOP, trader=trader)
    with pytest.raises(ValidationError, match="stop the trader before removing"):
        request_intent(user=admin_user, kind=IntentKind.REMOVE, trader=trader)   # STOP not applied yet
    assert process_intents() == 1
    trader.refresh_from_db()
    request_intent(user=admin_user, kind=IntentKind.REMOVE, trader=trader)
    assert process_intents() == 1
    trader.refresh_from_db()
    assert trader.status == TraderStatus.STOPPED and trader.removed_at is not None
    assert list(Intent.objects.values_list("status", flat=True)) == [IntentStatus.DONE] * 3
    kinds = list(AuditLog.objects.values_list("kind", flat=True))
    assert kinds.count("INTENT_PROCESSED") == 3 and "INTENT_START" in kinds


def test_live_needs_credential_paper_protection_and_staff(admin_user):
    trader = make_trader(admin_user)
    with pytest.raises(ValidationError, match="credential"):
        request_intent(user=admin_user, kind=IntentKind.SET_MODE, trader=trader, payload={"mode": "LIVE"})
    cred = Credential.objects.create(exchange="upbit", label="main", api_key="key-12345678", api_secret="secret-abcdefgh")
    Trader.objects.filter(pk=trader.pk).update(credential=cred, exchange="upbit")
    trader.refresh_from_db()
    request_intent(user=admin_user, kind=IntentKind.SET_MODE, trader=trader, payload={"mode": "LIVE"})
    process_intents()
    trader.refresh_from_db()
    assert trader.mode == TraderMode.LIVE
    with pytest.raises(ValidationError, match="paper protection"):
        request_intent(user=admin_user, kind=IntentKind.ARM, trader=trader)
    # 25 h since the first start is not enough: protection counts time run in PAPER [issue 21 #4].
    Trader.objects.filter(pk=trader.pk).update(paper_protection_started_at=timezone.now() - timedelta(hours=25))
    trader.refresh_from_db()
    with pytest.raises(ValidationError, match="paper protection"):
        request_intent(user=admin_user, kind=IntentKind.ARM, trader=trader)
    Trader.objects.filter(pk=trader.pk).update(paper_seconds=25 * 3600)
    trader.refresh_from_db()
    request_intent(user=admin_user, kind=IntentKind.ARM, trader=trader)
    process_intents()
    trader.refresh_from_db()
    assert trader.armed and trader.armed_by == admin_user


def test_trader_page_actions_record_intents_only(admin_client, admin_user):
    trader = make_trader(admin_user)
    response = admin_client.post(reverse("trader-action", args=[trader.pk]), {"action": "START"})
    assert response.status_code == 302
    intent = Intent.objects.get()
    assert (intent.kind, intent.status) == (IntentKind.START, IntentStatus.PENDING)
    assert admin_client.post(reverse("trader-action", args=[trader.pk]), {"action": "FLY"}).status_code == 400
    assert admin_client.post(reverse("trader-mode", args=[trader.pk]), {"mode": "MOON"}).status_code == 400
    assert admin_client.post(reverse("trader-action", args=[9999]), {"action": "START"}).status_code == 404


def test_add_dialog_shows_field_errors_and_creates_nothing(admin_client):
    response = admin_client.post(reverse("traders"), {"name": "", "profile": profile().pk, "seed_money": "abc"})
    assert response.status_code == 400
    assert b"field-error" in response.content and b"data-open-on-load" in response.content
    assert not Trader.objects.exists()


def test_profile_edit_is_versioned_diffed_and_audited(admin_client, admin_user):
    std = profile("STANDARD")
    response = admin_client.post(reverse("strategy"), {"profile": std.pk, "entry_threshold": "75"})
    assert response.status_code == 200 and b"Review changes" in response.content
    assert ConfigVersion.objects.filter(profile=std).count() == 1            # preview only
    response = admin_client.post(reverse("strategy"), {"profile": std.pk, "entry_threshold": "75", "confirm": "apply"})
    assert response.status_code == 302
    std.refresh_from_db()
    assert std.current_version.version == 2 and std.params["entry_threshold"] == 75.0
    assert std.current_version.diff == {"entry_threshold": [70.0, 75.0]}
    assert audit.filtered(kind="CONFIG_CHANGED").count() == 1
    bad = admin_client.post(reverse("strategy"), {"profile": std.pk, "entry_threshold": "150", "confirm": "apply"})
    assert bad.status_code == 400 and b"entry_threshold" in bad.content
    with pytest.raises(ValidationError, match="nothing changed"):
        update_profile(profile=std, params=std.params, user=admin_user)


def test_running_trader_keeps_its_config_version(admin_user):
    trader = make_trader(admin_user)
    std = profile("STANDARD")
    params = dict(std.params, entry_threshold=90.0)
    update_profile(profile=std, params=params, user=admin_user)
    trader.refresh_from_db()
    assert trader.config_version.version == 1 and trader.config_version.params["entry_threshold"] == 70


def test_live_trader_never_books_simulated_orders(admin_user, settings):
    """A LIVE trader that is not ARMED (nor past paper protection) places nothing at all [EXE-4]."""
    from execution.models import Order
    from traders import tasks
    from traders.trading import run_tick

    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS = 400, 4
    trader = make_trader(admin_user)
    cred = Credential.objects.create(exchange="upbit", label="main", api_key="key-12345678", api_secret="secret-abcdefgh")
    Trader.objects.filter(pk=trader.pk).update(credential=cred, mode=TraderMode.LIVE, status=TraderStatus.RUNNING,
                                               exchange="sim")
    tasks.collect_market_data(1_790_000_000.0)
    from execution.marketdata import latest_bar

    report = run_tick(trader.pk, latest_bar("sim"))
    assert report.outcome == "live-refused"
    assert not Order.objects.exists()
    assert trader.events.filter(kind="LIVE_REFUSED").exists()


def test_epoch_filter():
    from traders.templatetags.quantweb_tags import epoch

    assert epoch(1_790_000_040) == "09-21 14:14"
    assert epoch("junk") == ""
