"""A stand-in for a remote model provider on loopback, speaking the OpenAI chat-completions
wire format: it answers every request with a short text and counts what reached it. A check
points a second server at it (`RAMPARTS_MODEL=openai:…`, `OPENAI_BASE_URL`) to see which
tenants' messages a remote endpoint in a given region receives, and with which API key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ModelStub", "model_stub"]

_ANSWER = json.dumps(
    {"choices": [{"message": {"role": "assistant", "content": "the stand-in model answers"}}]}
).encode()


class ModelStub:
    """What reached the stand-in: one entry per chat-completions request (its messages), and
    the Authorization header each came with (`authorizations`, in the same order)."""

    def __init__(self) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()

    def note(self, body: bytes, authorization: str | None = None) -> None:
        try:
            messages = json.loads(body).get("messages", [])
        except (ValueError, AttributeError):
            messages = []
        with self._lock:
            self.requests.append(messages if isinstance(messages, list) else [])
            self.authorizations.append(authorization)

    def authorizations_of(self, text: str) -> list[str | None]:
        """The Authorization header of each request whose messages hold `text`."""
        with self._lock:
            return [
                authorization
                for messages, authorization in zip(self.requests, self.authorizations, strict=True)
                if text in json.dumps(messages)
            ]

    def count(self) -> int:
        with self._lock:
            return len(self.requests)


@contextmanager
def model_stub() -> Iterator[tuple[ModelStub, str]]:
    """The stand-in, running: what reached it, and its base URL (`OPENAI_BASE_URL`)."""
    seen = ModelStub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.note(self.rfile.read(min(length, 10_000_000)), self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(_ANSWER)))
            self.end_headers()
            self.wfile.write(_ANSWER)

        def log_message(self, *_: Any) -> None:  # quiet: the drill reports what it saw
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
