"""The websocket follows access [issue 21 #4]: it ends at logout (at once through the logout
signal, and by the periodic check when the session is gone some other way), when the account is
deactivated, and when its user loses access to the trader it streams; non-staff receive only
their own traders' rows. Close codes: 4401 logged out, 4403 no access to the trader."""

from __future__ import annotations

from importlib import import_module

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory, make_trader, staff_user
from traders import realtime
from traders.consumers import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, LiveConsumer
from traders.models import Trader

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture(autouse=True)
def _channel_relay(settings):
    settings.QUANTWEB_EVENT_RELAY = "channel"      # workers push; no table-tailing task in the test
    settings.QUANTWEB_WS_ACCESS_CHECK_SECONDS = 0.2


@sync_to_async
def _setup():
    boss = staff_user(username="boss")
    ann = UserFactory(username="ann", operator=True)
    bob = UserFactory(username="bob", operator=True)
    mine, theirs = make_trader(ann, name="ann-1"), make_trader(bob, name="bob-1")
    return boss, ann, bob, mine, theirs


@sync_to_async
def _login(user) -> tuple[Client, object]:
    """A real login session, as the browser would carry it to the websocket."""
    client = Client()
    client.force_login(user)
    key = client.session.session_key
    store = import_module(django_settings.SESSION_ENGINE).SessionStore(session_key=key)
    store.load()
    return client, store


async def _connect(user, path="/ws/live/", session=None):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    if session is not None:
        communicator.scope["session"] = session
    connected, code = await communicator.connect()
    return communicator, connected, code


async def _closed_with(communicator, timeout=3) -> int:
    message = await communicator.receive_output(timeout=timeout)
    assert message["type"] == "websocket.close", message
    return message.get("code")


async def test_another_users_trader_is_refused_at_connect():
    _boss, ann, _bob, _mine, theirs = await _setup()
    communicator, connected, code = await _connect(ann, f"/ws/live/?trader={theirs.pk}")
    assert not connected and code == CLOSE_FORBIDDEN
    await communicator.wait()


async def test_non_staff_receive_their_own_traders_rows_and_platform_rows():
    boss, ann, _bob, mine, theirs = await _setup()
    ann_ws, connected, _ = await _connect(ann)
    boss_ws, boss_connected, _ = await _connect(boss)
    assert connected and boss_connected
    try:
        for payload in ({"stream": "event", "id": 1, "trader_id": theirs.pk, "message": "bob's"},
                        {"stream": "event", "id": 2, "trader_id": mine.pk, "message": "ann's"},
                        {"stream": "regime", "id": 3, "label": "TREND"}):
            await sync_to_async(realtime.publish)(payload)
        got = [(await ann_ws.receive_json_from(timeout=3))["id"] for _ in range(2)]
        assert got == [2, 3] and await ann_ws.receive_nothing(timeout=0.2)
        assert [(await boss_ws.receive_json_from(timeout=3))["id"] for _ in range(3)] == [1, 2, 3]
    finally:
        await ann_ws.disconnect()
        await boss_ws.disconnect()


async def test_logout_ends_the_sessions_socket_at_once(settings):
    settings.QUANTWEB_WS_ACCESS_CHECK_SECONDS = 600     # the signal alone, not the timer
    _boss, ann, _bob, mine, _theirs = await _setup()
    client, session = await _login(ann)
    communicator, connected, _ = await _connect(ann, f"/ws/live/?trader={mine.pk}", session=session)
    assert connected
    response = await sync_to_async(client.post)(reverse("logout"))
    assert response.status_code == 302
    assert await _closed_with(communicator) == CLOSE_UNAUTHENTICATED
    await communicator.wait()


async def test_a_session_gone_without_the_signal_ends_at_the_next_check():
    _boss, ann, _bob, _mine, _theirs = await _setup()
    _client, session = await _login(ann)
    communicator, connected, _ = await _connect(ann, session=session)
    assert connected
    assert await communicator.receive_nothing(timeout=0.4)        # still allowed: stays open
    await sync_to_async(session.delete)()                          # e.g. expired or cleared on the server
    assert await _closed_with(communicator) == CLOSE_UNAUTHENTICATED
    await communicator.wait()


async def test_a_deactivated_account_is_disconnected():
    _boss, ann, _bob, _mine, _theirs = await _setup()
    communicator, connected, _ = await _connect(ann)
    assert connected
    await sync_to_async(get_user_model().objects.filter(pk=ann.pk).update)(is_active=False)
    assert await _closed_with(communicator) == CLOSE_UNAUTHENTICATED
    await communicator.wait()


async def test_losing_the_streamed_trader_closes_the_socket():
    _boss, ann, bob, mine, _theirs = await _setup()
    communicator, connected, _ = await _connect(ann, f"/ws/live/?trader={mine.pk}")
    assert connected
    await sync_to_async(Trader.objects.filter(pk=mine.pk).update)(owner=bob)     # given to someone else
    assert await _closed_with(communicator) == CLOSE_FORBIDDEN
    await communicator.wait()


async def test_a_trader_given_away_drops_out_of_the_all_traders_stream(settings):
    _boss, ann, bob, mine, _theirs = await _setup()
    communicator, connected, _ = await _connect(ann)
    assert connected
    try:
        await sync_to_async(realtime.publish)({"stream": "event", "id": 1, "trader_id": mine.pk})
        assert (await communicator.receive_json_from(timeout=3))["id"] == 1
        await sync_to_async(Trader.objects.filter(pk=mine.pk).update)(owner=bob)
        assert await communicator.receive_nothing(timeout=0.5)       # a check has run meanwhile
        await sync_to_async(realtime.publish)({"stream": "event", "id": 2, "trader_id": mine.pk})
        await sync_to_async(realtime.publish)({"stream": "event", "id": 3, "trader_id": None})
        assert (await communicator.receive_json_from(timeout=3))["id"] == 3   # 2 filtered out, still open
    finally:
        await communicator.disconnect()
