"""The token endpoint's grants, one handler each, found by `grant_type` (RFC 6749 section 4).

People's apps are public clients (PKCE, no secret): they redeem an authorization code and
refresh tokens. Services authenticate with a signed assertion or a client certificate and get
a token for one audience.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ramparts.identity.clients import ASSERTION_TYPE
from ramparts.identity.mtls import client_certificate_thumbprint
from ramparts.identity.oauth import OAuthError

if TYPE_CHECKING:
    from fastapi import Request

    from ramparts.identity.oauth import Client
    from ramparts.identity.views.dependencies import IdentityHttp

__all__ = ["GRANTS", "grant"]

PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")

#: A grant's handler: the token response body for the request's form fields.
Grant = Callable[["IdentityHttp", dict[str, str], "Request"], Awaitable[dict[str, Any]]]


async def _public_client(identity: IdentityHttp, fields: dict[str, str]) -> Client:
    client = await identity.oauth.client(fields.get("client_id", ""))
    if client is None or not client.is_public:
        raise OAuthError("invalid_client", "unknown client", status=401)
    return client


async def _authorization_code(
    identity: IdentityHttp, fields: dict[str, str], _: Request
) -> dict[str, Any]:
    client = await _public_client(identity, fields)
    verifier = fields.get("code_verifier", "")
    if not PKCE_VERIFIER.match(verifier):
        raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
    issued = await identity.oauth.exchange_code(
        code=fields.get("code", ""),
        client_id=client.client_id,
        redirect_uri=fields.get("redirect_uri", ""),
        code_verifier=verifier,
    )
    return issued.body()


async def _refresh_token(
    identity: IdentityHttp, fields: dict[str, str], _: Request
) -> dict[str, Any]:
    client = await _public_client(identity, fields)
    issued = await identity.oauth.refresh(
        refresh_token=fields.get("refresh_token", ""), client_id=client.client_id
    )
    return issued.body()


async def _client_credentials(
    identity: IdentityHttp, fields: dict[str, str], request: Request
) -> dict[str, Any]:
    """For service clients (RFC 7523 / RFC 8705, RFC 8707)."""
    thumbprint = client_certificate_thumbprint(request.scope)
    if fields.get("client_assertion_type") == ASSERTION_TYPE:
        client = await identity.services.authenticate_assertion(fields.get("client_assertion", ""))
    elif thumbprint is not None:
        client = await identity.services.authenticate_certificate(
            fields.get("client_id", ""), thumbprint
        )
    else:
        raise OAuthError("invalid_client", "authenticate with private_key_jwt or mTLS", status=401)
    if fields.get("client_id") not in {None, client.client_id}:
        raise OAuthError("invalid_client", "client_id does not match the credential", status=401)
    resource = fields.get("resource")
    if not resource:
        raise OAuthError("invalid_target", "name the audience with the resource parameter")
    return await identity.services.token(client, resource, thumbprint)


async def _unsupported(
    identity: IdentityHttp, fields: dict[str, str], _: Request
) -> dict[str, Any]:
    await _public_client(identity, fields)  # an unknown client hears that first
    raise OAuthError(
        "unsupported_grant_type",
        "supported: authorization_code, refresh_token, client_credentials (services)",
    )


GRANTS: dict[str, Grant] = {
    "authorization_code": _authorization_code,
    "refresh_token": _refresh_token,
    "client_credentials": _client_credentials,
}


async def grant(identity: IdentityHttp, fields: dict[str, str], request: Request) -> dict[str, Any]:
    """The token response for the grant `fields` ask for; raises `OAuthError`."""
    handler = GRANTS.get(fields.get("grant_type", ""), _unsupported)
    return await handler(identity, fields, request)
