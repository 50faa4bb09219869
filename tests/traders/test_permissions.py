"""Roles on every action, pages and API [issue 7 #7, issue 21 #4, SPEC 13].

viewer (logged in): looks at their own traders. operator (the ``traders.change_trader``
permission): creates, runs, stops, removes and liquidates their own PAPER traders. staff: every
trader, and alone moves LIVE money (liquidate LIVE, start an armed LIVE trader, arm, PAPER <->
LIVE), credentials, guard resets and the kill switches. The pages show only what the role may
do; the server refuses the rest with a 403 and the reason. Each role acts here on a trader it
owns; tests/traders/test_ownership.py covers other users' traders, test_role_matrix.py every
cell of the documented matrix.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from risk.models import KillSwitch
from strategies.models import StrategyProfile
from tests.factories import PASSWORD, make_trader, profile
from traders.models import Credential, Intent, IntentKind, Trader, TraderMode

pytestmark = pytest.mark.django_db

ROLES = ["viewer", "operator", "admin_user"]
KEY, SECRET = "AKIAPERMTEST1234", "perm-test-secret-5678"


@pytest.fixture
def trader(admin_user):
    return make_trader(admin_user, name="paper-1")


@pytest.fixture
def credential(admin_user):
    return Credential.objects.create(exchange="upbit", label="main", api_key=KEY, api_secret=SECRET, created_by=admin_user)


@pytest.fixture
def live_trader(admin_user, credential):
    trader = make_trader(admin_user, name="live-1")
    Trader.objects.filter(pk=trader.pk).update(
        mode=TraderMode.LIVE, credential=credential, exchange="upbit",
        paper_protection_started_at=timezone.now() - timedelta(days=3), paper_seconds=3 * 86400)
    return Trader.objects.get(pk=trader.pk)


def give(user, *traders) -> None:
    """Make ``user`` the owner of ``traders`` (non-staff see and act on their own only)."""
    Trader.objects.filter(pk__in=[t.pk for t in traders]).update(owner=user)


def login(client, request, role, *owned):
    user = request.getfixturevalue(role)
    client.force_login(user)
    give(user, *owned)
    return user


def api_as(request, role, *owned) -> APIClient:
    api = APIClient()
    user = request.getfixturevalue(role)
    api.force_authenticate(user)
    give(user, *owned)
    return api


def refused(response, message: str) -> bool:
    return response.status_code == 403 and message in response.content.decode()


# -- pages: what each role is shown ------------------------------------------------------------

def test_viewer_sees_no_controls(client, request, trader):
    login(client, request, "viewer", trader)
    html = client.get(reverse("traders")).content.decode()
    assert 'id="add-trader"' not in html and 'id="add-dialog"' not in html
    assert ">RUN<" not in html and ">STOP<" not in html and ">REMOVE<" not in html
    assert f'action="/traders/{trader.pk}/mode/"' not in html and '<span class="mode">PAPER</span>' in html
    html = client.get(reverse("trader-detail", args=[trader.pk])).content.decode()
    assert ">RUN<" not in html and ">LIQUIDATE<" not in html
    html = client.get(reverse("dashboard")).content.decode()
    assert 'id="kill-switch-controls"' not in html
    html = client.get(reverse("config")).content.decode()
    assert 'id="add-credential"' not in html and 'id="credential-dialog"' not in html


def test_operator_sees_paper_controls_but_not_live_or_kill_switches(client, request, trader, live_trader):
    login(client, request, "operator", trader, live_trader)
    html = client.get(reverse("traders")).content.decode()
    assert 'id="add-trader"' in html and ">RUN<" in html and ">STOP<" in html and ">REMOVE<" in html
    paper_row = html.split(f'<tr data-trader="{trader.pk}">')[1].split("</tr>")[0]
    assert '<option value="LIVE"  disabled title="only staff may switch a trader to LIVE">' in paper_row
    live_row = html.split(f'<tr data-trader="{live_trader.pk}">')[1].split("</tr>")[0]
    assert 'value="PAPER"  disabled title="only staff may switch a trader between PAPER and LIVE"' in live_row
    html = client.get(reverse("trader-detail", args=[trader.pk])).content.decode()
    assert ">LIQUIDATE<" in html and ">RUN<" in html
    # LIVE money is staff-only: no LIQUIDATE or ARM; RUN while not armed (no order can be sent).
    html = client.get(reverse("trader-detail", args=[live_trader.pk])).content.decode()
    assert ">LIQUIDATE<" not in html and ">ARM<" not in html and ">RUN<" in html
    Trader.objects.filter(pk=live_trader.pk).update(armed=True)
    html = client.get(reverse("trader-detail", args=[live_trader.pk])).content.decode()
    assert ">RUN<" not in html and ">STOP<" in html
    assert 'id="kill-switch-controls"' not in client.get(reverse("dashboard")).content.decode()
    assert 'id="add-credential"' not in client.get(reverse("config")).content.decode()


def test_staff_sees_everything(admin_client, trader, live_trader, credential):
    html = admin_client.get(reverse("traders")).content.decode()
    paper_row = html.split(f'<tr data-trader="{trader.pk}">')[1].split("</tr>")[0]
    assert '<option value="LIVE" >LIVE</option>' in paper_row
    html = admin_client.get(reverse("trader-detail", args=[live_trader.pk])).content.decode()
    assert ">ARM<" in html
    assert 'id="kill-switch-controls"' in admin_client.get(reverse("dashboard")).content.decode()
    html = admin_client.get(reverse("config")).content.decode()
    assert 'id="add-credential"' in html and ">DELETE<" in html


# -- pages: what the server allows -------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_create_trader_page(client, request, role):
    user = login(client, request, role)
    response = client.post(reverse("traders"), {"name": f"by-{role}", "profile": profile().pk, "seed_money": "1000000"})
    if role == "viewer":
        assert refused(response, "You may view traders but not create them")
        assert not Trader.objects.exists()
    else:
        assert response.status_code == 302 and Trader.objects.get(name=f"by-{role}").owner == user


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ["START", "LIQUIDATE"])
def test_paper_trader_actions_page(client, request, role, action, trader):
    login(client, request, role, trader)
    response = client.post(reverse("trader-action", args=[trader.pk]), {"action": action})
    if role == "viewer":
        assert refused(response, "you may view traders but not change them")
        assert not Intent.objects.exists()
    else:
        assert response.status_code == 302
        assert Intent.objects.get().kind == action


@pytest.mark.parametrize("role", ROLES)
def test_stop_and_remove_page(client, request, role, trader):
    login(client, request, role, trader)
    for action in ("STOP", "REMOVE"):
        response = client.post(reverse("trader-action", args=[trader.pk]), {"action": action})
        assert response.status_code == (403 if role == "viewer" else 302), (role, action)
    assert Intent.objects.count() == (0 if role == "viewer" else 2)


@pytest.mark.parametrize("role", ROLES)
def test_run_mode_page(client, request, role, trader, credential):
    Trader.objects.filter(pk=trader.pk).update(credential=credential)
    login(client, request, role, trader)
    paper = client.post(reverse("trader-mode", args=[trader.pk]), {"mode": "PAPER"})
    live = client.post(reverse("trader-mode", args=[trader.pk]), {"mode": "LIVE"})
    if role == "viewer":
        assert refused(paper, "you may view traders but not change them") and live.status_code == 403
    elif role == "operator":
        assert paper.status_code == 302 and refused(live, "only staff may switch a trader to LIVE")
    else:
        assert paper.status_code == 302 and live.status_code == 302
    kinds = list(Intent.objects.values_list("payload__mode", flat=True))
    assert kinds == {"viewer": [], "operator": ["PAPER"], "admin_user": ["PAPER", "LIVE"]}[role]


@pytest.mark.parametrize("role", ROLES)
def test_arm_live_page(client, request, role, live_trader):
    login(client, request, role, live_trader)
    response = client.post(reverse("trader-action", args=[live_trader.pk]), {"action": "ARM"})
    if role == "admin_user":
        assert response.status_code == 302 and Intent.objects.get().kind == IntentKind.ARM
    else:
        assert refused(response, "only staff may arm LIVE trading or use the kill switches")
        assert not Intent.objects.exists()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", ["engage", "release", "emergency"])
def test_kill_switches_page(client, request, role, action):
    login(client, request, role)
    response = client.post(reverse("kill-switch"), {"action": action, "reason": "test"})
    if role == "admin_user":
        assert response.status_code == 302 and Intent.objects.count() == 1
    else:
        assert refused(response, "only staff may arm LIVE trading or use the kill switches")
        assert not Intent.objects.exists()


@pytest.mark.parametrize("role", ROLES)
def test_credentials_page(client, request, role, credential):
    login(client, request, role)
    add = client.post(reverse("config"), {"exchange": "upbit", "label": "second", "api_key": KEY, "api_secret": SECRET})
    delete = client.post(reverse("credential-delete", args=[credential.pk]))
    if role == "admin_user":
        assert add.status_code == 302 and delete.status_code == 302
        assert list(Credential.objects.values_list("label", flat=True)) == ["second"]
    else:
        assert refused(add, "Only staff may manage credentials.") and refused(delete, "Only staff may manage credentials.")
        assert list(Credential.objects.values_list("label", flat=True)) == ["main"]


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_profile_edit_page_is_staff_only(client, request, role):
    login(client, request, role)
    target = StrategyProfile.objects.get(key="STANDARD")
    response = client.post(reverse("strategy"), {"profile": target.pk, "risk_per_trade": "0.004", "confirm": "apply"})
    assert response.status_code == 403
    assert StrategyProfile.objects.get(key="STANDARD").current_version.version == 1


def test_refused_page_says_who_you_are(client, request, trader):
    login(client, request, "viewer")
    response = client.post(reverse("kill-switch"), {"action": "engage", "reason": "x"})
    html = response.content.decode()
    assert 'id="refused-message"' in html and "(viewer)" in html


def test_bad_redirect_target_is_a_400(admin_client, trader):
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = admin_client.post(reverse("trader-action", args=[trader.pk]), {"action": "START", "next": target})
        assert response.status_code == 400, target
    assert not Intent.objects.exists()
    response = admin_client.post(reverse("trader-action", args=[trader.pk]),
                                 {"action": "START", "next": f"/traders/{trader.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"/traders/{trader.pk}/"


# -- API ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_api_reads_of_own_traders_are_open_to_every_role(request, role, trader):
    api = api_as(request, role, trader)
    for url in ("/api/traders/", f"/api/traders/{trader.pk}/", f"/api/traders/{trader.pk}/guard/", "/api/events/",
                "/api/orders/", "/api/fills/", "/api/positions/", "/api/signals/", "/api/regimes/", "/api/profiles/",
                "/api/metrics/", "/api/kill-switch/"):
        assert api.get(url).status_code == 200, (role, url)


@pytest.mark.parametrize("role", ROLES)
def test_api_create_trader(request, role):
    response = api_as(request, role).post("/api/traders/", {"name": "api-1", "profile": "STANDARD",
                                                           "seed_money": "2500000"}, format="json")
    if role == "viewer":
        assert response.status_code == 403
        assert response.json() == {"detail": "You may view traders but not change them (operators and staff only)."}
    else:
        assert response.status_code == 201
        body = response.json()
        assert (body["name"], body["mode"], body["status"], body["trading_state"]) == ("api-1", "PAPER", "stopped", "ACTIVE")
        assert Decimal(body["seed_money"]) == Decimal("2500000")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action,kind", [("run", "START"), ("stop", "STOP"), ("remove", "REMOVE"),
                                         ("liquidate", "LIQUIDATE")])
def test_api_paper_actions(request, role, action, kind, trader):
    response = api_as(request, role, trader).post(f"/api/traders/{trader.pk}/{action}/")
    if role == "viewer":
        assert response.status_code == 403 and not Intent.objects.exists()
    else:
        assert response.status_code == 202
        intent = Intent.objects.get()
        assert response.json() == {"intent": intent.pk, "kind": kind, "status": "pending", "trader": trader.pk}


@pytest.mark.parametrize("role", ROLES)
def test_api_mode_and_arm(request, role, trader, live_trader, credential):
    Trader.objects.filter(pk=trader.pk).update(credential=credential)
    api = api_as(request, role, trader, live_trader)
    paper = api.post(f"/api/traders/{trader.pk}/mode/", {"mode": "PAPER"}, format="json")
    live = api.post(f"/api/traders/{trader.pk}/mode/", {"mode": "LIVE"}, format="json")
    arm = api.post(f"/api/traders/{live_trader.pk}/arm/")
    expected = {"viewer": (403, 403, 403), "operator": (202, 403, 403), "admin_user": (202, 202, 202)}[role]
    assert (paper.status_code, live.status_code, arm.status_code) == expected
    if role == "operator":
        assert live.json() == {"detail": "only staff may switch a trader to LIVE"}
        assert arm.json() == {"detail": "Only staff may do this."}


@pytest.mark.parametrize("role", ROLES)
def test_api_kill_switch(request, role):
    api = api_as(request, role)
    response = api.post("/api/kill-switch/", {"action": "engage", "reason": "api test"}, format="json")
    if role == "admin_user":
        assert response.status_code == 202 and Intent.objects.get().kind == IntentKind.KILL_ALL
        assert Intent.objects.get().payload == {"reason": "api test"}
    else:
        assert response.status_code == 403 and response.json() == {"detail": "Only staff may do this."}
        assert not Intent.objects.exists()
    assert api.get("/api/kill-switch/").json() == {"engaged": False, "reason": "", "changed_by": None, "changed_at": None}
    assert not KillSwitch.objects.filter(engaged=True).exists()     # the worker applies it, not the web


@pytest.mark.parametrize("role", ROLES)
def test_api_credentials(request, role, credential):
    api = api_as(request, role)
    listing = api.get("/api/credentials/")
    created = api.post("/api/credentials/", {"exchange": "upbit", "label": "api", "api_key": KEY, "api_secret": SECRET},
                       format="json")
    if role == "admin_user":
        assert listing.status_code == 200 and created.status_code == 201
        assert KEY not in created.content.decode() and SECRET not in created.content.decode()
        assert created.json()["masked_key"] == "****1234"
    else:
        assert listing.status_code == 403 and created.status_code == 403
        assert listing.json() == {"detail": "Only staff may manage credentials."}
        assert Credential.objects.count() == 1


# -- login throttling ------------------------------------------------------------------------

def test_login_throttle_blocks_even_the_right_password_and_is_per_client(client, admin_user, settings):
    settings.LOGIN_MAX_FAILURES = 2
    response = client.post(reverse("login"), {"username": "boss", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")
    assert b"Too many failed attempts" not in response.content
    # The failure that reaches LOGIN_MAX_FAILURES is already answered with the lockout (axes).
    response = client.post(reverse("login"), {"username": "boss", "password": "wrong"}, REMOTE_ADDR="10.0.0.1")
    assert response.status_code == 429 and b"Too many failed attempts" in response.content
    response = client.post(reverse("login"), {"username": "boss", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")
    assert b"Too many failed attempts" in response.content and "_auth_user_id" not in client.session
    # The message does not reveal whether the account exists.
    for _ in range(3):
        response = client.post(reverse("login"), {"username": "nobody", "password": "x"}, REMOTE_ADDR="10.0.0.1")
    assert b"Too many failed attempts" in response.content
    # Another client is not locked out by this one's failures.
    response = client.post(reverse("login"), {"username": "boss", "password": PASSWORD}, REMOTE_ADDR="10.0.0.2")
    assert response.status_code == 302 and client.session["_auth_user_id"] == str(admin_user.pk)
