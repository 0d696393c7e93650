"""What each request leaves for operators: a request id and a trace id on every log line it
causes, one log line when it is answered, and the request metrics (`ramparts.metrics`).

The request id is the client's `X-Request-ID` when it is well formed (`REQUEST_ID`) and holds
nothing that looks like a secret or personal data, otherwise a new one; either way it is
echoed on the response. The trace id is a W3C `traceparent`'s (version 00, parsed strictly:
https://www.w3.org/TR/trace-context/#traceparent-header), or a new trace's. A page's call to
the API in process (`ramparts.web.page.Api`) is part of its page's request: it keeps its ids.

The log line and the metrics name the route template (`/api/items/{item_id}`), never the
raw path (ids, and whatever a scanner puts there) nor the query string (authorization codes,
state): an unmatched path is `unmatched`.
"""

from __future__ import annotations

import re
import secrets
import time
from contextvars import ContextVar

import structlog
from prometheus_client.metrics import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ramparts.detectors import find_sensitive
from ramparts.metrics import LATENCY, REQUESTS

__all__ = [
    "REQUEST_ID",
    "RouteRecorderMiddleware",
    "TelemetryMiddleware",
    "request_ids",
]

log = structlog.get_logger(__name__)

#: An inbound request id we keep: letters, digits, `-` and `_`, 8 to 64 of them (a UUID, a
#: load balancer's id). Anything else would let a client put what it likes in our logs.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
#: Where the telemetry layer leaves its record in the scope, for `RouteRecorderMiddleware`.
TELEMETRY = "ramparts.telemetry"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"

#: The ids of the request being served in this context (a page's in-process API call keeps
#: its page's).
_current: ContextVar[tuple[str, str] | None] = ContextVar("ramparts_request_ids", default=None)


def request_ids(request_id: str | None, traceparent: str | None) -> tuple[str, str]:
    """The request id and trace id a request is served under, from its headers' values."""
    if (
        request_id is None
        or not REQUEST_ID.fullmatch(request_id)
        or find_sensitive(request_id)  # a token or an address pasted as an id
    ):
        request_id = secrets.token_hex(16)
    trace = _TRACEPARENT.fullmatch(traceparent) if traceparent is not None else None
    if trace is None or trace[1] == _ZERO_TRACE or trace[2] == _ZERO_SPAN:
        return request_id, secrets.token_hex(16)
    return request_id, trace[1]


class _Record:
    """What the layers inside tell the telemetry layer: the scope the router matched in,
    and the status answered."""

    __slots__ = ("routed", "status")

    def __init__(self) -> None:
        self.routed: Scope | None = None
        self.status: int | None = None

    def route(self) -> str:
        routed = self.routed
        if routed is None:  # refused before routing: a host, CORS or request rule
            return UNMATCHED
        route = routed.get("route")
        if route is not None:
            return str(route.path)
        if routed.get("endpoint") is not None:  # a mounted app: the static files
            return f"{routed.get('root_path', '')}/{{path}}"
        return UNMATCHED


class TelemetryMiddleware:
    """Outermost layer: ids into the log context, the response's `X-Request-ID`, then the
    request's log line and metrics once it has been answered (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._metrics: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ids = _current.get()
        if ids is None:
            request_id = traceparent = None
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    request_id = value.decode("latin-1")
                elif name == b"traceparent":
                    traceparent = value.decode("latin-1")
            ids = request_ids(request_id, traceparent)
        record = _Record()
        scope[TELEMETRY] = record
        echoed = ids[0]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", echoed)
            await send(message)

        ids_token = _current.set(ids)
        log_tokens = structlog.contextvars.bind_contextvars(request_id=ids[0], trace_id=ids[1])
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._answered(scope["method"], record, time.perf_counter() - started)
            structlog.contextvars.reset_contextvars(**log_tokens)
            _current.reset(ids_token)

    def _answered(self, method: str, record: _Record, seconds: float) -> None:
        route = record.route()
        status = record.status
        shown = method if method in METHODS else "other"
        key = (shown, route, f"{status // 100}xx" if status is not None else "none")
        metrics = self._metrics.get(key)
        if metrics is None:  # label lookups cost more than the counting itself
            metrics = self._metrics[key] = (REQUESTS.labels(*key), LATENCY.labels(route))
        metrics[0].inc()
        metrics[1].observe(seconds)
        log.info(
            "request",
            method=shown,
            route=route,
            status=status,
            duration_ms=round(seconds * 1000, 2),
        )


class RouteRecorderMiddleware:
    """Innermost layer: hands the telemetry layer the scope the router will match in (the
    layers between copy the scope, so the route it matched is not seen outside)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = scope.get(TELEMETRY)
        if record is not None:
            record.routed = scope
        await self.app(scope, receive, send)
