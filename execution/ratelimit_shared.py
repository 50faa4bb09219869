"""Rate-limit and ban state shared by every worker process of one account [EX-4].

``CacheLimitState`` keeps it in a Django cache: with ``REDIS_URL`` the default cache is Redis,
otherwise the database cache table (quantweb/settings.py, CACHES), so the state is common to
every process on the same database. Shared are

* the venue's ban (HTTP 418) of the account,
* a group's 429 back-off and "nothing left this second" (``Remaining-Req``),
* the request budget: fixed windows of ``burst / rate`` seconds holding at most ``burst``
  requests per (account, group); a request reserves a slot in the first window with room, counted
  with ``cache.incr`` (atomic on Redis; on the database cache a rare lost update lets one extra
  request through, which the venue's own 429 then catches).

A store that fails (Redis down) never stops trading: the limiter falls back to its process-local
state and a warning is logged. Keys hold the account's fingerprint, never a key.
"""

from __future__ import annotations

import logging
import math
import time

from django.core.cache import caches

logger = logging.getLogger(__name__)

PREFIX = "qw-rl"
MAX_WINDOWS_AHEAD = 32          # beyond that the caller's max_wait refuses the request anyway


class CacheLimitState:
    """``execution.engine.ratelimit.SharedLimitState`` on a Django cache alias."""

    def __init__(self, alias: str = "default") -> None:
        self.alias = alias
        self._warned_at = 0.0

    def __repr__(self) -> str:
        return f"CacheLimitState({self.alias!r})"

    @property
    def _cache(self):
        return caches[self.alias]

    def _failed(self, what: str) -> None:
        if time.monotonic() - self._warned_at > 60:       # at most once a minute
            self._warned_at = time.monotonic()
            logger.warning("shared rate-limit state unavailable (%s); using this process's limits only", what,
                           exc_info=True)

    def _get_float(self, key: str) -> float:
        try:
            return float(self._cache.get(key) or 0.0)
        except Exception:
            self._failed("read")
            return 0.0

    def _raise_to(self, key: str, until: float) -> None:
        try:
            if until > float(self._cache.get(key) or 0.0):
                ttl = max(1, math.ceil(until - time.time()) + 5) if until > time.time() else 3600
                self._cache.set(key, until, timeout=ttl)
        except Exception:
            self._failed("write")

    def banned_until(self, account_id: str) -> float:
        return self._get_float(f"{PREFIX}:ban:{account_id}")

    def ban(self, account_id: str, until: float) -> None:
        self._raise_to(f"{PREFIX}:ban:{account_id}", until)

    def blocked_until(self, account_id: str, group: str) -> float:
        return self._get_float(f"{PREFIX}:block:{account_id}:{group}")

    def block(self, account_id: str, group: str, until: float) -> None:
        self._raise_to(f"{PREFIX}:block:{account_id}:{group}", until)

    def take(self, account_id: str, group: str, now: float, rate: float, burst: float) -> float:
        """Reserve a slot in the first window (this one or a later one) that is not full yet;
        the wait is until that window starts. A later window's count includes the reservation,
        so concurrent processes queue instead of all waking at once."""
        window = max(burst / rate, 0.001)
        first = math.floor(now / window)
        capacity = max(1, int(burst))
        try:
            for index in range(first, first + MAX_WINDOWS_AHEAD):
                key = f"{PREFIX}:n:{account_id}:{group}:{index}"
                self._cache.add(key, 0, timeout=max(2, math.ceil(window * (MAX_WINDOWS_AHEAD + 2))))
                if self._cache.incr(key) <= capacity:
                    return max(0.0, index * window - now)
        except ValueError:                 # expired between add and incr: treat as a fresh window
            return 0.0
        except Exception:
            self._failed("count")
            return 0.0
        return (first + MAX_WINDOWS_AHEAD) * window - now


def install() -> None:
    """Make the process-wide limiter registry (the adapters' default) share its state."""
    from django.conf import settings

    from execution.engine.ratelimit import default_registry

    if getattr(settings, "QUANTWEB_SHARED_RATELIMIT", True):
        default_registry().share(CacheLimitState(settings.QUANTWEB_RATELIMIT_CACHE))
