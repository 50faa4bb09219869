"""The role matrix of docs/ui-api.md ("Roles"), cell by cell [issue 21 #4].

Every action x every role, through the API and, where the action has a page, through the page.
Each role acts on traders it owns (another user's trader: tests/traders/test_ownership.py).
A cell is one of:

* ALLOW: accepted (2xx, or a 4xx about the data that is not a refusal: the role may);
* DENY: refused with 403 and a reason (the page shows the "Not allowed" page, never a 500);
* LOGIN: anonymous, sent to log in (API 401/403, page 302 to the login page).

The expected matrix below is the one the docs show; test_docs_show_this_matrix checks that they
agree, so the docs and the code cannot drift apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from execution.models import Position
from tests.factories import UserFactory, make_trader, profile, staff_user
from traders.models import Credential, Intent, Trader, TraderMode

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "viewer", "operator", "staff"]
A, D, L = "ALLOW", "DENY", "LOGIN"

# action: (anonymous, viewer, operator, staff)
MATRIX: dict[str, tuple[str, str, str, str]] = {
    "read own traders": (L, A, A, A),
    "create a trader": (L, D, A, A),
    "run a PAPER trader": (L, D, A, A),
    "stop": (L, D, A, A),
    "remove": (L, D, A, A),
    "disarm": (L, D, A, A),
    "liquidate a PAPER trader": (L, D, A, A),
    "run an unarmed LIVE trader": (L, D, A, A),
    "liquidate a LIVE trader": (L, D, D, A),
    "run an armed LIVE trader": (L, D, D, A),
    "switch PAPER to LIVE": (L, D, D, A),
    "switch LIVE to PAPER": (L, D, D, A),
    "arm": (L, D, D, A),
    "reset a guard trip": (L, D, D, A),
    "kill switch: engage, release, emergency stop": (L, D, D, A),
    "credentials: list, add, delete": (L, D, D, A),
    "export the audit log": (L, A, A, A),
}

KEY, SECRET = "AKIAMATRIX001234", "matrix-secret-5678"


@pytest.fixture
def actors(db):
    return {"anonymous": None, "viewer": UserFactory(username="m-viewer"),
            "operator": UserFactory(username="m-operator", operator=True), "staff": staff_user(username="m-staff")}


@pytest.fixture
def world(actors):
    """Traders owned by the acting role (by staff when anonymous acts)."""
    staff = actors["staff"]
    credential = Credential.objects.create(exchange="upbit", label="matrix", api_key=KEY, api_secret=SECRET,
                                           created_by=staff, owner=staff)

    def build(role):
        owner = actors[role] or staff
        paper = make_trader(staff, name=f"paper-{role}")
        live = make_trader(staff, name=f"live-{role}")
        armed = make_trader(staff, name=f"armed-{role}")
        Trader.objects.filter(pk__in=[paper.pk, live.pk, armed.pk]).update(owner=owner, credential=credential)
        Trader.objects.filter(pk__in=[live.pk, armed.pk]).update(mode=TraderMode.LIVE, exchange="upbit",
                                                                 paper_seconds=30 * 3600)
        Trader.objects.filter(pk=armed.pk).update(armed=True)
        Credential.objects.filter(pk=credential.pk).update(owner=owner)
        return {"paper": paper, "live": live, "armed": armed, "credential": credential}
    return build


def _api(user) -> APIClient:
    api = APIClient()
    if user is not None:
        api.force_authenticate(user)
    return api


def _page(client, user):
    if user is not None:
        client.force_login(user)
    return client


def _kind(response) -> str:
    code = response.status_code
    assert code < 500, (code, response.content[:500])
    if code == 302 and "/login/" in response.get("Location", ""):
        return L
    if code == 401:
        return L
    if code == 403:
        return D
    return A


def _api_cell(action: str, user, w) -> str:
    api = _api(user)
    paper, live, armed = w["paper"], w["live"], w["armed"]
    anon = user is None
    kinds = []

    def add(response):
        kind = _kind(response)
        if anon and kind == D:          # DRF answers an anonymous request 401 or 403
            kind = L
        kinds.append(kind)

    if action == "read own traders":
        add(api.get("/api/traders/"))
        add(api.get(f"/api/traders/{paper.pk}/"))
        add(api.get(f"/api/positions/?trader={paper.pk}"))
        if not anon:
            listed = {t["id"] for t in api.get("/api/traders/").json()["results"]}
            assert {paper.pk, live.pk, armed.pk} <= listed
    elif action == "create a trader":
        add(api.post("/api/traders/", {"name": "matrix-new", "profile": "STANDARD", "seed_money": "1000000"},
                     format="json"))
    elif action == "run a PAPER trader":
        add(api.post(f"/api/traders/{paper.pk}/run/"))
    elif action == "stop":
        add(api.post(f"/api/traders/{paper.pk}/stop/"))
    elif action == "remove":
        add(api.post(f"/api/traders/{paper.pk}/remove/"))
    elif action == "disarm":
        add(api.post(f"/api/traders/{armed.pk}/disarm/"))
    elif action == "liquidate a PAPER trader":
        add(api.post(f"/api/traders/{paper.pk}/liquidate/"))
    elif action == "run an unarmed LIVE trader":
        add(api.post(f"/api/traders/{live.pk}/run/"))
    elif action == "liquidate a LIVE trader":
        add(api.post(f"/api/traders/{live.pk}/liquidate/"))
    elif action == "run an armed LIVE trader":
        add(api.post(f"/api/traders/{armed.pk}/run/"))
    elif action == "switch PAPER to LIVE":
        add(api.post(f"/api/traders/{paper.pk}/mode/", {"mode": "LIVE"}, format="json"))
    elif action == "switch LIVE to PAPER":
        add(api.post(f"/api/traders/{live.pk}/mode/", {"mode": "PAPER"}, format="json"))
    elif action == "arm":
        add(api.post(f"/api/traders/{live.pk}/arm/"))
    elif action == "reset a guard trip":
        add(api.post(f"/api/traders/{paper.pk}/reset-guard/", {"reason": "matrix"}, format="json"))
    elif action == "kill switch: engage, release, emergency stop":
        for verb in ("engage", "release", "emergency"):
            add(api.post("/api/kill-switch/", {"action": verb, "reason": "matrix"}, format="json"))
    elif action == "credentials: list, add, delete":
        add(api.get("/api/credentials/"))
        add(api.post("/api/credentials/", {"exchange": "upbit", "label": "matrix-2", "api_key": KEY,
                                           "api_secret": SECRET}, format="json"))
        spare = Credential.objects.create(exchange="upbit", label="spare", api_key=KEY, api_secret=SECRET,
                                          owner=user)
        add(api.delete(f"/api/credentials/{spare.pk}/"))
    elif action == "export the audit log":
        add(api.get(f"/api/audit/export/?format=jsonl&trader={paper.pk}"))
    else:  # pragma: no cover
        raise AssertionError(action)
    assert len(set(kinds)) == 1, (action, kinds)
    return kinds[0]


PAGE_ACTIONS = {
    "read own traders", "create a trader", "run a PAPER trader", "stop", "remove", "liquidate a PAPER trader",
    "run an unarmed LIVE trader", "liquidate a LIVE trader", "run an armed LIVE trader", "switch PAPER to LIVE",
    "switch LIVE to PAPER", "arm", "disarm", "reset a guard trip", "kill switch: engage, release, emergency stop",
    "credentials: list, add, delete", "export the audit log",
}


def _page_cell(action: str, client, user, w) -> str:
    client = _page(client, user)
    paper, live, armed = w["paper"], w["live"], w["armed"]

    def act(trader, name):
        return client.post(reverse("trader-action", args=[trader.pk]), {"action": name})

    def mode(trader, value):
        return client.post(reverse("trader-mode", args=[trader.pk]), {"mode": value})

    responses = []
    if action == "read own traders":
        responses = [client.get(reverse("traders")), client.get(reverse("trader-detail", args=[paper.pk]))]
        if user is not None:
            assert f'data-trader="{paper.pk}"' in responses[0].content.decode()
    elif action == "create a trader":
        responses = [client.post(reverse("traders"), {"name": "matrix-page", "profile": profile().pk,
                                                      "seed_money": "1000000"})]
    elif action == "run a PAPER trader":
        responses = [act(paper, "START")]
    elif action == "stop":
        responses = [act(paper, "STOP")]
    elif action == "remove":
        responses = [act(paper, "REMOVE")]
    elif action == "disarm":
        responses = [act(armed, "DISARM")]
    elif action == "liquidate a PAPER trader":
        responses = [act(paper, "LIQUIDATE")]
    elif action == "run an unarmed LIVE trader":
        responses = [act(live, "START")]
    elif action == "liquidate a LIVE trader":
        responses = [act(live, "LIQUIDATE")]
    elif action == "run an armed LIVE trader":
        responses = [act(armed, "START")]
    elif action == "switch PAPER to LIVE":
        responses = [mode(paper, "LIVE")]
    elif action == "switch LIVE to PAPER":
        responses = [mode(live, "PAPER")]
    elif action == "arm":
        responses = [act(live, "ARM")]
    elif action == "reset a guard trip":
        responses = [client.post(reverse("trader-reset-guard", args=[paper.pk]), {"reason": "matrix"})]
    elif action == "kill switch: engage, release, emergency stop":
        responses = [client.post(reverse("kill-switch"), {"action": verb, "reason": "matrix"})
                     for verb in ("engage", "release", "emergency")]
    elif action == "credentials: list, add, delete":
        spare = Credential.objects.create(exchange="upbit", label="spare", api_key=KEY, api_secret=SECRET,
                                          owner=user)
        responses = [client.post(reverse("config"), {"exchange": "upbit", "label": "matrix-3", "api_key": KEY,
                                                     "api_secret": SECRET}),
                     client.post(reverse("credential-delete", args=[spare.pk]))]
    elif action == "export the audit log":
        responses = [client.get(reverse("audit-export"), {"format": "csv", "trader": paper.pk})]
    kinds = []
    for response in responses:
        kind = _kind(response)
        if kind == D:
            assert 'id="refused-message"' in response.content.decode(), (action, response.content[:300])
        kinds.append(kind)
    assert len(set(kinds)) == 1, (action, kinds)
    return kinds[0]


CELLS = [(action, i, role) for action in MATRIX for i, role in enumerate(ROLES)]


@pytest.mark.parametrize("action,index,role", CELLS, ids=[f"{a}-{r}" for a, _, r in CELLS])
def test_api_cell(action, index, role, actors, world):
    w = world(role)
    assert _api_cell(action, actors[role], w) == MATRIX[action][index]


@pytest.mark.parametrize("action,index,role", [c for c in CELLS if c[0] in PAGE_ACTIONS],
                         ids=[f"{a}-{r}" for a, _, r in CELLS if a in PAGE_ACTIONS])
def test_page_cell(client, action, index, role, actors, world):
    w = world(role)
    assert _page_cell(action, client, actors[role], w) == MATRIX[action][index]


def test_refused_intents_are_never_recorded(actors, world):
    """A DENY cell records nothing: the worker never sees an intent the role could not ask for."""
    w = world("operator")
    api = _api(actors["operator"])
    for url, body in ((f"/api/traders/{w['live'].pk}/liquidate/", None), (f"/api/traders/{w['armed'].pk}/run/", None),
                      (f"/api/traders/{w['live'].pk}/mode/", {"mode": "PAPER"}),
                      (f"/api/traders/{w['paper'].pk}/mode/", {"mode": "LIVE"}), (f"/api/traders/{w['live'].pk}/arm/", None)):
        assert api.post(url, body, format="json").status_code == 403, url
    assert not Intent.objects.exists()


def test_refusals_say_why(actors, world):
    w = world("operator")
    api = _api(actors["operator"])
    assert api.post(f"/api/traders/{w['live'].pk}/liquidate/").json() == {
        "detail": "only staff may liquidate a LIVE trader's positions"}
    assert api.post(f"/api/traders/{w['armed'].pk}/run/").json() == {"detail": "only staff may start an armed LIVE trader"}
    assert api.post(f"/api/traders/{w['live'].pk}/mode/", {"mode": "PAPER"}, format="json").json() == {
        "detail": "only staff may switch a trader between PAPER and LIVE"}


def test_live_to_paper_with_open_positions_is_refused_even_for_staff(actors, world):
    w = world("staff")
    Position.objects.create(trader=w["live"], symbol="KRW-BTC", qty="0.1", avg_entry="50000000", opened_ts=0)
    response = _api(actors["staff"]).post(f"/api/traders/{w['live'].pk}/mode/", {"mode": "PAPER"}, format="json")
    assert response.status_code == 400
    assert "open LIVE positions" in response.json()["mode"][0]
    Position.objects.filter(trader=w["live"]).update(status=Position.Status.CLOSED)
    response = _api(actors["staff"]).post(f"/api/traders/{w['live'].pk}/mode/", {"mode": "PAPER"}, format="json")
    assert response.status_code == 202


def test_docs_show_this_matrix():
    """docs/ui-api.md carries the same matrix (the table under "Role matrix")."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "ui-api.md").read_text()
    blocks = text.split("### Role matrix", 1)[1].split("\n\n")
    table = next(b for b in blocks if b.lstrip().startswith("| action"))
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("action", "---") and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = tuple(re.sub(r"[^A-Z]", "", c.split()[0].upper()) for c in cells[1:])
    assert rows == {a: tuple(v) for a, v in MATRIX.items()}
