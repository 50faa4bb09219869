"""Property-based fuzz of the whole REST API with schemathesis [issue 7 #6, rule 5].

The schema is the one ``/api/schema/`` serves (the view is called through its URL, as a staff
user), so every operation any app adds under ``/api/`` is fuzzed without touching this file.
schemathesis derives one test per operation; each generates schema-valid and schema-invalid
requests (path, query, body) and sends them in process through Django's WSGI handler, against a
database holding traders, orders, fills, positions, signals, regimes and events, once
authenticated as staff and once as a viewer.

Checks on every response:

* ``not_a_server_error``: no 5xx for any input;
* ``status_code_conformance``, ``content_type_conformance``, ``response_headers_conformance``,
  ``response_schema_conformance``: the status is documented and the body matches its schema;
* ``negative_data_rejection``: schema-invalid input is refused with a 4xx;
* ``ignored_auth``: the operation refuses a request without valid credentials;
* ``unsupported_method``: undocumented methods get 405.

Not checked: ``positive_data_acceptance`` (every schema-valid request answered 2xx). The API
rightly refuses schema-valid requests that conflict with the platform's state with a 400 and a
message: a duplicate trader name, a credential id that does not exist, RUN on a running
trader, LIVE without a credential.

Deterministic (``derandomize``) and bounded (``max_examples`` per operation and phase; about a
minute of CPU for the whole API on this machine).
"""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import resolve
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIRequestFactory, force_authenticate
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.factories import UserFactory, seed_platform, staff_user

# Per operation and generation phase. Staff reach every code path; a viewer is refused most
# writes early, so fewer examples cover its paths.
STAFF_EXAMPLES = 15
VIEWER_EXAMPLES = 10
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth, unsupported_method]


def fuzz_settings(max_examples: int) -> settings:
    return settings(max_examples=max_examples, derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


def served_schema() -> dict:
    """``GET /api/schema/`` as JSON, through the URL resolver and the real view, as staff. No
    database is needed, so this runs at collection time and each operation becomes a test."""
    request = APIRequestFactory().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    force_authenticate(request, user=get_user_model()(username="schema-reader", is_staff=True))
    response = resolve("/api/schema/").func(request)
    response.render()
    assert response.status_code == 200, response.content[:300]
    return json.loads(response.content)


TOKENS = {"staff": "f" * 40, "viewer": "e" * 40}   # created per test by ``platform_data``


def fuzz_schema(role: str, *, coverage: bool):
    # The coverage phase sends every boundary case the schema defines (hundreds for a large
    # body): run it as staff, who reach every code path; a viewer gets examples and fuzzing.
    config = schemathesis.Config.from_dict({"phases": {"coverage": {"enabled": coverage}}})
    loaded = schemathesis.openapi.from_dict(served_schema(), config=config)
    loaded.app = get_wsgi_application()

    @loaded.auth(refresh_interval=None)   # tokens live in the test's transaction: never cache them
    class TokenAuth:
        def get(self, case, ctx):
            return TOKENS[role]

        def set(self, case, data, ctx):
            case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}

    # drf-spectacular's own schema view ignores an unknown ?lang= instead of refusing it; it is
    # third-party code and serves no data, so it is left out.
    return loaded.exclude(path="/api/schema/")


staff_schema = fuzz_schema("staff", coverage=True)
viewer_schema = fuzz_schema("viewer", coverage=False)


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """schemathesis calls the WSGI handler directly, which sends ``request_started`` /
    ``request_finished`` and so ``close_old_connections``: inside the test's transaction that
    closes the connection (a no-op on SQLite's in-memory database, fatal on PostgreSQL). Django's
    own test client disconnects it for the same reason; so does this."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def platform_data(db):
    boss = staff_user(username="fuzz-staff")
    Token.objects.create(key=TOKENS["staff"], user=boss)
    Token.objects.create(key=TOKENS["viewer"], user=UserFactory(username="fuzz-viewer"))
    seed_platform(boss, traders=3, events=120, snapshots_per_trader=20, signals_per_trader=8, orders_per_trader=4,
                  regimes=10)


def test_the_served_schema_lists_the_api():
    paths = served_schema()["paths"]
    for path in ("/api/traders/", "/api/traders/{id}/", "/api/events/", "/api/orders/", "/api/fills/",
                 "/api/positions/", "/api/signals/", "/api/regimes/", "/api/profiles/", "/api/metrics/",
                 "/api/kill-switch/", "/api/traders/{id}/reset-guard/"):
        assert path in paths, path
    assert len(list(staff_schema.get_all_operations())) >= 30


@pytest.mark.django_db
@staff_schema.parametrize()
@fuzz_settings(STAFF_EXAMPLES)
def test_api_fuzz_as_staff(case, platform_data):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.django_db
@viewer_schema.parametrize()
@fuzz_settings(VIEWER_EXAMPLES)
def test_api_fuzz_as_viewer(case, platform_data):
    case.call_and_validate(checks=CHECKS)
