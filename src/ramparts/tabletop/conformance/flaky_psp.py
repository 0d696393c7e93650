"""A failing PSP on loopback, for PAY-3's outbound retries: a proxy in front of the instance's
sandbox PSP that answers the first `failures` attempts of each keyed write it is told to fail
with a 500 (as a PSP having a bad moment does), then forwards the next one. A second server of
the instance pointed at it (`RAMPARTS_PSP_API_BASE`) shows, in what reached the proxy, how the
instance retries: how many attempts, with which `Idempotency-Key`, and the waits between them.

Every request reaches the proxy and is written down (method, path, key, when, what it was
answered); only the writes to `fail_path` are failed. Nothing it forwards is changed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

__all__ = ["Attempt", "FlakyPsp", "flaky_psp"]

#: Headers that belong to one hop, not to the request or answer passed on.
_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"}
)
_FAILED = json.dumps(
    {"error": {"type": "api_error", "message": "the drill's PSP is failing this attempt"}}
).encode()


@dataclass(frozen=True)
class Attempt:
    """One request that reached the proxy."""

    method: str
    path: str
    key: str | None
    at: float  # time.monotonic()
    status: int  # what the proxy answered
    failed: bool  # answered by the proxy's own 500, not forwarded
    body: bytes  # the answer's body


class FlakyPsp:
    """What reached the proxy, and its rule: the first `failures` attempts per key of a POST
    to `fail_path` are answered 500."""

    def __init__(self, upstream: str, fail_path: str, failures: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.fail_path = fail_path
        self.failures = failures
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()

    def writes(self) -> list[Attempt]:
        """The POSTs to `fail_path`, in the order they arrived."""
        with self._lock:
            return [a for a in self.attempts if a.method == "POST" and a.path == self.fail_path]

    def to_fail(self, method: str, path: str, key: str | None) -> bool:
        if method != "POST" or path.split("?", maxsplit=1)[0] != self.fail_path:
            return False
        with self._lock:
            earlier = [a for a in self.attempts if a.path == self.fail_path and a.key == key]
            return len(earlier) < self.failures

    def note(self, attempt: Attempt) -> None:
        with self._lock:
            self.attempts.append(attempt)


@contextmanager
def flaky_psp(upstream: str, fail_path: str, *, failures: int) -> Iterator[tuple[FlakyPsp, str]]:
    """The proxy, running in front of `upstream`: what reached it, and its base URL."""
    seen = FlakyPsp(upstream, fail_path, failures)
    forward = httpx.Client(base_url=seen.upstream, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def _relay(self) -> None:
            arrived = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            key = self.headers.get("Idempotency-Key")
            path = self.path.split("?")[0]
            if seen.to_fail(self.command, self.path, key):
                status, headers, answer = 500, {"Content-Type": "application/json"}, _FAILED
                failed = True
            else:
                sent = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                reply = forward.request(self.command, self.path, content=body, headers=sent)
                status, answer, failed = reply.status_code, reply.content, False
                headers = {
                    k: v
                    for k, v in reply.headers.items()
                    if k.lower() not in _HOP and k.lower() != "content-encoding"
                }
            seen.note(Attempt(self.command, path, key, arrived, status, failed, answer))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_DELETE = _relay  # noqa: N815 - http.server's names

        def log_message(self, *_: Any) -> None:  # quiet: the drill reports what it saw
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        forward.close()
