"""The OAuth 2.0 / OpenID Connect endpoints: discovery, JWKS, authorize, token, userinfo and
revocation. Protocol errors follow the RFCs (JSON `error` bodies at the token endpoint,
`error` redirects from authorize); everything else is problem+json.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ramparts.identity.flow import LoginFlow
from ramparts.identity.oauth import CodeReusedError, OAuthError, single_valued
from ramparts.identity.tokens import TokenError
from ramparts.identity.views.dependencies import (
    Caller,
    Identity,
    IdentityHttp,
    body_params,
    no_repeated_params,
    user_of,
)
from ramparts.identity.views.grants import grant
from ramparts.identity.views.pages import page
from ramparts.identity.views.routing import get_and_post
from ramparts.identity.views.signin_flow import Flows
from ramparts.routes import Exempt, declares

__all__ = ["router"]

router = APIRouter(tags=["identity"])

SCOPES = frozenset({"openid", "profile"})
PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@router.get(
    "/.well-known/openid-configuration",
    openapi_extra=declares(Exempt.PUBLIC),
    dependencies=[Depends(no_repeated_params)],
)
async def discovery(identity: Identity) -> dict[str, Any]:
    base = identity.issuer
    return {
        "issuer": base,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "userinfo_endpoint": f"{base}/oauth/userinfo",
        "jwks_uri": f"{base}/oauth/jwks",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "end_session_endpoint": f"{base}/oauth/logout",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": sorted(SCOPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["none", "private_key_jwt", "tls_client_auth"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "tls_client_certificate_bound_access_tokens": True,
        "revocation_endpoint_auth_methods_supported": ["none"],
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "amr",
            "acr",
            "tenant",
            "preferred_username",
        ],
        "acr_values_supported": ["urn:ramparts:acr:mfa", "urn:ramparts:acr:phr"],
        "authorization_response_iss_parameter_supported": True,
    }


@router.get(
    "/oauth/jwks",
    openapi_extra=declares(Exempt.PUBLIC),
    dependencies=[Depends(no_repeated_params)],
)
async def jwks(identity: Identity) -> Response:
    ring = await identity.keys.ring()
    return JSONResponse(ring.jwks(), headers={"Cache-Control": "public, max-age=60"})


def _redirect_error(
    identity: IdentityHttp, redirect_uri: str, state: str | None, error: str, description: str
) -> Response:
    params = {"error": error, "error_description": description, "iss": identity.issuer}
    if state:
        params["state"] = state
    return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=303)


async def _malformed_authorize(
    request: Request, identity: IdentityHttp, error: OAuthError
) -> Response:
    """A repeated parameter at authorize: tell the client by redirect when the client and
    its redirect address are themselves unambiguous and registered, else show a page."""
    query = request.query_params
    client_ids, redirects = query.getlist("client_id"), query.getlist("redirect_uri")
    client = await identity.oauth.client(client_ids[0]) if len(client_ids) == 1 else None
    if client is None or len(redirects) != 1 or redirects[0] not in client.redirect_uris:
        return page(request, "error.html", 400, message="This sign-in request is not valid.")
    states = query.getlist("state")
    state = states[0] if len(states) == 1 else None
    return _redirect_error(identity, redirects[0], state, error.error, error.description)


@router.get("/oauth/authorize", response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def authorize(request: Request, identity: Identity, flows: Flows) -> Response:
    try:
        query = single_valued(request.query_params.multi_items())
    except OAuthError as exc:
        return await _malformed_authorize(request, identity, exc)
    client = await identity.oauth.client(query.get("client_id", ""))
    redirect_uri = query.get("redirect_uri", "")
    # Never redirect to an address we cannot vouch for (RFC 6749 4.1.2.1).
    if client is None or redirect_uri not in client.redirect_uris:
        return page(request, "error.html", 400, message="Unknown application or redirect address.")
    state = query.get("state")
    if query.get("response_type") != "code":
        return _redirect_error(
            identity,
            redirect_uri,
            state,
            "unsupported_response_type",
            "only response_type=code is supported",
        )
    scopes = query.get("scope", "").split()
    if "openid" not in scopes or not set(scopes) <= SCOPES:
        return _redirect_error(
            identity,
            redirect_uri,
            state,
            "invalid_scope",
            f"scope must include openid and only {sorted(SCOPES)}",
        )
    challenge = query.get("code_challenge", "")
    if query.get("code_challenge_method") != "S256" or not PKCE_CHALLENGE.match(challenge):
        return _redirect_error(
            identity,
            redirect_uri,
            state,
            "invalid_request",
            "PKCE with code_challenge_method=S256 is required",
        )
    flow = LoginFlow(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scope=" ".join(scopes),
        code_challenge=challenge,
        state=state,
        nonce=query.get("nonce"),
    )
    return await flows.keep(RedirectResponse("/login", status_code=303), flow)


#: RFC 6749 section 5.2: the token and revocation endpoints refuse in OAuth's words, not
#: as problem+json (clients' OAuth libraries read `error`).
OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {
        "description": "an RFC 6749 section 5.2 error",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "error_description": {"type": "string"},
                    },
                }
            }
        },
    }
    for status in (400, 401)
}


@router.post("/oauth/token", responses=OAUTH_ERRORS, openapi_extra=declares(Exempt.PUBLIC))
async def token(request: Request, identity: Identity) -> Response:
    fields: dict[str, str] = {}
    try:
        fields = await body_params(request)
        body = await grant(identity, fields, request)
    except OAuthError as exc:
        error = exc
        # A refused request that carries a code redeemed before still revokes what the code
        # issued, whatever else is wrong with it; the exchange found its own replays. Only
        # refusals pay this lookup, and the answer is the generic invalid_grant.
        if not isinstance(exc, CodeReusedError) and await identity.oauth.revoke_reused_code(
            (fields.get("code"), fields.get("refresh_token")), fields.get("client_id", "")
        ):
            error = OAuthError("invalid_grant", "unknown, expired or already used code")
        return JSONResponse(error.body(), status_code=error.status, headers=NO_STORE)
    return JSONResponse(body, headers=NO_STORE)


async def userinfo(
    _: Annotated[None, Depends(no_repeated_params)], identity: Identity, principal: Caller
) -> dict[str, Any]:
    await user_of(identity, principal)
    return {
        "sub": principal.subject,
        "tenant": str(principal.tenant_id),
        "roles": list(principal.roles),
        "amr": list(principal.amr),
        "acr": principal.acr,
    }


# OIDC Core 5.3.1: the UserInfo endpoint answers GET and POST.
get_and_post(router, "/oauth/userinfo", userinfo, Exempt.SELF)


@router.post(
    "/oauth/revoke",
    response_class=Response,
    responses={200: {"description": "revoked, or nothing to revoke"}, **OAUTH_ERRORS},
    openapi_extra=declares(Exempt.PUBLIC),
)
async def revoke(request: Request, identity: Identity) -> Response:
    """RFC 7009. A refresh token ends its family; an access token is revoked by jti."""
    try:
        form = await body_params(request)
    except OAuthError as exc:
        return JSONResponse(exc.body(), status_code=exc.status, headers=NO_STORE)
    token_value, client_id = form.get("token"), form.get("client_id")
    if token_value is not None and client_id is not None:
        if token_value.count(".") == 2:
            try:
                claims = identity.verifier.verify(token_value, await identity.keys.ring())
            except TokenError:
                claims = None
            if claims is not None and claims.client_id == client_id:
                await identity.oauth.revoke_access_token(tenant=claims.tenant, jti=claims.jti)
        else:
            await identity.oauth.revoke(token=token_value, client_id=client_id)
    return Response(status_code=200)  # 2.2: the same answer for unknown tokens
