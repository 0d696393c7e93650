"""Attacks on the web app's sessions, forms, sign-in and API door, against a live server.

Each test tries what an attacker would (another site's form, a tampered cookie, a path that
leaves `/api`, a crafted `next`, a stolen code, two page loads at once) and asserts what the
server did about it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.quotes.roles import BUYER
from ramparts.routes import ACTION_KEY, Exempt
from ramparts.web.pages import WEB_CLIENT_ID
from ramparts.web.sessions import _Handle
from tests.audit.trail import head, recorded
from tests.identity.helpers import provision
from tests.test_routes import api_routes
from tests.web.sessions_helpers import authorized_web, page_csrf, sign_in_web, web_app

COOKIE = "ramparts_session"
BROWSER = "Mozilla/5.0 (attack test browser)"


def signed_in(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, **overrides: object
) -> tuple[httpx.Client, str]:
    """A browser signed in to a fresh live app; its client and the page's CSRF token."""
    client = web_app(serve_app, urls, kms, **overrides)
    client.headers["user-agent"] = BROWSER
    home = sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    assert home.status_code == 200, home.text
    return client, page_csrf(home)


def raw_get(client: httpx.Client, target: str, headers: dict[str, str]) -> httpx.Response:
    """A GET of exactly `target` (httpx would otherwise resolve `..` and `.` itself)."""
    request = client.build_request("GET", "/", headers=headers)
    request.extensions["target"] = target.encode()
    return client.send(request)


def tokens_held(urls: DatabaseUrls, cookie: str) -> dict[str, str] | None:
    """What the session row of `cookie` holds, opened with the cookie (as the server does)."""
    handle = _Handle.parse(cookie)
    assert handle is not None

    async def run() -> bytes | None:
        owner = Database(urls.owner, pool_size=1)
        try:
            async with owner.engine.connect() as connection:
                sealed: bytes | None = await connection.scalar(
                    text("SELECT sealed FROM browser_sessions WHERE id_hash = :id"),
                    {"id": handle.id_hash},
                )
                return sealed
        finally:
            await owner.dispose()

    sealed = asyncio.run(run())
    return None if sealed is None else handle.open(sealed)


def still_signed_in(client: httpx.Client) -> bool:
    return client.get("/app").status_code == 200


# --- CSRF on the page forms -----------------------------------------------------------------


FORGED_FORMS: list[dict[str, object]] = [
    {},  # no token at all
    {"data": {"csrf": ""}},
    {"headers": {"x-csrf-token": ""}},
    {"data": {"csrf": "A" * 43}},
    {"params": {"csrf": "<the token>"}},  # in the query string: not where it is read
    {"json": {"csrf": "<the token>"}},  # a JSON body: not a form, not read
    {"content": "csrf=<the token>", "headers": {"content-type": "text/plain"}},
    {"data": {"csrf": "<the token>"}, "headers": {"origin": "null"}},
    {"data": {"csrf": "<the token>"}, "headers": {"origin": "https://evil.example"}},
    {"data": {"csrf": "<the token>"}, "headers": {"origin": "<our origin, https>"}},
    {"data": {"csrf": "<the token>"}, "headers": {"origin": "<our origin>:1"}},
    # A wrong header wins over a right field: the header is what scripts send.
    {"data": {"csrf": "<the token>"}, "headers": {"x-csrf-token": "nope"}},
]


def test_a_page_form_without_our_token_and_origin_changes_nothing(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    ours = str(client.base_url).rstrip("/")

    def filled(value: object) -> object:
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        if isinstance(value, str):
            return (
                value.replace("<the token>", csrf)
                .replace("<our origin, https>", ours.replace("http:", "https:"))
                .replace("<our origin>", ours)
            )
        return value

    for attempt in FORGED_FORMS:
        refused = client.post("/app/logout", **filled(attempt))  # type: ignore[arg-type]
        # 415: the edge takes no body but a form or JSON on any path.
        assert refused.status_code in (403, 415), (attempt, refused.text)
        assert still_signed_in(client), attempt


def test_a_page_form_with_our_token_and_no_origin_is_accepted(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """No Origin (an old browser) and another site's Referer: the token alone decides, and
    another site cannot read it."""
    client, csrf = signed_in(serve_app, urls, kms)
    out = client.post(
        "/app/logout", data={"csrf": csrf}, headers={"referer": "https://evil.example/"}
    )
    assert out.status_code == 303
    assert not still_signed_in(client)


# --- The API door ---------------------------------------------------------------------------


def test_the_door_refuses_every_method_without_the_csrf_header(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        for sent in (
            {},
            {"x-csrf-token": ""},
            {"x-csrf-token": "A" * 43},
            {"content-type": "application/x-www-form-urlencoded"},
            {"origin": str(client.base_url).rstrip("/")},
        ):
            body, headers = None, sent
            if method != "GET":  # a form, as another site's would be, with the token field
                body = f"csrf={csrf}"
                headers = {"content-type": "application/x-www-form-urlencoded", **sent}
            answer = client.request(
                method, "/app/api/quotes", params={"csrf": csrf}, content=body, headers=headers
            )
            assert answer.status_code == 403, (method, headers)
            assert answer.content == b""


DOOR_ESCAPES = [
    "/app/api/../oauth/userinfo",
    "/app/api/%2e%2e/oauth/userinfo",
    "/app/api/.%2E/oauth/userinfo",
    "/app/api/quotes/../../oauth/userinfo",
    "/app/api/quotes/..%2f..%2foauth%2fuserinfo",
    "/app/api/quotes/%2e%2e/%2e%2e/oauth/userinfo",
    "/app/api//oauth/userinfo",
    "/app/api/%2foauth/userinfo",
    "/app/api/http://evil.example/x",
    "/app/api/%68ttp:%2F%2Fevil.example/x",
    "/app/api/quotes\\..\\..\\oauth\\userinfo",
    "/app/api/quotes%3Fx=1/../../oauth/userinfo",
    "/app/api/../webhooks/psp",
    "/app/api/../app/api/quotes",
    "/app/api/../app",
    "/app/api/app/api/quotes",
    "/app/api/../healthz",
]


def test_the_door_leads_only_to_the_api(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    for target in DOOR_ESCAPES:
        answer = raw_get(client, target, {"x-csrf-token": csrf})
        # Refused at the door (404, no body) or a missing /api/... route: never what the
        # other route would answer.
        assert answer.status_code == 404, (target, answer.status_code, answer.text)
        assert answer.content == b"" or answer.json()["detail"].startswith("no resource at /api/")
    # A NUL on the way is refused at the edge, before any door (PLT-3).
    answer = raw_get(client, "/app/api/quotes%00/../../oauth/userinfo", {"x-csrf-token": csrf})
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:ramparts:problem:control-character"


def test_the_door_forwards_no_header_but_content_type_and_idempotency_key(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """A page script cannot swap the session's token for another, nor smuggle a query."""
    client, csrf = signed_in(serve_app, urls, kms)
    # A CR LF in a query parameter is refused at the edge, before any door (PLT-3).
    injected = client.get(
        "/app/api/quotes", params={"status": "x\r\nX-Evil: 1"}, headers={"x-csrf-token": csrf}
    )
    assert injected.status_code == 400
    assert injected.json()["type"] == "urn:ramparts:problem:control-character"
    assert "x-evil" not in injected.headers
    answer = client.get(
        "/app/api/quotes",
        params={"status": "x X-Evil: 1", "limit": "1&limit=2"},
        headers={
            "x-csrf-token": csrf,
            "authorization": "Bearer not-a-token",  # would be a 401 if forwarded
            "x-forwarded-host": "evil.example",
            "x-forwarded-proto": "https",
            "host": urlsplit(str(client.base_url)).netloc,
        },
    )
    assert answer.status_code in (200, 422), answer.text
    assert "x-evil" not in answer.headers
    assert "location" not in answer.headers
    assert "evil.example" not in answer.text


# --- Sign-in: next, callback, login CSRF, fixation -----------------------------------------


OFF_SITE = [
    "/\\evil.example",
    "/\\/evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%5C/evil.example",
    "http:/evil.example",
    "https:evil.example",
    "///evil.example",
    "/app/../\\evil.example",
]


def test_the_callback_never_redirects_off_site(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    for next_path in OFF_SITE:
        client.cookies.clear()
        if not next_path.isprintable():  # a tab, CR or LF: refused at the edge (PLT-3)
            started = client.get("/app/login", params={"next": next_path})
            assert started.status_code == 400, next_path
            assert started.json()["type"] == "urn:ramparts:problem:control-character"
            continue
        callback = client.get(authorized_web(client, provision(urls, kms), next_path))
        assert callback.status_code == 303, next_path
        location = callback.headers["location"]
        # What a browser would follow: a path of ours (WHATWG parsers treat `\` as `/` and
        # drop tabs and newlines, so neither may reach the second character).
        assert location.startswith("/"), (next_path, location)
        assert location[1:2] not in ("/", "\\"), (next_path, location)
        assert not any(c in location for c in "\t\r\n\\ "), (next_path, location)


def test_another_sign_ins_code_or_state_does_not_sign_this_browser_in(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """Login CSRF: the attacker's own code (and state) sent to the victim's browser."""
    attacker = web_app(serve_app, urls, kms)
    victim = httpx.Client(base_url=attacker.base_url, timeout=10)
    try:
        stolen = parse_qs(urlsplit(authorized_web(attacker, provision(urls, kms))).query)
        own = parse_qs(urlsplit(authorized_web(victim, provision(urls, kms))).query)
        for code, state in (
            (stolen["code"][0], stolen["state"][0]),  # the attacker's whole callback
            (stolen["code"][0], own["state"][0]),  # the attacker's code, the victim's state
            (own["code"][0], "x"),
            (own["code"][0], None),
            (None, own["state"][0]),
        ):
            params = {k: v for k, v in (("code", code), ("state", state)) if v is not None}
            answer = victim.get("/app/callback", params=params)
            assert answer.status_code == 400, answer.text
            assert COOKIE not in victim.cookies
        # Without the sign-in cookie of this browser, the attacker's callback is refused too.
        fresh = httpx.Client(base_url=attacker.base_url, timeout=10)
        try:
            assert fresh.get("/app/callback", params=stolen).status_code == 400
        finally:
            fresh.close()
    finally:
        victim.close()


def test_the_callback_does_not_echo_what_the_link_says(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """An `error` in a crafted link is not shown as the site's own words (content
    injection: "call this number", "go to this site")."""
    client = web_app(serve_app, urls, kms)
    client.get("/app/login")
    lure = "Your account is locked. Call +1 555 0100 or visit evil.example"
    answer = client.get("/app/callback", params={"error": lure, "state": "x"})
    assert answer.status_code == 400
    assert "555 0100" not in answer.text
    assert "evil.example" not in answer.text


def test_signing_in_never_keeps_a_planted_session(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """Session fixation: a browser carrying someone else's live cookie signs in and gets a
    session of its own; the planted one is ended."""
    attacker = web_app(serve_app, urls, kms)
    sign_in_web(attacker, provision(urls, kms))
    planted = attacker.cookies[COOKIE]
    victim = httpx.Client(base_url=attacker.base_url, timeout=10)
    try:
        victim.cookies.set(COOKIE, planted, domain=victim.base_url.host, path="/")
        account = provision(urls, kms)
        home = sign_in_web(victim, account)
        assert account.username in home.text
        assert victim.cookies[COOKIE] != planted
        assert tokens_held(urls, planted) is None
        assert not still_signed_in(attacker)
    finally:
        victim.close()


# --- Cookies --------------------------------------------------------------------------------


def test_a_tampered_cookie_opens_nothing(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    other = httpx.Client(base_url=client.base_url, timeout=10)
    try:
        sign_in_web(other, provision(urls, kms))
        mine, theirs = client.cookies[COOKIE], other.cookies[COOKIE]
        tenant, secret = mine.split(".")
        their_tenant, their_secret = theirs.split(".")
        assert tenant != their_tenant
        forged = [
            f"{tenant}.{their_secret}",  # a valid secret under another tenant
            f"{their_tenant}.{secret}",
            f"{tenant}.{secret[:-1]}",  # truncated
            f"{tenant}.{secret}A",
            f"{tenant}.{secret}{'A' * 200}",  # oversize
            f"{tenant}",
            f".{secret}",
            f"{tenant}..{secret}",
            f"{'0' * 32}.{secret}",
            f"{tenant}.{base64.urlsafe_b64encode(bytes(32)).decode()}",
            f"{tenant}.{secret}".upper(),
        ]
        for cookie in forged:
            probe = httpx.Client(base_url=client.base_url, timeout=10, cookies={COOKIE: cookie})
            try:
                assert probe.get("/app").status_code == 303, cookie
                door = probe.get("/app/api/quotes", headers={"x-csrf-token": csrf})
                assert door.status_code == 401, cookie
            finally:
                probe.close()
        assert still_signed_in(client)
        assert still_signed_in(other)
    finally:
        other.close()


# --- Renewal, logout, leaks -----------------------------------------------------------------


def test_concurrent_page_loads_renewing_the_token_keep_the_session(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """With 30-second access tokens every request renews (RENEW_SECONDS is 60): sixteen at
    once must each spend the refresh token the one before left, never the same one twice
    (a replay would revoke the whole family)."""
    client, csrf = signed_in(serve_app, urls, kms, access_token_seconds=30)
    cookie = client.cookies[COOKIE]
    before = tokens_held(urls, cookie)

    def load(i: int) -> int:
        with httpx.Client(base_url=client.base_url, cookies={COOKIE: cookie}, timeout=30) as tab:
            if i % 2:
                return tab.get("/app").status_code
            return tab.get("/app/api/quotes", headers={"x-csrf-token": csrf}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(load, range(16)))
    assert statuses == [200] * 16
    after = tokens_held(urls, cookie)
    assert before is not None
    assert after is not None
    assert after["refresh_token"] != before["refresh_token"]  # it did renew
    assert still_signed_in(client)  # and the family was not revoked as a replay


def test_logout_revokes_the_access_and_refresh_tokens_at_the_api(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    held = tokens_held(urls, client.cookies[COOKIE])
    assert held is not None
    bearer = {"authorization": f"Bearer {held['access_token']}"}
    api = httpx.Client(base_url=client.base_url, timeout=10)
    try:
        assert api.get("/api/quotes", headers=bearer).status_code == 200
        assert client.post("/app/logout", data={"csrf": csrf}).status_code == 303
        assert api.get("/api/quotes", headers=bearer).status_code == 401
        refreshed = api.post(
            "/oauth/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": held["refresh_token"],
                "client_id": WEB_CLIENT_ID,
            },
        )
        assert refreshed.status_code == 400
    finally:
        api.close()


def test_no_token_or_cookie_secret_reaches_a_page_a_log_or_the_database_in_the_clear(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    capfd: pytest.CaptureFixture[str],
) -> None:
    client, csrf = signed_in(serve_app, urls, kms, access_token_seconds=30)
    cookie = client.cookies[COOKIE]
    shown = [
        client.get("/app").text,
        client.get("/app/no/such/page", headers={"accept": "text/html"}).text,
        client.post("/app/logout", data={"csrf": "nope"}).text,
        client.get("/app/api/quotes", headers={"x-csrf-token": csrf}).text,
    ]
    held = tokens_held(urls, cookie)
    assert held is not None
    secret = cookie.split(".")[1]
    logged = "".join(capfd.readouterr())
    for value in (held["access_token"], held["refresh_token"], secret):
        assert not any(value in page for page in shown)
        assert value not in logged

    async def columns() -> str:
        owner = Database(urls.owner, pool_size=1)
        try:
            async with owner.engine.connect() as connection:
                row = await connection.scalar(
                    text("SELECT string_agg(b::text, ' ') FROM browser_sessions b")
                )
                return str(row)
        finally:
            await owner.dispose()

    stored = asyncio.run(columns())
    raw_secret = _Handle.parse(cookie).secret.hex()  # type: ignore[union-attr]
    for value in (held["access_token"], held["refresh_token"], secret, raw_secret):
        assert value not in stored


# --- Headers --------------------------------------------------------------------------------


def test_pages_redirects_and_the_door_are_never_cached_and_carry_the_strict_csp(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client, csrf = signed_in(serve_app, urls, kms)
    answers = [
        client.get("/app"),
        client.get("/"),
        client.get("/app/login"),
        client.get("/app/callback"),
        client.get("/app/no/such/page", headers={"accept": "text/html"}),
        client.get("/app/api/quotes", headers={"x-csrf-token": csrf}),
        client.get("/app/api/quotes"),
        client.post("/app/logout", data={"csrf": "nope"}),
    ]
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path}"
        assert answer.headers["cache-control"] == "no-store", where
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self';" in policy, where
        assert "frame-ancestors 'none'" in policy, where
        assert "unsafe-inline" not in policy, where
        assert answer.headers["x-frame-options"] == "DENY", where


def test_every_page_route_needs_a_session(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """The bearer gate lets page routes by (`Exempt.PAGE`): each must then ask for the
    session itself, so without a cookie none answers anything but a trip to sign in."""
    apps: list[FastAPI] = []
    client = web_app(serve_app, urls, kms, app_hook=apps.append)
    pages = [
        r
        for r in api_routes(apps[0].routes)
        if (r.openapi_extra or {}).get(ACTION_KEY) == Exempt.PAGE
    ]
    assert {"/app", "/app/logout", "/app/api/{path:path}", "/pay/{payment_id}"} <= {
        r.path for r in pages
    }
    for route in pages:
        path = route.path.replace("{path:path}", "quotes")
        for param in route.dependant.path_params:
            path = path.replace(f"{{{param.name}}}", "00000000-0000-4000-8000-000000000000")
        for method in route.methods:
            answer = client.request(method, path)
            where = f"{method} {route.path}"
            if path.startswith("/app/api/"):
                assert answer.status_code == 401, where
            else:
                assert answer.status_code == 303, where
                assert answer.headers["location"].startswith("/app/login"), where


def test_the_audit_trail_names_the_browser_for_what_a_page_does(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """A page acts through the API in process; the decisions it causes are the browser's
    (its address and user agent), not the in-process client's."""
    client = web_app(serve_app, urls, kms)
    client.headers["user-agent"] = BROWSER
    account = provision(urls, kms)
    csrf = page_csrf(sign_in_web(client, account))
    after = head(urls, account.tenant_id)
    assert client.get("/app/api/quotes", headers={"x-csrf-token": csrf}).status_code == 200
    decided = recorded(urls, account.tenant_id, Action.AUTHORIZATION_DECIDED, after=after)
    assert decided
    assert {e["actor"]["user_agent"] for e in decided} == {BROWSER}


def test_no_origin_may_read_a_page_with_the_users_cookie(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    """A listed CORS origin reads the API with a bearer token; the pages (which carry the
    session's CSRF token) stay our own origin's, even to it."""
    listed = "https://app.example"
    client = web_app(serve_app, urls, kms, cors_origins=(listed,))
    sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    for path in (
        "/app",
        "/app/quotes",
        "/app/api/quotes",
        f"/pay/{'0' * 8}-0000-4000-8000-{'0' * 12}",
    ):
        read = client.get(path, headers={"origin": listed})
        assert "access-control-allow-origin" not in read.headers, path
        assert "access-control-allow-credentials" not in read.headers, path
        preflight = client.options(
            path, headers={"origin": listed, "access-control-request-method": "GET"}
        )
        assert preflight.status_code == 403, path
    api = client.get("/api/quotes", headers={"origin": listed})
    assert api.headers["access-control-allow-origin"] == listed  # the API's CORS is unchanged
