"""Market blacklist [EXE-3] (execution.engine.blacklist): three failures in the window ban the
market for 10 minutes. No database."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from execution.engine.blacklist import BlacklistPolicy, evaluate, is_banned

P = BlacklistPolicy()          # 3 failures within 15 min -> 10 min


def test_third_failure_within_the_window_bans_for_ten_minutes():
    assert P.max_failures == 3 and P.ban_seconds == 600
    assert not evaluate([100, 200], 200, None).banned
    d = evaluate([100, 200, 300], 300, None)
    assert d.banned and d.newly_banned and d.until == 900 and d.failures_in_window == 3


def test_failures_outside_the_window_do_not_count():
    d = evaluate([0, 1000, 1500], 1500, None)          # the first is 1500 s old (> 900)
    assert not d.banned and d.failures_in_window == 2


def test_a_running_ban_is_reported_but_not_restarted():
    d = evaluate([100, 200, 300, 400], 400, 900)
    assert d.banned and not d.newly_banned and d.until == 900
    assert is_banned(900, 899) and not is_banned(900, 900) and not is_banned(None, 0)


def test_failures_before_a_ban_ended_do_not_count_again():
    assert not evaluate([100, 200, 300], 950, 900).banned
    d = evaluate([100, 200, 300, 1000, 1100, 1200], 1200, 900)
    assert d.newly_banned and d.until == 1800


@settings(max_examples=300, deadline=None)
@given(stamps=st.lists(st.integers(0, 5000), max_size=12), now=st.integers(0, 5000),
       until=st.one_of(st.none(), st.integers(0, 5000)))
def test_banned_exactly_when_three_counted_failures_or_a_running_ban(stamps, now, until):
    d = evaluate(stamps, now, until, P)
    start = max(now - P.window_seconds, until if until is not None else -1)
    counted = sum(1 for t in stamps if start < t <= now)
    running = until is not None and now < until
    assert d.banned == (running or counted >= 3)
    assert d.newly_banned == (not running and counted >= 3)
    if d.newly_banned:
        assert d.until == now + P.ban_seconds
