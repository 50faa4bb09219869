"""Fixtures of the runbook tests [AL-3]: an isolated runbook directory, a small sim market, a
local fake Telegram server and a configured alert channel."""

from __future__ import annotations

import pytest

from tests.execution.fake_http import FakeExchangeServer
from tests.traders.runbook.helpers import CHAT, OK, PATH, TOKEN


@pytest.fixture(autouse=True)
def runbook_dir(settings, tmp_path):
    """Every runbook test gets its own runbook directory and a process with no remembered channel."""
    from traders import alerts

    settings.QUANTWEB_RUNBOOK_DIR = str(tmp_path / "runbook")
    alerts.forget_channel()
    alerts.direct_log.clear()
    yield tmp_path / "runbook"
    alerts.forget_channel()


@pytest.fixture
def sim(settings):
    settings.QUANTWEB_SIM_WARMUP_BARS = 1600
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    from execution import marketdata

    marketdata._view_cache.clear()
    yield settings
    marketdata._view_cache.clear()


@pytest.fixture
def telegram(settings):
    with FakeExchangeServer() as server:
        server.add("POST", PATH, OK)
        settings.TELEGRAM_API_URL = server.url
        settings.ALERT_HTTP_TIMEOUT = 2.0
        yield server


@pytest.fixture
def channel(db):
    from traders.models import EventLevel
    from traders.models_alerts import AlertSettings

    cfg = AlertSettings(token=TOKEN, chat_id=CHAT, min_level=EventLevel.WARN)
    cfg.save()
    return cfg
