"""The web app's own pages: the home page, signing in and out, the signed-in start page, and
the one door the page scripts use to reach the API.

Signing in is the authorization code flow with PKCE, run by the server for the browser
(`ramparts.web.sessions`): `/app/login` sends the browser to `/oauth/authorize` with a fresh
verifier, state and nonce sealed in a short-lived cookie; `/app/callback` checks the state,
redeems the code in process and starts the session. The browser never holds a token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ramparts.identity.oauth import OAuthError
from ramparts.identity.views.dependencies import IdentityHttp
from ramparts.routes import Exempt, declares
from ramparts.web.page import (
    CSRF_HEADER,
    PageKit,
    PageProblem,
    Posted,
    SignedIn,
    SignInNeeded,
    local_path,
    token_payload,
)

__all__ = ["WEB_CLIENT_ID", "router", "web_client_redirect_uri"]

WEB_CLIENT_ID = "ramparts-web"
SIGN_IN_SECONDS = 600
_SIGN_IN_CONTEXT = "web sign-in"
router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE = declares(Exempt.PAGE)
PUBLIC = declares(Exempt.PUBLIC)


def web_client_redirect_uri(public_url: str) -> str:
    return f"{public_url}/app/callback"


def _kit(request: Request) -> PageKit:
    kit: PageKit = request.app.state.pages
    return kit


def _identity(request: Request) -> IdentityHttp:
    identity: IdentityHttp = request.app.state.identity
    return identity


def _sign_in_cookie(kit: PageKit) -> str:
    return f"{kit.cookie}_signin"


@router.get("/", response_class=HTMLResponse, openapi_extra=PUBLIC)
async def home(request: Request) -> Response:
    """Before sign-in, what the demo is; after, the start page."""
    kit = _kit(request)
    if await kit.sessions.load(request.cookies.get(kit.cookie)) is not None:
        return RedirectResponse("/app", status_code=303)
    return kit.render(request, "landing.html", {"apps": kit.app_titles}, viewer=None, csrf=None)


@router.get("/app/login", openapi_extra=PUBLIC)
async def login(
    request: Request, next_path: Annotated[str, Query(alias="next", max_length=500)] = "/app"
) -> Response:
    kit, identity = _kit(request), _identity(request)
    verifier, state, nonce = (secrets.token_urlsafe(32) for _ in range(3))
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    sealed = identity.flows.seal(
        {
            "verifier": verifier,
            "state": state,
            "nonce": nonce,
            "next": local_path(next_path),
            "expires": time.time() + SIGN_IN_SECONDS,
        },
        _SIGN_IN_CONTEXT,
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": WEB_CLIENT_ID,
            "redirect_uri": web_client_redirect_uri(kit.public_url),
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"/oauth/authorize?{query}", status_code=303)
    response.set_cookie(
        _sign_in_cookie(kit),
        sealed,
        max_age=SIGN_IN_SECONDS,
        path="/",
        secure=kit.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/app/callback", response_class=HTMLResponse, openapi_extra=PUBLIC)
async def callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=200)] = None,
    state: Annotated[str | None, Query(max_length=200)] = None,
    error: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    kit, identity = _kit(request), _identity(request)
    started = identity.flows.open(request.cookies.get(_sign_in_cookie(kit), ""), _SIGN_IN_CONTEXT)
    if error is not None:
        # Not the link's own words: anyone can craft it, and the page would speak for us.
        raise PageProblem(
            400, "Sign-in did not finish", "The sign-in was not completed. Sign in again."
        )
    if (
        started is None
        or started.get("expires", 0) < time.time()
        or state is None
        or code is None
        or not secrets.compare_digest(state.encode(), str(started.get("state")).encode())
    ):
        raise PageProblem(
            400,
            "Sign-in did not finish",
            "This sign-in expired or was not started here. Sign in again.",
        )
    try:
        tokens = await identity.oauth.exchange_code(
            code=code,
            client_id=WEB_CLIENT_ID,
            redirect_uri=web_client_redirect_uri(kit.public_url),
            code_verifier=started["verifier"],
        )
    except OAuthError:
        raise PageProblem(
            400, "Sign-in did not finish", "The sign-in could not be completed. Sign in again."
        ) from None
    # From our own token endpoint, in process: its claims need no second check here.
    claims = token_payload(tokens.id_token or "")
    if claims.get("nonce") != started["nonce"]:
        raise PageProblem(
            400, "Sign-in did not finish", "The sign-in did not match. Sign in again."
        )
    # A sign-in never continues an earlier session in this browser (no fixation).
    await kit.sessions.end(request.cookies.get(kit.cookie))
    cookie = await kit.sessions.start(
        uuid.UUID(claims["tenant"]),
        uuid.UUID(claims["sub"]),
        str(claims.get("preferred_username", "")),
        tokens,
    )
    response = RedirectResponse(local_path(started["next"]), status_code=303)
    response.delete_cookie(
        _sign_in_cookie(kit), path="/", secure=kit.cookie_secure, httponly=True, samesite="lax"
    )
    response.set_cookie(
        kit.cookie,
        cookie,
        max_age=int(kit.sessions.lifetime.total_seconds()),
        path="/",
        secure=kit.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/app/logout", openapi_extra=PAGE)
async def logout(page: Posted) -> Response:
    kit = page.kit
    await kit.sessions.end(page.request.cookies.get(kit.cookie))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(
        kit.cookie, path="/", secure=kit.cookie_secure, httponly=True, samesite="lax"
    )
    return response


@router.get("/app", response_class=HTMLResponse, openapi_extra=PAGE)
async def start(page: SignedIn) -> HTMLResponse:
    return page.render("home.html")


_API_PATH = re.compile(r"[A-Za-z0-9_\-/.]{1,300}")
_FORWARDED = ("content-type", "idempotency-key")


@router.api_route(
    "/app/api/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], openapi_extra=PAGE
)
async def api_door(request: Request, path: str, page: SignedIn) -> Response:
    """The page scripts' way to the API (the assistant panel, the payment page): as the
    session's user, and only from our own pages (the CSRF header, which another site cannot
    send, on every method)."""
    if not page.session.csrf_ok(request.headers.get(CSRF_HEADER)):
        return Response(status_code=403)
    if not _API_PATH.fullmatch(path) or ".." in path.split("/"):
        return Response(status_code=404)
    headers = {"authorization": f"Bearer {page.session.access_token}"}
    headers |= {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}
    answer = await page.kit.client(request.app).request(
        request.method,
        f"/api/{path}",
        params=request.query_params,
        content=await request.body(),
        headers=headers,
    )
    if answer.status_code == 401:
        raise SignInNeeded("/app")
    kept = {k: v for k, v in answer.headers.items() if k in ("content-type", "retry-after")}
    return Response(answer.content, status_code=answer.status_code, headers=kept)
