"""A small requests-based JSON client for exchange REST APIs [EX-4].

What it guarantees:

* every request goes through the account's ``GroupLimiter`` (token bucket, ``Remaining-Req``,
  429 backoff, 418 ban) before it is sent;
* only idempotent requests (GET, or a caller-declared idempotent call such as Upbit's
  ``/v1/orders/test``) are retried, and only on transient failures (timeouts, connection
  errors, 5xx, 429), with exponential backoff and full jitter;
* a non-idempotent request (order create/cancel) that may have reached the venue (read timeout,
  dropped connection, 5xx) raises ``AmbiguousOrderError``: the caller looks the order up by its
  client id instead of sending it again;
* HTTP status maps to the exceptions of ``execution.adapters.base`` (429 ``RateLimitedError``,
  418 ``BannedError``, 401 ``AuthenticationError``, 5xx/timeouts ``TransientExchangeError``),
  venue-specific error bodies through an ``error_mapper`` hook;
* malformed JSON raises ``ExchangeError`` naming the endpoint;
* messages and log records never carry keys, secrets or bearer tokens (known secrets are
  redacted from anything echoed back, request headers are never logged).

Request signing is a callback invoked per attempt, so a retried request gets a fresh nonce.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode

import requests

from execution.adapters.base import (
    AmbiguousOrderError,
    AuthenticationError,
    BannedError,
    ExchangeError,
    RateLimitedError,
    TransientExchangeError,
)
from execution.engine.ratelimit import BackoffPolicy, BanActive, GroupLimiter, parse_remaining_req

logger = logging.getLogger("quantweb.execution.http")

#: ``signer(hash_source)`` -> extra headers; ``hash_source`` is the un-percent-encoded
#: ``k=v&k2=v2`` form of the query (GET/DELETE) or body (POST) parameters, "" when there are none.
Signer = Callable[[str], Mapping[str, str]]
#: ``error_mapper(status, payload, context)`` -> an exception to raise, or None for the default.
ErrorMapper = Callable[[int, Any, str], ExchangeError | None]

_BEARER = re.compile(r"Bearer\s+[A-Za-z0-9\-_.=]+")
_MAX_ECHO = 300


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    data: Any
    headers: Mapping[str, str]


class Redactor:
    """Replaces known secret strings and bearer tokens in text that may reach a log or error."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _BEARER.sub("Bearer ***", text)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


def encode_params(params: Mapping[str, Any] | None) -> str:
    """URL query for ``params``; list values repeat the key (``states[]=a&states[]=b``)."""
    if not params:
        return ""
    items: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            items.extend((key, _param_str(v)) for v in value)
        else:
            items.append((key, _param_str(value)))
    return urlencode(items)


def _param_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HttpClient:
    """JSON over HTTP for one venue base URL. Thread-safe if the ``requests.Session`` is used
    only for simple calls (``requests`` sessions are shared across threads in practice)."""

    def __init__(
        self,
        base_url: str,
        *,
        venue: str,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_retries: int = 3,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        backoff: BackoffPolicy | None = None,
        max_wait: float = 10.0,
        error_mapper: ErrorMapper | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.venue = venue
        self._session = session or requests.Session()
        self._timeout = timeout
        self._max_retries = max_retries
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._backoff = backoff or BackoffPolicy()
        self._max_wait = max_wait
        self._error_mapper = error_mapper
        self._redact = redactor or Redactor()

    def __repr__(self) -> str:
        return f"HttpClient(venue={self.venue!r}, base_url={self.base_url!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        signer: Signer | None = None,
        limiter: GroupLimiter | None = None,
        idempotent: bool | None = None,
    ) -> HttpResponse:
        method = method.upper()
        if idempotent is None:
            idempotent = method == "GET"
        query = encode_params(params)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        payload = {k: _param_str(v) if not isinstance(v, list) else v for k, v in body.items()
                   if v is not None} if body else None
        data = json.dumps(payload) if payload is not None else None
        hash_source = unquote(encode_params(payload) if payload is not None else query)
        context = f"{self.venue} {method} {path}"

        attempt = 0
        while True:
            self._wait_for_limiter(limiter, context)
            headers = {"Accept": "application/json"}
            if data is not None:
                headers["Content-Type"] = "application/json; charset=utf-8"
            if signer is not None:
                headers.update(signer(hash_source))
            started = self._clock()
            try:
                resp = self._session.request(method, url, data=data, headers=headers, timeout=self._timeout)
            except requests.exceptions.ConnectTimeout as exc:
                error: ExchangeError = TransientExchangeError(f"{context}: connect timeout (request not sent)")
                if self._should_retry(idempotent, attempt, context, error):
                    attempt += 1
                    continue
                raise error from exc
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                kind = "read timeout" if isinstance(exc, requests.exceptions.Timeout) else "connection error"
                if not idempotent:
                    raise AmbiguousOrderError(
                        f"{context}: {kind} after sending; the venue may have accepted it"
                    ) from exc
                error = TransientExchangeError(f"{context}: {kind}")
                if self._should_retry(idempotent, attempt, context, error):
                    attempt += 1
                    continue
                raise error from exc

            now = self._clock()
            logger.debug("%s -> %s (%.0f ms)", context, resp.status_code, (now - started) * 1000.0)
            remaining = parse_remaining_req(resp.headers.get("Remaining-Req"))
            status = resp.status_code

            if status == 418:
                retry_after = _retry_after(resp)
                until = limiter.on_banned(now, retry_after) if limiter is not None else (
                    now + (retry_after or self._backoff.ban_seconds))
                logger.error("%s: banned by the venue (418) until %.0f", context, until)
                raise BannedError(f"{context}: banned by the venue (HTTP 418) until epoch {until:.0f}",
                                  until_ts=until)
            if status == 429:
                retry_after = _retry_after(resp)
                delay = (limiter.on_rate_limited(now, retry_after) if limiter is not None
                         else self._backoff.delay(attempt, self._rng, retry_after))
                error = RateLimitedError(f"{context}: rate limited (HTTP 429)", retry_after=delay)
                logger.warning("%s: rate limited (429), backing off %.2f s", context, delay)
                if idempotent and attempt < self._max_retries:
                    attempt += 1
                    if limiter is None:
                        self._sleep(delay)
                    continue
                raise error
            if limiter is not None:
                limiter.on_response(now, remaining)

            if 200 <= status < 300:
                return HttpResponse(status, self._decode(resp, context), resp.headers)

            error_payload = self._decode_error(resp)
            mapped = self._error_mapper(status, error_payload, context) if self._error_mapper else None
            if mapped is not None:
                raise mapped
            detail = self._detail(error_payload, resp)
            if status >= 500:
                if not idempotent:
                    raise AmbiguousOrderError(f"{context}: HTTP {status} from the venue; the request "
                                              f"may have been processed: {detail}")
                error = TransientExchangeError(f"{context}: HTTP {status}: {detail}")
                if self._should_retry(idempotent, attempt, context, error):
                    attempt += 1
                    continue
                raise error
            if status in (401, 403):
                raise AuthenticationError(f"{context}: HTTP {status}: {detail}")
            raise ExchangeError(f"{context}: HTTP {status}: {detail}")

    def _wait_for_limiter(self, limiter: GroupLimiter | None, context: str) -> None:
        if limiter is None:
            return
        try:
            wait = limiter.reserve(self._clock())
        except BanActive as exc:
            raise BannedError(f"{context}: not sent, venue ban active until epoch {exc.until:.0f}",
                              until_ts=exc.until) from None
        if wait > self._max_wait:
            raise RateLimitedError(f"{context}: not sent, rate-limit wait {wait:.1f} s exceeds "
                                   f"{self._max_wait:.1f} s", retry_after=wait)
        if wait > 0:
            self._sleep(wait)

    def _should_retry(self, idempotent: bool, attempt: int, context: str, error: ExchangeError) -> bool:
        if not idempotent or attempt >= self._max_retries:
            return False
        delay = self._backoff.delay(attempt, self._rng)
        logger.warning("%s: %s; retry %d/%d in %.2f s", context, error, attempt + 1, self._max_retries, delay)
        self._sleep(delay)
        return True

    def _decode(self, resp: requests.Response, context: str) -> Any:
        try:
            return resp.json()
        except ValueError:
            snippet = self._redact(resp.text[:120])
            raise ExchangeError(f"{context}: malformed JSON in HTTP {resp.status_code} response: "
                                f"{snippet!r}") from None

    def _decode_error(self, resp: requests.Response) -> Any:
        try:
            return resp.json()
        except ValueError:
            return None

    def _detail(self, payload: Any, resp: requests.Response) -> str:
        text = json.dumps(payload, ensure_ascii=False) if payload is not None else resp.text
        return self._redact(text[:_MAX_ECHO])

    def redact(self, text: str) -> str:
        return self._redact(text)


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
