"""Each request's ids, log lines and metrics (`ramparts.web.telemetry`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
import structlog
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import LogCapture

from ramparts.routes import Exempt, declares
from ramparts.web.telemetry import request_ids

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"  # pragma: allowlist secret
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize(
    "inbound",
    ["7f3a9c21-0000-4000-8000-000000000001", "lb-Root_1a2b3c4d", "a" * 64],
)
def test_a_well_formed_request_id_is_kept(inbound: str) -> None:
    assert request_ids(inbound, None)[0] == inbound


@pytest.mark.parametrize(
    "inbound",
    [
        "short",  # under 8
        "a" * 65,
        "has space-in-it",
        "id\x00with-nul",
        "-leading-dash",
        "x.y.z-with-dots",  # a JWT's shape
        "jane.doe@example.com",
        "sk_live_51H8xQ2eZvKYlo2C0aBcDeFgHiJkLmNoPq",  # an API key; pragma: allowlist secret
    ],
)
def test_any_other_request_id_is_replaced(inbound: str) -> None:
    replaced, _ = request_ids(inbound, None)
    assert GENERATED.fullmatch(replaced)


def test_a_w3c_traceparent_gives_its_trace_id() -> None:
    assert request_ids(None, f"00-{TRACE}-00f067aa0ba902b7-01")[1] == TRACE


@pytest.mark.parametrize(
    "traceparent",
    [
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",  # the spec says lowercase
        f"01-{TRACE}-00f067aa0ba902b7-01",  # a version we cannot read strictly
        f"00-{'0' * 32}-00f067aa0ba902b7-01",  # the invalid all-zero trace
        f"00-{TRACE}-{'0' * 16}-01",  # the invalid all-zero parent
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",
        "",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(traceparent: str) -> None:
    trace = request_ids(None, traceparent)[1]
    assert GENERATED.fullmatch(trace)
    assert trace != TRACE


def test_each_request_gets_an_id_echoed_on_its_response(client: httpx.Client) -> None:
    given = client.get("/healthz", headers={"x-request-id": "probe-0001-abcd"})
    assert given.headers["x-request-id"] == "probe-0001-abcd"
    made = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3
    assert all(GENERATED.fullmatch(made_id) for made_id in made)
    # Refused before any route (an unknown host): still identified.
    refused = client.get("/api/quotes", headers={"host": "evil.example"})
    assert refused.status_code == 400
    assert GENERATED.fullmatch(refused.headers["x-request-id"])


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    """Every structlog line, with the request's context merged in as configured."""
    capture = LogCapture()
    saved = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture
    finally:
        structlog.configure(**saved)


def _failing_route(app: FastAPI) -> None:
    async def fail() -> None:
        raise RuntimeError("the handler broke")

    app.add_api_route("/test/fail", fail, openapi_extra=declares(Exempt.PUBLIC))


def test_every_line_a_request_logs_carries_its_ids(
    serve_app: Callable[..., httpx.Client], captured: LogCapture
) -> None:
    client = serve_app(_failing_route)
    answer = client.get(
        "/test/fail?token=abc",
        headers={"x-request-id": "failing-0001", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
    )
    assert answer.status_code == 500
    assert answer.headers["x-request-id"] == "failing-0001"
    mine = [e for e in captured.entries if e.get("request_id") == "failing-0001"]
    assert [e["event"] for e in mine] == ["unhandled_error", "request"]
    assert all(e["trace_id"] == TRACE for e in mine)
    assert mine[1] == {
        "event": "request",
        "log_level": "info",
        "request_id": "failing-0001",
        "trace_id": TRACE,
        "method": "GET",
        "route": "/test/fail",  # the template: no query string
        "status": 500,
        "duration_ms": mine[1]["duration_ms"],
    }
    assert mine[1]["duration_ms"] > 0
    # Nothing leaks into the next request's lines.
    client.get("/healthz")
    assert captured.entries[-1]["request_id"] != "failing-0001"


def _count(client: httpx.Client, name: str, **labels: str) -> float:
    exposition = client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_requests_are_counted_by_route_template_and_status_class(client: httpx.Client) -> None:
    quote = {"method": "GET", "route": "/api/quotes/{quote_id}", "status": "4xx"}
    unmatched = {"route": "unmatched", "status": "4xx"}
    before = (
        _count(client, "ramparts_http_requests_total", **quote),
        _count(client, "ramparts_http_requests_total", **unmatched),
        _count(client, "ramparts_http_request_duration_seconds_count", route=quote["route"]),
        _count(client, "ramparts_gate_refusals_total", reason="unauthenticated"),
    )
    for _ in range(3):  # no token: refused by the gate, after routing
        answer = client.get("/api/quotes/7f3a9c21-0000-4000-8000-000000000001")
        assert answer.status_code == 401
    assert client.get("/no/such/page/7f3a9c21").status_code == 404
    after = (
        _count(client, "ramparts_http_requests_total", **quote),
        _count(client, "ramparts_http_requests_total", **unmatched),
        _count(client, "ramparts_http_request_duration_seconds_count", route=quote["route"]),
        _count(client, "ramparts_gate_refusals_total", reason="unauthenticated"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 1, 3, 3]
    exposition = client.get("/metrics").text
    assert "7f3a9c21" not in exposition  # no raw path, no id, ever
