"""[UI-5]: every page, API endpoint and websocket requires login. Walks every URL pattern."""

from __future__ import annotations

import re

import pytest
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver

from quantweb.asgi import application

PUBLIC = {"login"}  # the only page an anonymous visitor may see


def _walk(patterns, prefix=""):
    for p in patterns:
        if isinstance(p, URLResolver):
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p


def _concrete(route: str) -> str:
    route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\.", ".")
    route = re.sub(r"\(\?P<\w+>[^)]*\)", "1", route)          # regex groups (DRF routers)
    route = re.sub(r"<(?:\w+:)?(\w+)>", "1", route)          # path converters
    route = route.replace("^", "").replace("$", "").replace("?", "")
    return "/" + route


def all_urls():
    return sorted({(_concrete(route), p.name or "") for route, p in _walk(get_resolver().url_patterns)})


def test_url_walk_finds_the_app_pages():
    names = {name for _, name in all_urls()}
    assert {"dashboard", "traders", "strategy", "config", "trader-detail", "audit-export"} <= names
    assert any(url.startswith("/api/traders") for url, _ in all_urls())


@pytest.mark.django_db
@pytest.mark.parametrize("url,name", all_urls())
def test_anonymous_is_refused_everywhere(client, url, name):
    if name in PUBLIC:
        assert client.get(url).status_code == 200
        return
    for method in ("get", "post"):
        response = getattr(client, method)(url)
        if url.startswith("/api/"):
            assert response.status_code in (401, 403), (method, url, response.status_code)
        elif url.startswith("/admin/"):
            assert response.status_code in (302, 404, 405), (method, url, response.status_code)
            if response.status_code == 302:
                assert "/login/" in response["Location"]
        else:
            assert response.status_code in (302, 405), (method, url, response.status_code)
            if response.status_code == 302:
                assert response["Location"].startswith("/login/"), (url, response["Location"])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
async def test_anonymous_websocket_is_closed():
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    connected, code = await communicator.connect()
    assert not connected
    assert code == 4401
    await communicator.disconnect()
