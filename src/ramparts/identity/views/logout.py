"""OIDC RP-Initiated Logout: the end-session endpoint and the confirmation it asks for.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

import secrets
import time
import uuid
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ramparts.identity.oauth import OAuthError, single_valued
from ramparts.identity.tokens import IdTokenHint, TokenError
from ramparts.identity.views.dependencies import Identity, IdentityHttp, body_params
from ramparts.identity.views.pages import page
from ramparts.identity.views.routing import get_and_post
from ramparts.identity.views.signin_flow import Flows
from ramparts.routes import Exempt, declares

__all__ = ["router"]

router = APIRouter(tags=["identity"])

LOGOUT_TICKET = "logout-confirmation"
LOGOUT_SECONDS = 600


def _logout_cookie(identity: IdentityHttp, response: Response, value: str | None) -> Response:
    name = f"{identity.cookie}_logout"
    if value is None:
        response.delete_cookie(
            name, path="/", secure=identity.secure_cookies, httponly=True, samesite="strict"
        )
    else:
        response.set_cookie(
            name,
            value,
            max_age=LOGOUT_SECONDS,
            path="/",
            secure=identity.secure_cookies,
            httponly=True,
            samesite="strict",
        )
    return response


def _signed_out(request: Request, target: str | None, state: str | None) -> Response:
    if target is None:
        return page(request, "error.html", 200, message="You are signed out.", heading="Signed out")
    suffix = f"?{urlencode({'state': state})}" if state else ""
    return RedirectResponse(target + suffix, status_code=303)


async def logout(request: Request, identity: Identity, flows: Flows) -> Response:
    """OIDC RP-Initiated Logout (GET or POST). Nothing ends here: a hint is a bearer
    credential anyone who saw it holds, and this server keeps no session after sign-in to
    prove the request is the user's own, so the user confirms on a page first. The
    confirmation is bound to a SameSite=Strict cookie set with the page, so another site
    cannot submit it from the user's browser either. Whoever confirms ends only the sign-in
    the hint names (its `sid`), and only while it is live and the hint no older than a
    sign-in can last: a leaked hint cannot end the user's other sessions."""
    invalid = "This sign-out request is not valid."
    try:
        if request.method == "POST":
            query = await body_params(request)
        else:
            query = single_valued(request.query_params.multi_items())
    except OAuthError:
        return await flows.end(page(request, "error.html", 400, message=invalid))
    hint, target = query.get("id_token_hint"), query.get("post_logout_redirect_uri")
    proven: IdTokenHint | None = None
    if hint:
        try:
            proven = identity.verifier.verify_id_token_hint(
                hint, await identity.keys.ring(), max_age=identity.oauth.family_lifetime
            )
        except TokenError:
            return await flows.end(page(request, "error.html", 400, message=invalid))
    client = await identity.oauth.client(proven.client_id) if proven else None
    # Redirect only to an address registered by the client the hint proves.
    if target and (client is None or target not in client.post_logout_redirect_uris):
        return await flows.end(
            page(request, "error.html", 400, message="Unknown sign-out redirect address.")
        )
    if proven is None or client is None:  # no hint: there is no session here to end
        return await flows.end(_signed_out(request, target, query.get("state")))
    if not await identity.oauth.session_live(proven):  # nothing left to end: a stale hint
        ended = "This sign-in has already ended."
        return await flows.end(page(request, "error.html", 400, message=ended))
    binding = secrets.token_urlsafe(32)
    ticket = identity.flows.seal(
        {
            "tenant": str(proven.tenant),
            "user": str(proven.user),
            "client": client.client_id,
            "session": str(proven.session),
            "target": target,
            "state": query.get("state"),
            "binding": binding,
            "expires": int(time.time()) + LOGOUT_SECONDS,
        },
        LOGOUT_TICKET,
    )
    confirm = page(request, "logout.html", client=client.client_id, ticket=ticket, leads_to=target)
    return _logout_cookie(identity, await flows.end(confirm), binding)


# OIDC RP-Initiated Logout 1.0 section 2: the end-session endpoint answers GET and POST.
get_and_post(router, "/oauth/logout", logout, Exempt.PUBLIC, response_class=HTMLResponse)


@router.post(
    "/oauth/logout/confirm", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC)
)
async def confirm_logout(request: Request, identity: Identity) -> Response:
    """The user pressed Sign out on the page `logout` showed, in this browser."""
    try:
        ticket = identity.flows.open((await body_params(request)).get("ticket", ""), LOGOUT_TICKET)
    except OAuthError:
        ticket = None
    bound = request.cookies.get(f"{identity.cookie}_logout", "")
    if (
        ticket is None
        or int(ticket.get("expires", 0)) < time.time()
        or not secrets.compare_digest(bound.encode(), str(ticket.get("binding")).encode())
    ):
        refused = page(
            request, "error.html", 400, message="This sign-out has expired. Start it again."
        )
        return _logout_cookie(identity, refused, None)
    await identity.oauth.end_session(
        IdTokenHint(
            tenant=uuid.UUID(ticket["tenant"]),
            user=uuid.UUID(ticket["user"]),
            client_id=str(ticket["client"]),
            session=uuid.UUID(ticket["session"]),
        )
    )
    signed_out = _signed_out(request, ticket.get("target"), ticket.get("state"))
    return _logout_cookie(identity, signed_out, None)
