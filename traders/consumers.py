"""Read-only websocket for live updates [UI-5, RT-2].

Access [issue 21 #4]: login is checked in connect(), and again while the socket is open: on a
push when the last check is older than ``QUANTWEB_WS_ACCESS_CHECK_SECONDS`` and by a timer at
that interval, so a socket never outlives its access by more than that. Logging out ends the
sockets of that session at once (``user_logged_out`` -> the session's group). Close codes:

* 4400: a bad query string;
* 4401: not logged in, logged out, session gone, or the account deactivated;
* 4403: the user may no longer see the trader the socket streams (``?trader=ID``).

What streams: staff get every trader; others their own traders' rows and platform-wide ones
(no trader: kill switch, regime). Another user's trader is refused at connect (4403).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from importlib import import_module
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from traders.realtime import LIVE_GROUP, equity_payload, event_payload, relay, trader_group

BACKLOG = 200
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
DEFAULT_ACCESS_CHECK_SECONDS = 10.0


def access_check_seconds() -> float:
    return float(getattr(settings, "QUANTWEB_WS_ACCESS_CHECK_SECONDS", DEFAULT_ACCESS_CHECK_SECONDS))


def session_group(session_key: str) -> str:
    """The channel group of one login session (a digest: the key itself stays out of the layer)."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def end_session_sockets(sender, request, user, **kwargs) -> None:
    """``user_logged_out`` receiver: close this session's websockets now (the timer is the
    backstop when the channel layer does not reach the process holding the socket)."""
    import logging

    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    key = getattr(getattr(request, "session", None), "session_key", None)
    layer = get_channel_layer()
    if not key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(key), {"type": "access.revoked", "code": CLOSE_UNAUTHENTICATED})
    except Exception:  # logout must never fail because of the live channel
        logging.getLogger(__name__).warning("could not notify websockets of a logout", exc_info=True)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/live/`` streams the user's traders' events and equity; ``?trader=ID`` narrows to one.

    ``?after=EVENT_ID&after_equity=SNAPSHOT_ID`` first replays what the page missed between
    rendering and connecting; the browser de-duplicates by id.
    """

    group: str | None = None
    session_group_name: str | None = None
    visible: set[int] | None = None     # trader ids this user may see; None: every trader (staff)
    checked_at: float = 0.0
    closed: bool = False
    _watch: asyncio.Task | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.trader_id = int(query["trader"][0]) if "trader" in query else None
            after = int(query.get("after", ["0"])[0])
            after_equity = int(query.get("after_equity", ["0"])[0])
        except ValueError:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        code = await self._check_access()
        if code is not None:
            await self.close(code=code)
            return
        self.group = trader_group(self.trader_id) if self.trader_id else LIVE_GROUP
        await self.channel_layer.group_add(self.group, self.channel_name)
        key = self._session_key()
        if key:
            self.session_group_name = session_group(key)
            await self.channel_layer.group_add(self.session_group_name, self.channel_name)
        relay.ensure_running()
        await self.accept()
        self._watch = asyncio.get_running_loop().create_task(self._watch_access())
        for payload in await self._backlog(after, after_equity):
            await self.send_json(payload)

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
        for group in (self.group, self.session_group_name):
            if group:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        """Read-only: browsers send nothing that changes state."""

    async def live_message(self, message: dict) -> None:
        if self.closed:
            return
        if time.monotonic() - self.checked_at >= access_check_seconds():
            code = await self._check_access()
            if code is not None:
                await self._end(code)
                return
        payload = message["payload"]
        if self._may_see(payload.get("trader_id")):
            await self.send_json(payload)

    async def access_revoked(self, message: dict) -> None:
        await self._end(int(message.get("code", CLOSE_UNAUTHENTICATED)))

    # -- access -----------------------------------------------------------------------------

    def _may_see(self, trader_id) -> bool:
        return trader_id is None or self.visible is None or trader_id in self.visible

    def _session_key(self) -> str | None:
        session = self.scope.get("session")
        return getattr(session, "session_key", None) if session is not None else None

    async def _end(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            await self.close(code=code)
            await self.disconnect(code)

    async def _watch_access(self) -> None:
        try:
            while not self.closed:
                await asyncio.sleep(max(access_check_seconds(), 0.05))
                code = await self._check_access()
                if code is not None:
                    await self._end(code)
                    return
        except asyncio.CancelledError:
            pass

    async def _check_access(self) -> int | None:
        code, visible = await self._access()
        self.visible, self.checked_at = visible, time.monotonic()
        return code

    @database_sync_to_async
    def _access(self) -> tuple[int | None, set[int] | None]:
        """(close code or None, the trader ids this user may see) from the database, now."""
        from django.contrib.auth import get_user, get_user_model

        from traders.models import Trader
        from traders.permissions import may_see_trader, visible_trader_ids

        key = self._session_key()
        if key:
            # The session as it is now: gone after a logout, or flushed after a password change.
            store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
            user = get_user(SimpleNamespace(session=store))
        elif self.scope.get("session") is not None:
            user = None      # a session without a key: never logged in
        else:                # no session middleware (a test or an internal caller): the account only
            user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        if user is None or not user.is_authenticated or user.pk != self.user_id or not user.is_active:
            return CLOSE_UNAUTHENTICATED, set()
        if self.trader_id is not None:
            trader = Trader.objects.filter(pk=self.trader_id).only("id", "owner_id").first()
            if not may_see_trader(user, trader):
                return CLOSE_FORBIDDEN, set()
        return None, visible_trader_ids(user)

    @database_sync_to_async
    def _backlog(self, after: int, after_equity: int) -> list[dict]:
        from traders.models import EquitySnapshot, Event

        if not after and not after_equity:
            return []
        events = Event.objects.select_related("trader").filter(id__gt=after).order_by("-id")
        snaps = EquitySnapshot.objects.filter(id__gt=after_equity).order_by("-id")
        if self.trader_id:
            events, snaps = events.filter(trader_id=self.trader_id), snaps.filter(trader_id=self.trader_id)
        elif self.visible is not None:
            from django.db.models import Q

            events = events.filter(Q(trader_id__in=self.visible) | Q(trader__isnull=True))
            snaps = snaps.filter(trader_id__in=self.visible)
        payloads = [event_payload(e) for e in reversed(events[:BACKLOG])]
        payloads += [equity_payload(s) for s in reversed(snaps[: BACKLOG * 10])]
        return payloads
