"""Carrying worker events to browsers [RT-2], with and without Redis.

Events and equity snapshots are rows first (they are the action log). Two carriers:

* ``db`` relay (default without Redis): one asyncio task per web process tails the Event and
  EquitySnapshot tables by id and group_sends new rows to that process's channel layer. Works
  with the in-memory layer while the worker is a separate process, and costs one indexed query
  per poll interval however many browsers are connected.
* ``channel`` (default with Redis): the worker group_sends on commit through the shared Redis
  layer; web processes only consume.

Groups: ``live`` (every event) and ``trader.<id>`` (one trader's). Payloads are JSON-safe and
carry ``stream`` ("event" or "equity"); an event's own ``kind`` is its reason code.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)

LIVE_GROUP = "live"


def trader_group(trader_id: int) -> str:
    return f"trader.{trader_id}"


def equity_payload(snapshot) -> dict:
    return {
        "stream": "equity",
        "id": snapshot.pk,
        "trader_id": snapshot.trader_id,
        "ts": snapshot.ts,
        "equity": str(snapshot.equity),
        "return_pct": round(float(snapshot.return_pct), 4),
    }


def regime_payload(row) -> dict:
    return {"stream": "regime", "id": row.pk, "exchange": row.exchange, "bar_ts": row.bar_ts, "label": row.label,
            "regime_score": round(row.regime_score, 2), "confidence": round(row.confidence, 3), "inputs": row.inputs}


def event_payload(event) -> dict:
    return {"stream": "event", **event.as_payload()}


async def _send(layer, payload: dict) -> None:
    message = {"type": "live.message", "payload": payload}
    await layer.group_send(LIVE_GROUP, message)
    if payload.get("trader_id"):
        await layer.group_send(trader_group(payload["trader_id"]), message)


def publish(payload: dict) -> None:
    """Called by workers after commit. A no-op in ``db`` relay mode (the web tails the tables)."""
    if settings.QUANTWEB_EVENT_RELAY != "channel":
        return
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_send)(layer, payload)
    except Exception:  # a dead channel layer must never fail a trading tick
        logger.warning("live push failed; browsers will catch up on reconnect", exc_info=True)


class DatabaseRelay:
    """Tails Event/EquitySnapshot rows and pushes them to the local channel layer."""

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self.last_event_id: int | None = None
        self.last_equity_id: int | None = None
        self.last_regime_ts: int | None = None

    def ensure_running(self) -> None:
        if settings.QUANTWEB_EVENT_RELAY != "db":
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            # A task bound to a loop that is gone would never run again: start afresh.
            self.last_event_id = self.last_equity_id = None
            self._task = loop.create_task(self._run(), name="quantweb-event-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @database_sync_to_async
    def _fetch(self) -> list[dict]:
        from regime.models import MarketRegime
        from traders.models import EquitySnapshot, Event

        if self.last_event_id is None:
            self.last_event_id = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
            self.last_equity_id = EquitySnapshot.objects.order_by("-id").values_list("id", flat=True).first() or 0
            self.last_regime_ts = MarketRegime.objects.order_by("-bar_ts").values_list("bar_ts", flat=True).first() or 0
            return []
        payloads = []
        events = list(Event.objects.select_related("trader").filter(id__gt=self.last_event_id).order_by("id")[:500])
        if events:
            self.last_event_id = events[-1].id
            payloads += [event_payload(e) for e in events]
        snaps = list(EquitySnapshot.objects.filter(id__gt=self.last_equity_id).order_by("id")[:500])
        if snaps:
            self.last_equity_id = snaps[-1].id
            payloads += [equity_payload(s) for s in snaps]
        regime = MarketRegime.objects.filter(bar_ts__gt=self.last_regime_ts).order_by("-bar_ts").first()
        if regime is not None:  # only the newest evaluation matters to a browser
            self.last_regime_ts = regime.bar_ts
            payloads.append(regime_payload(regime))
        return payloads

    async def _run(self) -> None:
        layer = get_channel_layer()
        while True:
            try:
                for payload in await self._fetch():
                    await _send(layer, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("event relay poll failed; retrying", exc_info=True)
            await asyncio.sleep(settings.QUANTWEB_RELAY_POLL_SECONDS)


relay = DatabaseRelay()
