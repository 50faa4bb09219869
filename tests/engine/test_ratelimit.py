"""Rate limiter: token buckets, Remaining-Req, 429 backoff with jitter, 418 bans, sharing."""

from __future__ import annotations

import random
import threading

import pytest

from execution.engine.ratelimit import (
    UPBIT_GROUP_RATES,
    BackoffPolicy,
    BanActive,
    LimiterRegistry,
    RemainingReq,
    TokenBucket,
    parse_remaining_req,
)


def registry(seed: int = 7) -> LimiterRegistry:
    return LimiterRegistry(rng=random.Random(seed))


def test_upbit_documented_rates():
    assert UPBIT_GROUP_RATES["ticker"][0] == 10.0
    assert UPBIT_GROUP_RATES["default"][0] == 30.0
    assert UPBIT_GROUP_RATES["order"][0] == 8.0
    assert UPBIT_GROUP_RATES["order-cancel-all"][0] == 0.5


@pytest.mark.parametrize(("header", "expected"), [
    ("group=default; min=1800; sec=29", RemainingReq("default", 1800, 29)),
    ("group=order-cancel-all; min=29; sec=0", RemainingReq("order-cancel-all", 29, 0)),
    ("group=market;min=573;sec=9", RemainingReq("market", 573, 9)),
    ("", None),
    (None, None),
    ("garbage", None),
    ("group=default; min=x; sec=1", None),
])
def test_parse_remaining_req(header, expected):
    assert parse_remaining_req(header) == expected


def test_token_bucket_burst_then_rate():
    bucket = TokenBucket(rate=10.0, capacity=10.0)
    assert [bucket.reserve(100.0) for _ in range(10)] == [0.0] * 10
    assert bucket.reserve(100.0) == pytest.approx(0.1)
    assert bucket.reserve(100.0) == pytest.approx(0.2)   # reservations queue up
    assert bucket.reserve(100.5) == pytest.approx(0.0)   # 5 tokens refilled, 2 were owed
    with pytest.raises(ValueError):
        TokenBucket(rate=0.0, capacity=1.0)


def test_bucket_never_refills_beyond_capacity():
    bucket = TokenBucket(rate=8.0, capacity=8.0)
    bucket.reserve(0.0)
    bucket.reserve(1000.0)
    assert bucket.tokens == pytest.approx(7.0)


def test_group_limiter_paces_to_documented_rate():
    limiter = registry().get("acct", "order")
    waits = [limiter.reserve(50.0) for _ in range(10)]
    assert waits[:8] == [0.0] * 8
    assert waits[8] == pytest.approx(1 / 8)
    assert waits[9] == pytest.approx(2 / 8)


def test_cancel_all_group_allows_one_per_two_seconds():
    limiter = registry().get("acct", "order-cancel-all")
    assert limiter.reserve(0.0) == 0.0
    assert limiter.reserve(0.0) == pytest.approx(2.0)


def test_remaining_req_caps_the_bucket():
    limiter = registry().get("acct", "default")
    limiter.reserve(10.0)
    limiter.on_response(10.0, RemainingReq("default", 1700, 2))
    assert limiter.reserve(10.0) == 0.0
    assert limiter.reserve(10.0) == 0.0
    assert limiter.reserve(10.0) > 0.0
    assert limiter.last_remaining == RemainingReq("default", 1700, 2)


def test_remaining_zero_blocks_until_next_second():
    limiter = registry().get("acct", "default")
    limiter.on_response(10.25, RemainingReq("default", 1700, 0))
    assert limiter.reserve(10.25) == pytest.approx(0.75)


def test_429_backoff_grows_with_jitter_and_resets_after_success():
    policy = BackoffPolicy(base=0.5, cap=30.0, floor=0.0)
    reg = LimiterRegistry(rng=random.Random(1), policy=policy)
    limiter = reg.get("acct", "default")
    delays = [limiter.on_rate_limited(0.0) for _ in range(6)]
    ceilings = [0.5 * 2 ** i for i in range(6)]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 6                 # jittered, not a fixed schedule
    assert limiter.consecutive_rate_limits == 6
    assert limiter.reserve(0.0) == pytest.approx(max(delays))
    limiter.on_response(100.0, None)
    assert limiter.consecutive_rate_limits == 0


def test_429_backoff_is_reproducible_for_a_seed():
    a = LimiterRegistry(rng=random.Random(42)).get("x", "default")
    b = LimiterRegistry(rng=random.Random(42)).get("x", "default")
    assert [a.on_rate_limited(0.0) for _ in range(4)] == [b.on_rate_limited(0.0) for _ in range(4)]


def test_429_honours_retry_after_when_longer():
    limiter = registry().get("acct", "default")
    assert limiter.on_rate_limited(0.0, retry_after=12.0) == 12.0
    assert limiter.reserve(1.0) == pytest.approx(11.0)


def test_418_bans_every_group_of_the_account_only():
    reg = registry()
    order = reg.get("acct", "order")
    default = reg.get("acct", "default")
    other = reg.get("other", "default")
    until = order.on_banned(100.0, retry_after=30.0)
    assert until == 130.0
    with pytest.raises(BanActive) as exc:
        default.reserve(110.0)
    assert exc.value.until == 130.0
    assert other.reserve(110.0) == 0.0
    assert reg.banned_until("acct", 110.0) == 130.0
    assert default.reserve(130.0) == 0.0          # ban over


def test_418_without_retry_after_escalates():
    policy = BackoffPolicy(ban_seconds=60.0, max_ban_seconds=200.0)
    limiter = LimiterRegistry(rng=random.Random(0), policy=policy).get("acct", "default")
    assert limiter.on_banned(0.0) == 60.0
    assert limiter.on_banned(60.0) == 180.0
    assert limiter.on_banned(180.0) == 380.0      # capped at 200 s


def test_registry_shares_limiters_by_account_and_group():
    reg = registry()
    assert reg.get("a", "order") is reg.get("a", "order")
    assert reg.get("a", "order") is not reg.get("b", "order")
    assert reg.get("a", "unknown-group").reserve(0.0) == 0.0
    assert reg.banned_until("never-seen", 0.0) is None


def test_concurrent_reservations_are_serialised():
    """Forty threads on an 8/s group: each reservation is unique, the schedule has no overlap."""
    limiter = registry().get("acct", "order")
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(40)

    def worker() -> None:
        barrier.wait()
        w = limiter.reserve(0.0)
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = [0.0] * 8 + [i / 8 for i in range(1, 33)]
    assert sorted(waits) == pytest.approx(expected)
