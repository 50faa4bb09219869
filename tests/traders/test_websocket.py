"""Live updates over /ws/live/ [RT-2]: login checked in connect(), events written by a worker
reach the browser through the database relay (no Redis) or the channel layer (Redis)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from tests.factories import UserFactory, make_trader, staff_user
from traders import realtime
from traders.consumers import LiveConsumer
from traders.models import EquitySnapshot
from traders.services import log_event

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


async def connect(user, path="/ws/live/"):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    assert connected, code
    return communicator


@pytest.fixture
async def boss():
    return await sync_to_async(staff_user)(username="boss")


async def test_worker_event_reaches_browser_through_db_relay(boss, settings):
    settings.QUANTWEB_EVENT_RELAY = "db"
    trader = await sync_to_async(make_trader)(boss)
    communicator = await connect(boss)
    try:
        await communicator.receive_nothing(timeout=0.3)   # the relay has taken its starting point
        event = await sync_to_async(log_event)(trader, "TEST_EVENT", "hello from the worker")
        message = await communicator.receive_json_from(timeout=5)
        assert message["stream"] == "event" and message["id"] == event.pk and message["kind"] == "TEST_EVENT"
        assert message["trader"] == "alpha" and message["message"] == "hello from the worker"
        snap = await sync_to_async(EquitySnapshot.objects.create)(
            trader=trader, ts=1_790_000_040, equity="10100000", cash="10100000", seed_money="10000000")
        message = await communicator.receive_json_from(timeout=5)
        assert message == {"stream": "equity", "id": snap.pk, "trader_id": trader.pk, "ts": 1_790_000_040,
                           "equity": "10100000.0000000000", "return_pct": 1.0}
    finally:
        await communicator.disconnect()
        await realtime.relay.stop()


async def test_trader_filter_and_backlog(boss, settings):
    settings.QUANTWEB_EVENT_RELAY = "db"
    alpha = await sync_to_async(make_trader)(boss, name="alpha")
    beta = await sync_to_async(make_trader)(boss, name="beta")
    first = await sync_to_async(log_event)(alpha, "A1", "alpha one")
    await sync_to_async(log_event)(beta, "B1", "beta one")
    missed = await sync_to_async(log_event)(alpha, "A2", "alpha two")
    communicator = await connect(boss, f"/ws/live/?trader={alpha.pk}&after={first.pk}")
    try:
        message = await communicator.receive_json_from(timeout=5)
        assert (message["id"], message["stream"], message["kind"]) == (missed.pk, "event", "A2")   # replayed, beta filtered out
        assert await communicator.receive_nothing(timeout=0.3)
    finally:
        await communicator.disconnect()
        await realtime.relay.stop()


async def test_channel_mode_pushes_directly(boss, settings):
    """With a cross-process layer (Redis in production, in-memory here) workers group_send."""
    settings.QUANTWEB_EVENT_RELAY = "channel"
    trader = await sync_to_async(make_trader)(boss)
    communicator = await connect(boss)
    try:
        await sync_to_async(realtime.publish)({"stream": "event", "id": 999, "trader_id": trader.pk, "message": "direct"})
        message = await communicator.receive_json_from(timeout=5)
        assert message["id"] == 999 and message["message"] == "direct"
    finally:
        await communicator.disconnect()


async def test_bad_query_is_refused(boss):
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), "/ws/live/?trader=abc")
    communicator.scope["user"] = boss
    connected, code = await communicator.connect()
    assert not connected and code == 4400


async def test_viewer_may_watch(settings):
    settings.QUANTWEB_EVENT_RELAY = "channel"
    viewer = await sync_to_async(UserFactory)(username="viewer")
    communicator = await connect(viewer)
    await communicator.disconnect()
