"""Rate-limit and ban state shared by every worker process of one account [EX-4, issue 21 #8].

Each ``LimiterRegistry`` stands for one worker process; they share state only through
``CacheLimitState`` (the Django cache: Redis with REDIS_URL, else the database cache table;
the test settings' local-memory cache when neither is configured)."""

from __future__ import annotations

import random

import pytest
from django.core.cache import cache

from execution.adapters.base import BannedError
from execution.adapters.upbit import UpbitExchange
from execution.engine.ratelimit import BanActive, LimiterRegistry
from execution.ratelimit_shared import CacheLimitState
from tests.execution.fake_http import FakeClock, FakeExchangeServer, Reply, fixture

NOW = 1717200630.5
ACCESS = "AKupbitACCESSkey0123456789abcdefghijklmn"
SECRET = "SKupbitSECRETkey9876543210zyxwvutsrqponm"


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


def process(rates=None) -> LimiterRegistry:
    """One worker process's registry, sharing through the cache."""
    return LimiterRegistry(rates, rng=random.Random(1), shared=CacheLimitState())


def test_a_ban_seen_by_one_process_stops_the_other():
    a, b = process(), process()
    until = a.get("acct", "default").on_banned(NOW, retry_after=120)
    assert until == NOW + 120
    with pytest.raises(BanActive) as exc:
        b.get("acct", "order").reserve(NOW + 1)          # another group, another process
    assert exc.value.until == NOW + 120
    assert b.banned_until("acct", NOW + 1) == NOW + 120
    assert b.get("acct", "order").reserve(NOW + 121) == 0.0
    assert process().get("other-account", "order").reserve(NOW + 1) == 0.0


def test_a_429_back_off_is_shared():
    a, b = process(), process()
    delay = a.get("acct", "order").on_rate_limited(NOW, retry_after=5)
    assert delay >= 5
    assert b.get("acct", "order").reserve(NOW) == pytest.approx(delay)
    assert b.get("acct", "default").reserve(NOW) == 0.0   # only that group backs off


def test_the_request_budget_is_shared_across_processes():
    rates = {"order": (2.0, 2.0)}                          # 2 requests per 1 s window
    a, b = process(rates), process(rates)
    assert a.get("acct", "order").reserve(NOW) == 0.0
    assert b.get("acct", "order").reserve(NOW) == 0.0
    # Each process alone still has a token; together they spent the window.
    wait = a.get("acct", "order").reserve(NOW)
    assert wait == pytest.approx(1717200631.0 - NOW)       # the next window
    assert b.get("acct", "order").reserve(NOW) == pytest.approx(1717200631.0 - NOW)   # its second slot
    assert a.get("acct", "order").reserve(NOW) == pytest.approx(1717200632.0 - NOW)   # queued, not stampeding
    unshared = LimiterRegistry(rates, rng=random.Random(1))
    assert unshared.get("acct", "order").reserve(NOW) == 0.0


def test_a_failing_store_falls_back_to_local_limits(caplog):
    class Broken(CacheLimitState):
        @property
        def _cache(self):
            raise ConnectionError("redis down")

    registry = LimiterRegistry(rng=random.Random(1), shared=Broken())
    limiter = registry.get("acct", "order")
    assert limiter.reserve(NOW) == 0.0
    limiter.on_banned(NOW, retry_after=10)
    with pytest.raises(BanActive):
        limiter.reserve(NOW + 1)                           # the local ban still holds
    assert "shared rate-limit state unavailable" in caplog.text


def test_two_adapter_processes_share_an_upbit_ban():
    """The real adapter: process A gets a 418; process B's call is not even sent."""
    clock = FakeClock(NOW)
    with FakeExchangeServer() as server:
        server.add("GET", "/v1/accounts", Reply({"error": {"name": "banned"}}, 418, {"Retry-After": "120"}),
                   Reply(fixture("upbit/accounts.json")))

        def make():
            return UpbitExchange(ACCESS, SECRET, base_url=server.url, clock=clock, sleep=clock.sleep,
                                 limiter_registry=process(), rng=random.Random(5), timeout=(1.0, 0.3))

        first, second = make(), make()
        with pytest.raises(BannedError):
            first.balances()
        with pytest.raises(BannedError, match="not sent"):
            second.balances()
        assert len(server.requests) == 1
        clock.now += 121
        assert "KRW" in second.balances()


def test_the_adapters_default_registry_shares_unless_turned_off(settings):
    from execution.engine.ratelimit import default_registry
    from execution.ratelimit_shared import install

    registry = default_registry()
    before = registry.shared
    try:
        settings.QUANTWEB_SHARED_RATELIMIT = True
        install()
        assert isinstance(registry.shared, CacheLimitState) and registry.shared.alias == "default"
    finally:
        registry.share(before)


@pytest.mark.django_db
def test_without_redis_the_state_lives_in_the_database_cache(settings):
    """The embedded default: no REDIS_URL, the database cache table carries the shared state."""
    from django.core.management import call_command

    settings.CACHES = {**settings.CACHES, "rl-db": {"BACKEND": "django.core.cache.backends.db.DatabaseCache",
                                                   "LOCATION": "quantweb_ratelimit_test"}}
    call_command("createcachetable", "quantweb_ratelimit_test", verbosity=0)
    a = LimiterRegistry(rng=random.Random(1), shared=CacheLimitState("rl-db"))
    b = LimiterRegistry(rng=random.Random(1), shared=CacheLimitState("rl-db"))
    a.get("acct", "default").on_banned(NOW, retry_after=60)
    with pytest.raises(BanActive):
        b.get("acct", "default").reserve(NOW + 1)
    delay = b.get("acct2", "order").on_rate_limited(NOW, retry_after=3)
    assert a.get("acct2", "order").reserve(NOW) == pytest.approx(delay)
