"""A local fake exchange HTTP server (127.0.0.1 only) serving recorded JSON responses.

Routes are ``(METHOD, path)`` -> a queue of ``Reply`` objects or a callable; the last queued
reply repeats. Every request is recorded (method, path, query, headers, JSON body) so tests can
assert what was sent and how often.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass
class Reply:
    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: str | None = None          # sent verbatim instead of JSON (malformed-body tests)


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    raw_query: str
    headers: dict[str, str]
    body: Any


Handler = Callable[[Recorded], Reply]


class FakeExchangeServer:
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list[Reply] | Handler] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw_body = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw_body) if raw_body else None
                except ValueError:
                    body = raw_body.decode()
                rec = Recorded(self.command, parts.path, parse_qs(parts.query), parts.query,
                               dict(self.headers.items()), body)
                reply = server._next(rec)
                if reply.delay:
                    time.sleep(reply.delay)
                payload = (reply.raw if reply.raw is not None else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_DELETE = do_PUT = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, method: str, path: str, *replies: Reply | Handler) -> None:
        if len(replies) == 1 and callable(replies[0]):
            self.routes[(method, path)] = replies[0]  # type: ignore[assignment]
        else:
            self.routes[(method, path)] = list(replies)  # type: ignore[arg-type]

    def _next(self, rec: Recorded) -> Reply:
        with self._lock:
            self.requests.append(rec)
            route = self.routes.get((rec.method, rec.path))
            if route is None:
                return Reply({"error": {"name": "not_found", "message": f"no route {rec.path}"}}, 404)
            if callable(route):
                return route(rec)
            return route.pop(0) if len(route) > 1 else route[0]

    def calls(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def __enter__(self) -> FakeExchangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FakeClock:
    """A clock that only moves when something sleeps (or the test advances it)."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
