"""Pure ASGI middleware for the edge: security headers, strict CORS and request rules.

Pure ASGI (not BaseHTTPMiddleware) so streaming, errors and every response path pass through
the same code, including 404s, problem responses and failures inside other middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from urllib.parse import urlsplit

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ramparts.audit.context import current_request, serving
from ramparts.db.request import REQUEST_TRANSACTION, RequestTransaction
from ramparts.headers import FORM_ACTION_HEADER, PSP_PAGE_HEADER
from ramparts.payments.browser import PspPageSources
from ramparts.problems import Problem, ProblemType, problem_response
from ramparts.routes import SIGNED_BODY_RULES
from ramparts.web.bodies import check_form, check_json
from ramparts.web.cards import check_form_fields, check_json_document, check_path, check_query
from ramparts.web.rules import Rule, check_head, check_identifiers, query_pairs, refuse

__all__ = [
    "CatchAllMiddleware",
    "EdgeMiddleware",
    "HeadMiddleware",
    "PublicHostMiddleware",
    "RequestRulesMiddleware",
    "RequestTransactionMiddleware",
    "StrictCORSMiddleware",
    "psp_page_policy",
]

log = structlog.get_logger(__name__)

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
PERMISSIONS_POLICY = ", ".join(
    [
        "accelerometer=()",
        "camera=()",
        "geolocation=()",
        "gyroscope=()",
        "magnetometer=()",
        "microphone=()",
        "payment=()",
        "usb=()",
        # WebAuthn ceremonies run on our own pages only.
        "publickey-credentials-create=(self)",
        "publickey-credentials-get=(self)",
    ]
)


def _with_form_targets(value: str) -> str:
    origins = [o for o in value.split() if _is_origin(o)]
    return CONTENT_SECURITY_POLICY.replace(
        "form-action 'self'", " ".join(["form-action 'self'", *origins])
    )


def psp_page_policy(sources: PspPageSources) -> str:
    """The payment page's CSP: the strict one, plus the PSP's origins for Stripe.js (its
    script, its frames, its calls) and nothing else (PAY-1)."""
    listed = (*sources.scripts, *sources.frames, *sources.connections)
    bad = [origin for origin in listed if not _is_origin(origin)]
    if bad:
        raise ValueError(f"not an origin: {bad[0]!r}")
    return CONTENT_SECURITY_POLICY.replace(
        "script-src 'self'", " ".join(["script-src 'self'", *sources.scripts])
    ).replace(
        "connect-src 'self'",
        " ".join(["connect-src 'self'", *sources.connections])
        + "; "
        + " ".join(["frame-src", *sources.frames]),
    )


def _is_origin(value: str) -> bool:
    parts = urlsplit(value)
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.netloc)
        and not parts.path
        and not parts.query
        and not parts.fragment
        and ";" not in value
        and "'" not in value
    )


class EdgeMiddleware:
    """Outermost layer: the security headers go on every response, whoever produced it, and
    the audit trail learns which client it is serving."""

    def __init__(
        self, app: ASGIApp, *, hsts_max_age: int, psp_page_policy: str | None = None
    ) -> None:
        self.app = app
        # The payment page's CSP (`psp_page_policy`); None: that page gets the strict one.
        self.psp_page_policy = psp_page_policy
        self.headers = {
            "strict-transport-security": f"max-age={hsts_max_age}; includeSubDomains",
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            # Nothing to other sites; "no-referrer" would also make browsers send
            # `Origin: null` on our own forms' POSTs, which the pages' origin check refuses.
            "referrer-policy": "same-origin",
            "permissions-policy": PERMISSIONS_POLICY,
            "cross-origin-opener-policy": "same-origin",
            "cross-origin-resource-policy": "same-origin",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                form_targets = headers.get(FORM_ACTION_HEADER)
                psp_page = headers.get(PSP_PAGE_HEADER)
                for name, value in self.headers.items():
                    headers[name] = value
                if form_targets is not None:
                    del headers[FORM_ACTION_HEADER]
                    headers["content-security-policy"] = _with_form_targets(form_targets)
                if psp_page is not None:
                    del headers[PSP_PAGE_HEADER]
                    if self.psp_page_policy is not None:
                        headers["content-security-policy"] = self.psp_page_policy
                if "cache-control" not in headers:
                    headers["cache-control"] = "no-store"
            await send(message)

        # Audit events recorded while serving name this client without being told. A page's
        # call to the API in process (`ramparts.web.page.Api`) keeps its browser as the client.
        if current_request() is not None:
            await self.app(scope, receive, send_with_headers)
            return
        client = scope.get("client")
        with serving(client[0] if client else None, Headers(scope=scope).get("user-agent")):
            await self.app(scope, receive, send_with_headers)


class CatchAllMiddleware:
    """No stack trace ever leaves: an escaped exception is logged and answered with a bare 500.

    Installed twice: inside CORS (so an allowed origin can read the error) and just inside the
    header layer (so a failure in CORS itself still gets a problem with the security headers).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled_error", method=scope["method"], path=scope["path"])
            if started:  # too late for a clean answer; the server drops the connection
                raise
            response = problem_response(500, ProblemType.INTERNAL_ERROR)
            await response(scope, receive, send)


DEFAULT_PORTS = MappingProxyType({"http": 80, "https": 443})


class PublicHostMiddleware:
    """Only requests addressed to the configured public host (`RAMPARTS_PUBLIC_URL`) get in.

    Starlette builds absolute URLs from the request: the trailing-slash redirect, `url_for`,
    `request.url`. A made-up `Host` would point them elsewhere (`Location:
    http://evil.example/...`, poisoning caches and links), so any other host, a missing one or
    two of them is a 400 problem. A host that matches is rewritten to the configured spelling
    and the scheme pinned to the configured one, so every URL built says exactly the public
    origin: `X-Forwarded-Proto` cannot change it, and nothing reads `X-Forwarded-Host`.

    The liveness and readiness probes and the Prometheus scrape answer on any host:
    orchestrators, load balancers and scrapers address them by the instance's own address,
    and they build no URL (their host is rewritten all the same).
    """

    PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, *, public_url: str) -> None:
        self.app = app
        parts = urlsplit(public_url)
        self.scheme = parts.scheme
        self.hostname = parts.hostname or ""
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.netloc = parts.netloc.encode()
        self.origin = f"{parts.scheme}://{parts.netloc}"

    def _is_ours(self, host: str) -> bool:
        if not host or any(c in host for c in "/?#@\\ \t"):
            return False
        try:
            parts = urlsplit(f"//{host}")
            port = parts.port or DEFAULT_PORTS[self.scheme]
        except ValueError:  # a port that is not a number
            return False
        return parts.hostname == self.hostname and port == self.port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hosts = Headers(scope=scope).getlist("host")
        ours = len(hosts) == 1 and self._is_ours(hosts[0])
        if not ours and scope["path"] not in self.PROBES:
            response = problem_response(
                400, ProblemType.UNKNOWN_HOST, f"this server answers only as {self.origin}"
            )
            await response(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"host"]
        headers.append((b"host", self.netloc))
        await self.app({**scope, "scheme": self.scheme, "headers": headers}, receive, send)


#: Where the pages people use live: same-origin only (`StrictCORSMiddleware`).
PAGE_PREFIXES = ("/app/", "/pay/", "/login")


def _is_page(path: str) -> bool:
    return path in ("/", "/app") or path.startswith(PAGE_PREFIXES)


class StrictCORSMiddleware:
    """CORS for the configured origins only.

    A disallowed origin gets no `Access-Control-Allow-Origin`, and a rejected preflight gets a
    403 problem. Credentials are allowed only for listed origins, never with the wildcard.
    The web app's pages (and the sign-in pages) are for our own origin only: no origin, listed
    or not, may read them with the user's session cookie (or read their CSRF token).
    """

    ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    ALLOW_HEADERS = frozenset({"authorization", "content-type", "idempotency-key"})
    MAX_AGE = "600"

    def __init__(self, app: ASGIApp, *, origins: tuple[str, ...]) -> None:
        self.app = app
        self.wildcard = "*" in origins
        self.origins = frozenset(o for o in origins if o != "*")

    def _allowed(self, origin: str) -> bool:
        return self.wildcard or origin in self.origins

    def _allow_headers(self, origin: str) -> dict[str, str]:
        if origin in self.origins:
            return {
                "access-control-allow-origin": origin,
                "access-control-allow-credentials": "true",
                "vary": "Origin",
            }
        return {"access-control-allow-origin": "*"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(scope, receive, send, origin, headers)
            return
        if not self._allowed(origin) or _is_page(scope["path"]):
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self._allow_headers(origin).items():
                    if name == "vary":
                        response_headers.add_vary_header(value)
                    else:
                        response_headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, origin: str, headers: Headers
    ) -> None:
        method = headers["access-control-request-method"].upper()
        requested = {
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        }
        # Each reason names what is allowed, never what was sent: another site chose it.
        if not self._allowed(origin):
            reason = "this origin is not allowed"
        elif _is_page(scope["path"]):
            reason = "the web app's pages are for its own origin only"
        elif method not in self.ALLOW_METHODS:
            reason = f"the methods allowed are {', '.join(self.ALLOW_METHODS)}"
        elif not requested <= self.ALLOW_HEADERS:
            reason = f"the request headers allowed are {', '.join(sorted(self.ALLOW_HEADERS))}"
        else:
            reason = None
        if reason is not None:
            response: Response = problem_response(403, ProblemType.CORS_REJECTED, reason)
        else:
            response = Response(
                status_code=204,
                headers={
                    **self._allow_headers(origin),
                    "access-control-allow-methods": ", ".join(self.ALLOW_METHODS),
                    "access-control-allow-headers": ", ".join(sorted(self.ALLOW_HEADERS)),
                    "access-control-max-age": self.MAX_AGE,
                },
            )
        await response(scope, receive, send)


class HeadMiddleware:
    """RFC 9110 section 9.3.2: HEAD is GET without the content. The routes declare GET only, so
    a HEAD request goes on as GET (the same route, authentication, permission and headers,
    `Content-Length` included) and its body is dropped on the way out. Innermost, so the
    outer layers and the logs still see HEAD."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_content(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_content)


class RequestTransactionMiddleware:
    """Each HTTP request gets a place for its tenant transaction (`ramparts.db.request`), and
    the transaction ends as the response starts, before the client learns anything.

    A success (status below 400) commits before its start goes out, so no client ever sees a
    success for work that did not commit: when the commit fails, the answer is a 500 problem
    instead (and the failure is logged). Any other status, an exception, or no response at
    all rolls back. Either way the connection goes back to the pool then, not after the body.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        transaction = RequestTransaction()
        scope[REQUEST_TRANSACTION] = transaction
        replaced = False

        async def send_after_ending(message: Message) -> None:
            nonlocal replaced
            if replaced:  # the app's response, after the problem that replaced it
                return
            if message["type"] == "http.response.start":
                succeeded = message["status"] < 400
                try:
                    await transaction.end(commit=succeeded)
                except Exception:
                    log.exception("request_transaction_failed", path=scope["path"])
                    if succeeded:
                        replaced = True
                        response = problem_response(500, ProblemType.INTERNAL_ERROR)
                        await response(scope, receive, send)
                        return
            await send(message)

        try:
            await self.app(scope, receive, send_after_ending)
        finally:
            await transaction.end(commit=False)


class RequestRulesMiddleware:
    """Rules every request must meet before any route sees it.

    The head first: the URL's length, the headers' count and size, and the characters of the
    path, the query and the identifier headers (`ramparts.web.rules`, each refusal counted by
    its rule). Bodies are capped at `max_body_bytes` (declared or streamed), uncompressed,
    UTF-8, JSON or a form, and JSON must be strict: no duplicate keys (parsers disagree on which
    one wins), no NaN/Infinity, no huge numbers, and within the JSON rules (see
    `ramparts.web.bodies`). Neither the body, the path nor the query string may hold a card
    number (PAY-1, `ramparts.web.cards`). The body is read once here and replayed to the app.
    On `signed_body_paths` (a PSP's webhook) the size, encoding and media type are checked
    here, and the body's content only after the route has verified its signature:
    unauthenticated bytes reach no parser.
    """

    FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})

    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, signed_body_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.signed_body_paths = signed_body_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            # The head first: a request refused there is refused before its body is read.
            check_head(scope)
            path = scope.get("path", "")
            query = query_pairs(scope.get("query_string", b""))
            check_identifiers(path, query)
            check_path(path)
            check_query(query)
            body = await self._read_body(headers, receive)
            if body:
                is_json = self._check_media(headers)
                if scope["path"] in self.signed_body_paths:
                    # The route proves who sent the body before anything parses it, then
                    # runs the rest of these rules (`ramparts.routes.SIGNED_BODY_RULES`).
                    scope[SIGNED_BODY_RULES] = _body_rules(is_json, body)
                else:
                    _check_body(is_json, body)
        except Problem as problem:
            await problem.response()(scope, receive, send)
            return
        if body is None:  # client went away
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes | None:
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Problem(400, ProblemType.BAD_REQUEST, "invalid Content-Length")
            if int(declared) > self.max_body_bytes:
                raise self._too_large()
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                raise self._too_large()
            if not message.get("more_body", False):
                return bytes(body)

    def _too_large(self) -> Problem:
        return refuse(
            Rule.BODY_SIZE,
            413,
            ProblemType.BODY_TOO_LARGE,
            f"the limit is {self.max_body_bytes} bytes",
        )

    def _check_media(self, headers: Headers) -> bool:
        """Refuse a compressed body, a charset other than UTF-8, a media type other than JSON
        or a form; True when it is JSON."""
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            # Compressed bodies would slip past the size limit (a zip bomb) and the checks.
            raise Problem(
                415,
                ProblemType.UNSUPPORTED_MEDIA_TYPE,
                f"content encoding {encoding!r} is not accepted",
            )
        media_type, _, parameters = headers.get("content-type", "").partition(";")
        media_type = media_type.strip().lower()
        charset = _charset(parameters)
        if charset not in {None, "utf-8", "utf8"}:
            raise Problem(
                415,
                ProblemType.UNSUPPORTED_MEDIA_TYPE,
                f"charset {charset!r}; send UTF-8",
            )
        is_json = media_type == "application/json" or media_type.endswith("+json")
        if not is_json and media_type not in self.FORM_TYPES:
            shown = media_type or "none"
            raise Problem(
                415,
                ProblemType.UNSUPPORTED_MEDIA_TYPE,
                f"content type {shown!r}; send application/json",
            )
        return is_json


def _check_body(is_json: bool, body: bytes, *, cards: bool = True) -> None:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, ProblemType.MALFORMED_BODY, "body is not UTF-8") from None
    if is_json:
        document = check_json(text)
        if cards:
            check_json_document(document)
    else:
        check_form(text)
        if cards:
            check_form_fields(text)


def _body_rules(is_json: bool, body: bytes) -> Callable[[], None]:
    """The body's rules for a signed path, run once the route has verified who sent it. No
    card-number rule there: the PSP is where cards are typed, and what its signed events
    carry (a payer's phone number, an address) would be refused by chance, an event the PSP
    then retries until it gives up, and the payment never confirmed."""
    return lambda: _check_body(is_json, body, cards=False)


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None
