"""Rate limiting per endpoint group [EX-4] (pure: the clock and the RNG are passed in).

One ``GroupLimiter`` per (account, endpoint group), shared by every trader that uses the same
account through a ``LimiterRegistry``. A limiter combines

* a token bucket with the venue's documented rate (Upbit: quotation groups 10/s per IP,
  exchange ``default`` 30/s, ``order`` 8/s, ``order-cancel-all`` 1 per 2 s),
* the venue's own count: Upbit's ``Remaining-Req: group=default; min=1800; sec=29`` header caps
  the bucket at what the server says is left in the current second,
* exponential backoff with full jitter after a 429 (or the server's ``Retry-After`` if longer),
* a ban state after a 418: every group of the account refuses to call until the ban ends.

Callers ask ``reserve(now)`` for the delay before they may send; the limiter never sleeps
itself. Waits are reservations: concurrent callers get increasing delays instead of all waking
up at once. All methods are thread-safe.

Every worker process has its own limiters; a ``SharedLimitState`` (injected, e.g.
``execution.ratelimit_shared.CacheLimitState`` on Redis or the database) makes the ban, the
429 back-off and the request budget of one account common to all of them.
"""

from __future__ import annotations

import math
import random
import re
import threading
from dataclasses import dataclass, field
from typing import Protocol

#: Upbit's documented limits (requests per second, burst). Quotation groups are per IP.
UPBIT_GROUP_RATES: dict[str, tuple[float, float]] = {
    "market": (10.0, 10.0),
    "candle": (10.0, 10.0),
    "trade": (10.0, 10.0),
    "ticker": (10.0, 10.0),
    "orderbook": (10.0, 10.0),
    "default": (30.0, 30.0),
    "order": (8.0, 8.0),
    "order-test": (8.0, 8.0),
    "order-cancel-all": (0.5, 1.0),
}

_REMAINING_REQ = re.compile(r"group=([A-Za-z0-9_\-]+);\s*min=(\d+);\s*sec=(\d+)")


class BanActive(RuntimeError):
    """The venue banned this account (HTTP 418); no call may be made before ``until``."""

    def __init__(self, until: float) -> None:
        super().__init__(f"venue ban active until epoch {until:.0f}")
        self.until = until


@dataclass(frozen=True, slots=True)
class RemainingReq:
    """Parsed ``Remaining-Req`` header: requests left in the current minute and second.

    Upbit's limits are per second; ``minute`` is kept for monitoring only."""

    group: str
    minute: int
    second: int


def parse_remaining_req(header: str | None) -> RemainingReq | None:
    """Parse Upbit's ``Remaining-Req`` header; None when absent or malformed (never raises)."""
    if not header:
        return None
    match = _REMAINING_REQ.search(header)
    if match is None:
        return None
    return RemainingReq(match.group(1), int(match.group(2)), int(match.group(3)))


@dataclass(slots=True)
class TokenBucket:
    """Classic token bucket. ``tokens`` may go negative: that is the queue of reservations."""

    rate: float
    capacity: float
    tokens: float = math.nan
    updated: float = math.nan

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        if math.isnan(self.tokens):
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if math.isnan(self.updated):
            self.updated = now
            return
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.updated = now

    def reserve(self, now: float, n: float = 1.0) -> float:
        """Take ``n`` tokens; return how long to wait (0 when they were available)."""
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def cap(self, now: float, available: float) -> None:
        """Lower the tokens to what the server says is left (never raises them)."""
        self._refill(now)
        self.tokens = min(self.tokens, available)


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``,
    never less than ``floor`` and never less than the server's ``Retry-After``."""

    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.1
    ban_seconds: float = 60.0      # used when a 418 carries no Retry-After
    max_ban_seconds: float = 3600.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt)))
        delay = max(self.floor, rng.uniform(0.0, ceiling))
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay


class SharedLimitState(Protocol):
    """Rate-limit state shared by every process that uses one account. Times are epoch seconds
    from the caller's clock. Implementations never raise (a dead store means local limits only)."""

    def banned_until(self, account_id: str) -> float: ...

    def ban(self, account_id: str, until: float) -> None: ...

    def blocked_until(self, account_id: str, group: str) -> float: ...

    def block(self, account_id: str, group: str, until: float) -> None: ...

    def take(self, account_id: str, group: str, now: float, rate: float, burst: float) -> float:
        """Count one request in the group's shared window; return how long to wait (0: send now)."""
        ...


@dataclass(slots=True)
class AccountState:
    """What every group of one account shares: the 418 ban."""

    banned_until: float = 0.0
    bans: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class GroupLimiter:
    """Rate-limit state of one endpoint group of one account."""

    def __init__(self, account_id: str, group: str, rate: float, burst: float, account: AccountState,
                 rng: random.Random, policy: BackoffPolicy, rng_lock: threading.Lock,
                 shared: SharedLimitState | None = None) -> None:
        self.account_id = account_id
        self.group = group
        self._rate, self._burst = rate, burst
        self._shared = shared
        self._bucket = TokenBucket(rate, burst)
        self._account = account
        self._rng = rng
        self._rng_lock = rng_lock
        self._policy = policy
        self._lock = threading.Lock()
        self._blocked_until = 0.0
        self._consecutive_429 = 0
        self.last_remaining: RemainingReq | None = None

    def __repr__(self) -> str:
        return f"GroupLimiter(account={self.account_id!r}, group={self.group!r})"

    def banned_until(self, now: float) -> float | None:
        with self._account.lock:
            until = self._account.banned_until
        if self._shared is not None:
            until = max(until, self._shared.banned_until(self.account_id))
        return until if until > now else None

    def reserve(self, now: float) -> float:
        """Seconds to wait before sending one request; raises ``BanActive`` during a ban."""
        until = self.banned_until(now)
        if until is not None:
            raise BanActive(until)
        with self._lock:
            wait = max(self._bucket.reserve(now), self._blocked_until - now, 0.0)
        if self._shared is not None:
            blocked = self._shared.blocked_until(self.account_id, self.group)
            wait = max(wait, blocked - now, self._shared.take(self.account_id, self.group, now, self._rate,
                                                              self._burst))
        return wait

    def on_response(self, now: float, remaining: RemainingReq | None) -> None:
        """A request succeeded: reset the 429 streak and honour the server's remaining count."""
        with self._lock:
            self._consecutive_429 = 0
            if remaining is None:
                return
            self.last_remaining = remaining
            self._bucket.cap(now, float(remaining.second))
            if remaining.second <= 0:
                # Nothing left in this second: wait for the next one to start.
                self._blocked_until = max(self._blocked_until, math.floor(now) + 1.0)
                if self._shared is not None:
                    self._shared.block(self.account_id, self.group, self._blocked_until)

    def on_rate_limited(self, now: float, retry_after: float | None = None) -> float:
        """A 429 arrived: block the group for a jittered, growing delay; returns that delay."""
        with self._lock:
            with self._rng_lock:
                delay = self._policy.delay(self._consecutive_429, self._rng, retry_after)
            self._consecutive_429 += 1
            self._blocked_until = max(self._blocked_until, now + delay)
            self._bucket.cap(now, 0.0)
            blocked_until = self._blocked_until
        if self._shared is not None:       # every process using the account backs off
            self._shared.block(self.account_id, self.group, blocked_until)
        return delay

    def on_banned(self, now: float, retry_after: float | None = None) -> float:
        """A 418 arrived: ban the whole account; returns the epoch time the ban ends."""
        with self._account.lock:
            self._account.bans += 1
            if retry_after is not None and retry_after > 0:
                seconds = retry_after
            else:
                seconds = min(self._policy.max_ban_seconds,
                              self._policy.ban_seconds * 2 ** (self._account.bans - 1))
            self._account.banned_until = max(self._account.banned_until, now + seconds)
            until = self._account.banned_until
        if self._shared is not None:       # the venue bans the account, not this process
            self._shared.ban(self.account_id, until)
        return until

    @property
    def consecutive_rate_limits(self) -> int:
        return self._consecutive_429


class LimiterRegistry:
    """Process-wide limiters keyed by (account id, group), so traders sharing an account share
    its budget. ``account_id`` must not be a secret: adapters pass a fingerprint of the key."""

    def __init__(self, rates: dict[str, tuple[float, float]] | None = None, *,
                 default_rate: tuple[float, float] = (10.0, 10.0), rng: random.Random | None = None,
                 policy: BackoffPolicy | None = None, shared: SharedLimitState | None = None) -> None:
        self._rates = dict(UPBIT_GROUP_RATES if rates is None else rates)
        self.shared = shared
        self._default_rate = default_rate
        self._rng = rng if rng is not None else random.Random(0)
        self._rng_lock = threading.Lock()
        self._policy = policy or BackoffPolicy()
        self._lock = threading.Lock()
        self._accounts: dict[str, AccountState] = {}
        self._groups: dict[tuple[str, str], GroupLimiter] = {}

    def get(self, account_id: str, group: str) -> GroupLimiter:
        key = (account_id, group)
        with self._lock:
            limiter = self._groups.get(key)
            if limiter is None:
                account = self._accounts.setdefault(account_id, AccountState())
                rate, burst = self._rates.get(group, self._default_rate)
                limiter = GroupLimiter(account_id, group, rate, burst, account, self._rng, self._policy,
                                       self._rng_lock, self.shared)
                self._groups[key] = limiter
            return limiter

    def banned_until(self, account_id: str, now: float) -> float | None:
        with self._lock:
            account = self._accounts.get(account_id)
        until = 0.0
        if account is not None:
            with account.lock:
                until = account.banned_until
        if self.shared is not None:
            until = max(until, self.shared.banned_until(account_id))
        return until if until > now else None

    def share(self, shared: SharedLimitState | None) -> None:
        """Share state through ``shared`` from now on (existing limiters included)."""
        with self._lock:
            self.shared = shared
            for limiter in self._groups.values():
                limiter._shared = shared


_default_registry = LimiterRegistry()


def default_registry() -> LimiterRegistry:
    """The process-wide registry used by adapters when none is injected."""
    return _default_registry
