"""Read-only websocket for live updates. Login is checked in connect() [UI-5]."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from traders.realtime import LIVE_GROUP, equity_payload, event_payload, relay, trader_group

BACKLOG = 200


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/live/`` streams every trader's events and equity; ``?trader=ID`` narrows to one.

    ``?after=EVENT_ID&after_equity=SNAPSHOT_ID`` first replays what the page missed between
    rendering and connecting; the browser de-duplicates by id.
    """

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.trader_id = int(query["trader"][0]) if "trader" in query else None
            after = int(query.get("after", ["0"])[0])
            after_equity = int(query.get("after_equity", ["0"])[0])
        except ValueError:
            await self.close(code=4400)
            return
        self.group = trader_group(self.trader_id) if self.trader_id else LIVE_GROUP
        await self.channel_layer.group_add(self.group, self.channel_name)
        relay.ensure_running()
        await self.accept()
        for payload in await self._backlog(after, after_equity):
            await self.send_json(payload)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Read-only: browsers send nothing that changes state."""

    async def live_message(self, message: dict) -> None:
        await self.send_json(message["payload"])

    @database_sync_to_async
    def _backlog(self, after: int, after_equity: int) -> list[dict]:
        from traders.models import EquitySnapshot, Event

        if not after and not after_equity:
            return []
        events = Event.objects.select_related("trader").filter(id__gt=after).order_by("-id")
        snaps = EquitySnapshot.objects.filter(id__gt=after_equity).order_by("-id")
        if self.trader_id:
            events, snaps = events.filter(trader_id=self.trader_id), snaps.filter(trader_id=self.trader_id)
        payloads = [event_payload(e) for e in reversed(events[:BACKLOG])]
        payloads += [equity_payload(s) for s in reversed(snaps[: BACKLOG * 10])]
        return payloads
