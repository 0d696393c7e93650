"""The web app's sessions: the server runs the code flow, the browser holds only a cookie."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import text

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.quotes.roles import BUYER
from tests.identity.helpers import provision
from tests.web.sessions_helpers import page_csrf, sign_in_web, web_app


def _rows(urls: DatabaseUrls) -> list[bytes]:
    async def run() -> list[bytes]:
        owner = Database(urls.owner, pool_size=1)
        try:
            async with owner.engine.connect() as connection:
                return [
                    r[0]
                    for r in await connection.execute(text("SELECT sealed FROM browser_sessions"))
                ]
        finally:
            await owner.dispose()

    return asyncio.run(run())


def test_sign_in_holds_no_token_in_the_browser_or_in_the_clear(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    account = provision(urls, kms, roles=(BUYER,))
    home = sign_in_web(client, account)
    assert home.status_code == 200, home.text
    assert account.username in home.text
    cookie = next(c for c in client.cookies.jar if c.name == "ramparts_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert "eyJ" not in (cookie.value or "")  # no JWT in the cookie
    # The database holds the tokens sealed: no JWT and no refresh token in the clear.
    assert all(
        b"eyJ" not in sealed and account.username.encode() not in sealed for sealed in _rows(urls)
    )


def test_a_page_without_a_session_sends_the_browser_to_sign_in(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    response = client.get("/app")
    assert response.status_code == 303
    assert response.headers["location"] == "/app/login?next=/app"
    landing = client.get("/")
    assert landing.status_code == 200
    assert "Sign in" in landing.text
    client.cookies.set("ramparts_session", "00" * 16 + "." + "A" * 43)  # a forged cookie
    assert client.get("/app").status_code == 303


def test_forms_need_the_csrf_token_and_our_origin(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    home = sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    csrf = page_csrf(home)
    refused = client.post("/app/logout", data={"csrf": "nope"})
    assert refused.status_code == 403
    assert "expired" in refused.text
    elsewhere = client.post(
        "/app/logout", data={"csrf": csrf}, headers={"origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    assert client.get("/app").status_code == 200  # still signed in
    out = client.post("/app/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert client.get("/app").status_code == 303


def test_logout_revokes_the_tokens_the_session_held(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    home = sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    csrf = page_csrf(home)
    cookie = client.cookies["ramparts_session"]
    assert client.post("/app/logout", data={"csrf": csrf}).status_code == 303
    # The old cookie, replayed, opens nothing.
    client.cookies.set("ramparts_session", cookie)
    assert client.get("/app").status_code == 303


def test_the_api_door_needs_the_csrf_header(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    home = sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    assert client.get("/app/api/quotes").status_code == 403
    listed = client.get("/app/api/quotes", headers={"x-csrf-token": page_csrf(home)})
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    escaped = client.get("/app/api/../oauth/userinfo", headers={"x-csrf-token": page_csrf(home)})
    assert escaped.status_code in (403, 404)


@pytest.mark.parametrize("next_path", ["https://evil.example/", "//evil.example", "javascript:x"])
def test_sign_in_never_returns_to_another_site(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, next_path: str
) -> None:
    client = web_app(serve_app, urls, kms)
    landed = sign_in_web(client, provision(urls, kms, roles=(BUYER,)), next_path=next_path)
    assert str(landed.url).startswith(str(client.base_url).rstrip("/") + "/app")


def test_a_missing_page_is_a_page_and_a_missing_api_route_is_a_problem(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    page = client.get("/app/no/such/page", headers={"accept": "text/html"})
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "There is no page at this address." in page.text
    assert "Sign out" in page.text  # in the layout, still signed in
    api = client.get("/api/no/such/route", headers={"accept": "text/html"})
    assert api.status_code == 404
    assert api.headers["content-type"] == "application/problem+json"


def test_a_malformed_page_address_is_a_page(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    client = web_app(serve_app, urls, kms)
    sign_in_web(client, provision(urls, kms, roles=(BUYER,)))
    bad_id = client.get("/pay/not-an-id")
    assert bad_id.status_code == 404
    assert "There is no page at this address." in bad_id.text
    api = client.get("/api/quotes/not-an-id")
    assert api.status_code in (401, 422)
    assert api.headers["content-type"] == "application/problem+json"
