"""Market blacklist after repeated order failures [EXE-3]. Pure: timestamps are passed in.

Three failures on one market within ``window_seconds`` blacklist that market for
``ban_seconds`` (10 minutes) for one trader: no new entries there until the ban ends. Exits are
never blocked (a position must always be closable). Failures before the end of a previous ban
do not count again, so a ban ends for good unless three new failures follow.

What counts as a failure is decided by the caller (``execution.services.record_failure``): a
venue rejection, an order error, an order the venue never got; a rate limit or a ban of the
whole account is not a failure of one market (the runtime guard's API error rate covers it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlacklistPolicy:
    max_failures: int = 3
    window_seconds: int = 900
    ban_seconds: int = 600

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window_seconds < 1 or self.ban_seconds < 1:
            raise ValueError("max_failures, window_seconds and ban_seconds must be positive")


@dataclass(frozen=True, slots=True)
class BlacklistDecision:
    banned: bool
    until: int | None            # epoch seconds the ban ends (None when not banned)
    failures_in_window: int
    newly_banned: bool           # this evaluation started the ban


def is_banned(banned_until: int | None, now: float) -> bool:
    return banned_until is not None and now < banned_until


def counted_failures(failure_ts: Sequence[float], now: float, banned_until: int | None,
                     policy: BlacklistPolicy) -> int:
    """Failures inside the window, after the end of the previous ban, not in the future."""
    start = now - policy.window_seconds
    if banned_until is not None:
        start = max(start, banned_until)
    return sum(1 for t in failure_ts if start < t <= now)


def evaluate(failure_ts: Sequence[float], now: float, banned_until: int | None,
             policy: BlacklistPolicy = BlacklistPolicy()) -> BlacklistDecision:
    """The market's state after the failures at ``failure_ts`` (epoch seconds), at ``now``."""
    if is_banned(banned_until, now):
        return BlacklistDecision(True, banned_until, counted_failures(failure_ts, now, None, policy), False)
    count = counted_failures(failure_ts, now, banned_until, policy)
    if count >= policy.max_failures:
        return BlacklistDecision(True, int(now) + policy.ban_seconds, count, True)
    return BlacklistDecision(False, None, count, False)
