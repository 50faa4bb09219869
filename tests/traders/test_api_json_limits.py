"""Deep or huge JSON request bodies are a 400 with a message, never a 500 [issue 21 #8]."""

from __future__ import annotations

import json

import pytest

from quantweb.parsers import json_depth_exceeds

pytestmark = pytest.mark.django_db

URL = "/api/credentials/"


def _post(client, body: str):
    return client.generic("POST", URL, body, content_type="application/json")


def test_100k_deep_nesting_is_a_400(admin_client):
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        response = _post(admin_client, body)
        assert response.status_code == 400
        assert response.json() == {"detail": "JSON nested too deeply (limit 64 levels)."}


def test_a_huge_body_is_a_400(admin_client, settings):
    settings.QUANTWEB_API_MAX_JSON_BYTES = 10_000
    response = _post(admin_client, json.dumps({"label": "x" * 20_000}))
    assert response.status_code == 400
    assert response.json() == {"detail": "JSON body too large (limit 10000 bytes)."}


def test_ordinary_json_still_parses(admin_client):
    response = _post(admin_client, json.dumps({"exchange": "upbit", "label": "ok", "api_key": "k" * 20,
                                                "api_secret": "s" * 20}))
    assert response.status_code == 201


def test_brackets_inside_strings_do_not_count():
    assert not json_depth_exceeds(json.dumps({"a": "[" * 1000}), 3)
    assert json_depth_exceeds("[[[[", 3)
    assert not json_depth_exceeds('["\\"[[[["]', 1)
