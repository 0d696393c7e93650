"""Security headers, CORS, problem+json and request rules, over real HTTP."""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Literal

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.services import QuoteService
from ramparts.routes import Exempt, declares
from tests.conftest import libpq
from tests.db.test_rls import seed_tenant

PROBLEM = "application/problem+json"
REQUIRED_HEADERS = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
ALLOWED = "https://app.example"
PUBLIC = declares(Exempt.PUBLIC)


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in REQUIRED_HEADERS.items():
        assert response.headers.get(name) == value, name
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "camera=()" in response.headers["permissions-policy"]


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:ramparts:problem:{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert "Traceback" not in response.text
    assert_security_headers(response)
    return dict(body)


# What the runtime's own messages say; an answer in the product's words says none of these.
RUNTIME_WORDS = re.compile(
    r"sys\.|utf-8-sig|Expecting|Input should|pydantic|urn:uuid|Maximum number|KB\.|"
    r"Traceback|Exceeds the limit|codec|surrogates not allowed|`",
    re.IGNORECASE,
)


def assert_our_words(text: str) -> None:
    assert not RUNTIME_WORDS.search(text), text


def _boom_route(app: FastAPI) -> None:
    async def boom() -> None:
        raise RuntimeError("secret-internal-detail")

    app.add_api_route("/boom", boom, openapi_extra=PUBLIC)


EVERY_KIND_OF_RESPONSE = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    ("GET", "/openapi.json", {}, 200),
    ("GET", "/no/such/route", {}, 404),
    ("DELETE", "/healthz", {}, 405),
    ("POST", "/healthz", {"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ("POST", "/healthz", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
    ("GET", "/boom", {}, 500),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), EVERY_KIND_OF_RESPONSE)
@pytest.mark.parametrize("origin", [None, ALLOWED, "https://evil.example"])
def test_security_headers_and_cors_on_every_response(
    serve_app: Callable[..., httpx.Client],
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    origin: str | None,
) -> None:
    client = serve_app(_boom_route, cors_origins=(ALLOWED,))
    request = dict(kwargs)
    headers = dict(request.pop("headers", {}))  # type: ignore[call-overload]
    if origin:
        headers["origin"] = origin
    response = client.request(method, path, headers=headers, **request)  # type: ignore[arg-type]
    assert response.status_code == status
    assert_security_headers(response)
    if status >= 400:
        assert response.headers["content-type"] == PROBLEM
    if origin == ALLOWED:
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in response.headers["vary"]
    else:
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers


def test_server_error_reveals_nothing(serve_app: Callable[..., httpx.Client]) -> None:
    client = serve_app(_boom_route)
    response = client.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "secret-internal-detail" not in response.text
    assert set(body) == {"type", "title", "status"}


def test_preflight_for_allowed_origin(client: httpx.Client) -> None:
    response = client.options(
        "/healthz",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert_security_headers(response)


def test_preflight_for_head_with_a_token(client: httpx.Client) -> None:
    """HEAD is answered wherever GET is; with Authorization a browser asks first."""
    response = client.options(
        "/api/quotes",
        headers={
            "origin": ALLOWED,
            "access-control-request-method": "HEAD",
            "access-control-request-headers": "Authorization",
        },
    )
    assert response.status_code == 204, response.text
    assert "HEAD" in response.headers["access-control-allow-methods"].split(", ")


@pytest.mark.parametrize(
    ("origin", "method", "request_headers"),
    [
        ("https://evil.example", "GET", ""),
        ("null", "GET", ""),
        (ALLOWED, "TRACE", ""),
        (ALLOWED, "POST", "x-forwarded-host"),
        ("https://app.example.evil.example", "GET", ""),
        ("http://app.example", "GET", ""),
    ],
)
def test_preflight_rejected(
    client: httpx.Client, origin: str, method: str, request_headers: str
) -> None:
    headers = {"origin": origin, "access-control-request-method": method}
    if request_headers:
        headers["access-control-request-headers"] = request_headers
    response = client.options("/healthz", headers=headers)
    assert_problem(response, 403, "cors-rejected")
    assert "access-control-allow-origin" not in response.headers


def test_wildcard_origin_never_allows_credentials(
    serve_app: Callable[..., httpx.Client],
) -> None:
    client = serve_app(cors_origins=("*",))
    response = client.get("/healthz", headers={"origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


@pytest.fixture
def row_counts(urls: DatabaseUrls) -> Iterator[Callable[[], dict[str, int]]]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]

        def counts() -> dict[str, int]:
            return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # type: ignore[index]

        yield counts


class QuoteIn(BaseModel):
    title: str


@pytest.fixture
def writing_route(urls: DatabaseUrls) -> Callable[[FastAPI], None]:
    """A route that writes a quote, so "changes nothing" is something a bug could break."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        tenant = seed_tenant(owner, f"w-{uuid.uuid4().hex[:8]}")

    def install(app: FastAPI) -> None:
        async def create(quote: QuoteIn) -> dict[str, str]:
            async with app.state.database.tenant_session(tenant.tenant) as session:
                created = await QuoteService(session).create(
                    tenant_id=tenant.tenant,
                    buyer_id=tenant.user,
                    title=quote.title,
                    currency="EUR",
                    items=[],
                )
            return {"id": str(created.id)}

        app.add_api_route("/probe/quotes", create, methods=["POST"], openapi_extra=PUBLIC)

    return install


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(0, total, 65536):
        yield b" " * 65536


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
BAD_INPUT = [
    pytest.param(b'{"title": ', JSON, {}, 400, "malformed-json", id="truncated-json"),
    pytest.param(b'{"title": "a", "title": "b"}', JSON, {}, 400, "malformed-json", id="dup-keys"),
    pytest.param(b'{"title": NaN}', JSON, {}, 400, "malformed-json", id="nan"),
    pytest.param(b'{"title": "\xff\xfe"}', JSON, {}, 400, "malformed-body", id="not-utf8"),
    pytest.param(b"[" * 1500 + b"]" * 1500, JSON, {}, 422, "json-too-deep", id="deep-nesting"),
    pytest.param(b'{"title": 1', "APPLICATION/JSON", {}, 400, "malformed-json", id="uppercase"),
    pytest.param(b"<xml/>", "application/xml", {}, 415, "unsupported-media-type", id="xml"),
    pytest.param(b'{"title": "x"}', "text/json", {}, 415, "unsupported-media-type", id="text-json"),
    pytest.param(b'{"title": "x"}', None, {}, 415, "unsupported-media-type", id="no-type"),
    pytest.param(
        b'{"title": "x"}',
        f"{JSON}; charset=latin-1",
        {},
        415,
        "unsupported-media-type",
        id="latin-1",
    ),
    pytest.param(
        b'{"title": "x"}',
        JSON,
        {"content-encoding": "gzip"},
        415,
        "unsupported-media-type",
        id="gzip",
    ),
    pytest.param(
        b'{"title": ' + b"9" * 3000 + b"}", JSON, {}, 400, "malformed-json", id="long-int"
    ),
    pytest.param(b'{"title": 1e999}', JSON, {}, 400, "malformed-json", id="overflowing-float"),
    pytest.param(b'\xef\xbb\xbf{"title": "x"}', JSON, {}, 400, "malformed-json", id="bom"),
    pytest.param(b'{"title": "\\ud800"}', JSON, {}, 422, "invalid-request", id="lone-surrogate"),
    pytest.param(b'{"title": "a\\u0000"}', JSON, {}, 422, "invalid-request", id="nul"),
    pytest.param(b"title=a%00", FORM, {}, 422, "invalid-request", id="nul-in-form"),
    pytest.param(b"a=1&" * 1000 + b"a=1", FORM, {}, 400, "malformed-body", id="many-fields"),
    pytest.param(b"x" * 8192, JSON, {}, 413, "body-too-large", id="declared-too-large"),
    pytest.param(None, JSON, {}, 413, "body-too-large", id="streamed-too-large"),
]


@pytest.mark.parametrize(("content", "content_type", "headers", "status", "slug"), BAD_INPUT)
@pytest.mark.parametrize("path", ["/probe/quotes", "/healthz", "/no/such/route"])
def test_bad_input_is_refused_and_changes_nothing(
    serve_app: Callable[..., httpx.Client],
    writing_route: Callable[[FastAPI], None],
    row_counts: Callable[[], dict[str, int]],
    content: bytes | None,
    content_type: str | None,
    headers: dict[str, str],
    status: int,
    slug: str,
    path: str,
) -> None:
    client = serve_app(writing_route, max_body_bytes=4096)
    before = row_counts()
    if content_type is not None:
        headers = {**headers, "content-type": content_type}
    body = content if content is not None else _chunks(4096)  # None: chunked, no length
    problem = assert_problem(client.post(path, content=body, headers=headers), status, slug)
    assert problem.get("detail")
    assert_our_words(str(problem["detail"]))
    assert row_counts() == before
    # The same route does write when the input is good: the comparison above can fail.
    created = client.post("/probe/quotes", json={"title": "Good input"})
    assert created.status_code == 200, created.text
    assert row_counts()["quotes"] == before["quotes"] + 1


def test_form_bodies_must_be_utf8(client: httpx.Client) -> None:
    response = client.post(
        "/healthz",
        content=b"name=\xff",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert_problem(response, 400, "malformed-body")


def test_unknown_route_is_a_problem(client: httpx.Client) -> None:
    problem = assert_problem(client.get("/api/nope"), 404, "not-found")
    assert problem["detail"] == "no resource at /api/nope"


def test_valid_json_passes_the_rules(client: httpx.Client) -> None:
    response = client.post(
        "/healthz",
        content=json.dumps({"ok": [1, 2.5, None]}),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 405, "method-not-allowed")  # past the rules, to the router


def test_readyz_refuses_an_unmigrated_database(
    make_database: Callable[..., DatabaseUrls],
    serve_app: Callable[..., httpx.Client],
) -> None:
    client = serve_app(database_urls=make_database(migrate=False))
    problem = assert_problem(client.get("/readyz"), 503, "not-ready")
    assert "migrate" in str(problem["detail"])
    assert client.get("/healthz").status_code == 200  # liveness does not depend on the DB


def test_openapi_has_no_docs_pages(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "Ramparts"


def _form_target_route(app: FastAPI) -> None:
    async def leads_out() -> Response:
        return Response(
            "ok",
            headers={
                "x-ramparts-form-action": "https://client.example 'unsafe-inline' javascript:x"
            },
        )

    app.add_api_route("/leads-out", leads_out, openapi_extra=PUBLIC)


def test_form_targets_extend_form_action_only_with_origins(
    serve_app: Callable[..., httpx.Client],
) -> None:
    response = serve_app(_form_target_route).get("/leads-out")
    assert "x-ramparts-form-action" not in response.headers
    csp = response.headers["content-security-policy"]
    assert "form-action 'self' https://client.example;" in csp
    assert "unsafe-inline" not in csp
    assert "javascript" not in csp
    assert_security_headers(response)


OTHER_HOSTS = [
    "evil.example",
    "127.0.0.2",
    "127.0.0.1",  # the right host on another port (80)
    "127.0.0.1:1",
    "127.0.0.1.evil.example",
    "evil.example#@127.0.0.1",
    "",
]
# Every kind of route that could build an absolute URL from the request.
HOST_PATHS = [
    "/api/quotes/",  # trailing-slash redirect
    "/api/quotes",
    "/.well-known/openid-configuration",
    "/oauth/authorize",
    "/login",
    "/",
    "/static/app.js",
    "/healthz/",
    "/no/such/route",
]


@pytest.mark.parametrize("host", OTHER_HOSTS)
def test_requests_for_another_host_are_refused(
    serve_module_app: Callable[..., httpx.Client], host: str
) -> None:
    client = serve_module_app()
    for path in HOST_PATHS:
        response = client.get(path, headers={"host": host})
        problem = assert_problem(response, 400, "unknown-host")
        assert "location" not in response.headers, path
        assert problem["detail"] == f"this server answers only as {client.base_url}"
        assert "evil" not in response.text


@pytest.mark.parametrize("host", ["10.0.0.7:8000", "evil.example", ""])
def test_probes_answer_on_any_host(
    serve_module_app: Callable[..., httpx.Client], host: str
) -> None:
    """Orchestrators probe an instance by its own address; the probes build no URL."""
    client = serve_module_app()
    assert client.get("/healthz", headers={"host": host}).json() == {"status": "ok"}
    assert client.get("/readyz", headers={"host": host}).status_code == 200
    assert_problem(client.post("/healthz", headers={"host": host}), 405, "method-not-allowed")


def test_a_request_without_host_is_refused(serve_module_app: Callable[..., httpx.Client]) -> None:
    client = serve_module_app()
    with socket.create_connection((client.base_url.host, client.base_url.port)) as conn:
        conn.sendall(b"GET /api/quotes/ HTTP/1.0\r\n\r\n")  # HTTP/1.0 may omit Host
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"content-type: application/problem+json" in head.lower()
    assert json.loads(body)["type"] == "urn:ramparts:problem:unknown-host"


def test_redirects_point_at_the_configured_origin(
    serve_module_app: Callable[..., httpx.Client],
) -> None:
    client = serve_module_app()
    forged = {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"}
    response = client.get("/api/quotes/?status=draft", headers=forged)
    assert response.status_code == 307
    assert response.headers["location"] == f"{client.base_url}/api/quotes?status=draft"


@pytest.mark.parametrize("host", ["app.example", "APP.example", "app.example:443"])
def test_the_public_host_is_matched_as_a_host(
    serve_app: Callable[..., httpx.Client], host: str
) -> None:
    client = serve_app(public_url="https://app.example")
    response = client.get("/api/quotes/", headers={"host": host})
    assert response.status_code == 307
    assert response.headers["location"] == "https://app.example/api/quotes"
    assert_problem(
        client.get("/api/quotes/", headers={"host": "app.example:8443"}), 400, "unknown-host"
    )


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'{"title": ' + b"9" * 5000 + b"}", "a number is longer than 100 characters"),
        (b'{"title": 1e999}', "a number is too large"),
        (
            b'\xef\xbb\xbf{"title": "x"}',
            "the body starts with a byte order mark; send JSON without one",
        ),
        (b'{"title" "x"}', "a colon was expected at line 1 column 10"),
        (b'{"title": "x",}', "a name in double quotes was expected at line 1 column 15"),
        (b'{"title": "\x01"}', "a string holds a control character; escape it at line 1 column 12"),
        (b'{"title": "\\q"}', "a string holds an invalid escape at line 1 column 12"),
        (b'{"title": "x"} []', "more follows the JSON value at line 1 column 16"),
    ],
)
def test_malformed_json_is_described_in_our_words(
    client: httpx.Client, content: bytes, detail: str
) -> None:
    response = client.post("/api/quotes", content=content, headers={"content-type": JSON})
    problem = assert_problem(response, 400, "malformed-json")
    assert problem["detail"] == detail
    assert_our_words(response.text)


def test_form_limits_are_described_in_our_words(client: httpx.Client) -> None:
    fields = b"&".join(b"f%d=1" % n for n in range(1001))
    response = client.post("/login", content=fields, headers={"content-type": FORM})
    problem = assert_problem(response, 400, "malformed-body")
    assert problem["detail"] == "a form has at most 1000 fields"
    assert_our_words(response.text)


class Shapes(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    count: int | list[int]
    id: uuid.UUID = Field(strict=False)
    kind: Literal["a", "b"]
    name: str = Field(max_length=3, pattern=r"^[a-z]+$")
    when: datetime | None = Field(default=None, strict=False)
    items: list[Annotated[int, Field(ge=1)]] = Field(default=[], max_length=2)


def _shapes_route(app: FastAPI) -> None:
    async def shapes(body: Shapes, limit: Annotated[int, Query(le=10)] = 1) -> None:
        pass

    app.add_api_route("/probe/shapes", shapes, methods=["POST"], openapi_extra=PUBLIC)


def test_validation_errors_are_described_in_our_words(
    serve_app: Callable[..., httpx.Client],
) -> None:
    client = serve_app(_shapes_route)
    body = {
        "count": "3",
        "id": "urn:nope",
        "kind": "c",
        "name": "ABCD",
        "when": "yesterday",
        "items": [2, 0],
        "extra": True,
    }
    response = client.post("/probe/shapes?limit=11", json=body)
    problem = assert_problem(response, 422, "invalid-request")
    assert_our_words(response.text)
    assert "yesterday" not in response.text  # the input is never echoed
    assert problem["errors"] == [
        {"loc": ["query", "limit"], "msg": "must be at most 10"},
        {"loc": ["body", "count"], "msg": "must be a whole number"},
        {"loc": ["body", "count"], "msg": "must be a list"},
        {"loc": ["body", "id"], "msg": "must be a UUID"},
        {"loc": ["body", "kind"], "msg": "must be one of 'a' or 'b'"},
        {"loc": ["body", "name"], "msg": "must have at most 3 characters"},
        {"loc": ["body", "when"], "msg": "must be a date and time (ISO 8601)"},
        {"loc": ["body", "items", "1"], "msg": "must be at least 1"},
        {"loc": ["body", "extra"], "msg": "is not an accepted field"},
    ]
    missing = client.post("/probe/shapes", json={"name": "abc"})
    assert {"loc": ["body", "kind"], "msg": "is required"} in missing.json()["errors"]


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b'["\\udc00"]', "a string holds an unpaired surrogate (\\ud800-\\udfff)"),
        (
            b'{"title": "\\ud83d\\ude00", "x": ["\\ud800 "]}',
            "a string holds an unpaired surrogate (\\ud800-\\udfff)",
        ),
        (b'{"title": "a\\u0000b"}', "a string holds a NUL character"),
        (b'{"\\u0000": 1}', "a string holds a NUL character"),
    ],
)
def test_strings_that_cannot_be_stored_are_refused(
    client: httpx.Client, content: bytes, detail: str
) -> None:
    response = client.post("/api/quotes", content=content, headers={"content-type": JSON})
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["detail"] == detail
    assert (
        client.post("/api/quotes", json={"title": "\U0001f600"}).status_code == 401
    )  # a pair is fine


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://zq9mark.example", "access-control-request-method": "GET"},
        {"origin": ALLOWED, "access-control-request-method": "zq9mark"},
        {
            "origin": ALLOWED,
            "access-control-request-method": "POST",
            "access-control-request-headers": "x-zq9mark",
        },
    ],
    ids=["origin", "method", "headers"],
)
def test_a_rejected_preflight_names_what_is_allowed_without_echoing_what_was_sent(
    client: httpx.Client, headers: dict[str, str]
) -> None:
    """What another site sent (its origin, a method or header names it made up) never comes
    back in the refusal: it could be an attack string meant for whoever reads the answer."""
    response = client.options("/healthz", headers=headers)
    assert_problem(response, 403, "cors-rejected")
    assert "zq9mark" not in response.text.lower()
