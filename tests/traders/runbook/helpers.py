"""Builders shared by the runbook tests [AL-3] (the fixtures are in this folder's conftest)."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.execution.fake_http import Reply
from tests.factories import staff_user

TOKEN = "123456789:AAH-fake-bot-token-for-runbook-0123456789"
CHAT = "-1009876543210"
PATH = f"/bot{TOKEN}/sendMessage"
OK = Reply({"ok": True, "result": {"message_id": 1}})
T0 = 1_790_000_040.0


def eager_trader(name: str = "alpha", *, exchange: str = "sim", start: bool = True):
    """A running PAPER trader whose profile enters on almost any signal."""
    from strategies.models import StrategyProfile
    from strategies.services import effective_profile, update_profile
    from traders.models import IntentKind
    from traders.services import create_trader, process_intents, request_intent

    user = staff_user(username=f"boss-{name}")
    profile = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(profile).to_dict()
    params.pop("name")
    if params.get("entry_threshold", 0) > 5.0:
        params.update(entry_threshold=5.0, exit_threshold=1.0)
        update_profile(profile=profile, params=params, user=user, comment="runbook test: enter eagerly")
        profile.refresh_from_db()
    trader = create_trader(user=user, name=name, profile=profile, seed_money=Decimal("10000000"))
    if exchange != "sim":
        type(trader).objects.filter(pk=trader.pk).update(exchange=exchange)
    if start:
        request_intent(user=user, kind=IntentKind.START, trader=trader)
        process_intents()
    trader.refresh_from_db()
    return trader


def texts(server) -> list[str]:
    return [r.body["text"] for r in server.calls("POST", PATH)]


def wait_for_messages(server, count: int, timeout: float = 5.0) -> list[str]:
    """Direct alerts go out from a daemon thread: wait until ``count`` arrived."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(server.calls("POST", PATH)) >= count:
            break
        time.sleep(0.02)
    time.sleep(0.1)   # and make sure no extra one is on its way
    return texts(server)
