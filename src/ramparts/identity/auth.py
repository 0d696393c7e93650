"""Bearer authentication for the API: who is calling, proven by an access token."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from fastapi import Request

from ramparts.identity.mtls import client_certificate_thumbprint
from ramparts.identity.oauth import KeyCache, OAuthService
from ramparts.identity.tokens import AccessClaims, TokenError, TokenVerifier
from ramparts.problems import Problem

__all__ = ["BearerAuthenticator", "Principal"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Principal:
    subject: str  # the user's id, or the service client's client_id
    user_id: uuid.UUID | None  # None for a service
    tenant_id: uuid.UUID
    roles: tuple[str, ...]
    amr: tuple[str, ...]
    acr: str
    client_id: str
    scope: str
    jti: uuid.UUID
    auth_time: datetime | None = None


def _unauthorized(detail: str, error: str | None = None) -> Problem:
    challenge = 'Bearer realm="ramparts"' + (f', error="{error}"' if error else "")
    return Problem(
        401,
        "unauthenticated",
        "Authentication required",
        detail,
        headers={"WWW-Authenticate": challenge},
    )


class BearerAuthenticator:
    """A FastAPI dependency: verifies the bearer token and that it was not revoked."""

    def __init__(self, verifier: TokenVerifier, keys: KeyCache, oauth: OAuthService) -> None:
        self._verifier = verifier
        self._keys = keys
        self._oauth = oauth

    async def __call__(self, request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send an access token: Authorization: Bearer <token>")
        try:
            claims = await self._verify(token.strip())
        except TokenError as exc:
            log.warning("token_rejected", reason=str(exc), path=request.url.path)
            raise _unauthorized("the access token is invalid", "invalid_token") from None
        if claims.certificate_thumbprint is not None:
            presented = client_certificate_thumbprint(request.scope)
            if presented is None or not secrets.compare_digest(
                presented, claims.certificate_thumbprint
            ):
                # RFC 8705 section 3: a certificate-bound token needs that certificate.
                log.warning("token_rejected", reason="certificate mismatch", jti=str(claims.jti))
                raise _unauthorized("the access token is invalid", "invalid_token")
        if await self._oauth.access_token_revoked(claims.tenant, claims.jti):
            log.warning("token_rejected", reason="revoked", jti=str(claims.jti))
            raise _unauthorized("the access token is invalid", "invalid_token")
        return Principal(
            subject=claims.subject,
            user_id=None if claims.is_service else uuid.UUID(claims.subject),
            tenant_id=claims.tenant,
            roles=claims.roles,
            amr=claims.amr,
            acr=claims.acr,
            client_id=claims.client_id,
            scope=claims.scope,
            jti=claims.jti,
            auth_time=claims.auth_time,
        )

    async def _verify(self, token: str) -> AccessClaims:
        try:
            return self._verifier.verify(token, await self._keys.ring())
        except TokenError as exc:
            if "unknown or retired" not in str(exc):
                raise
            # Another process may have rotated keys since our cache was filled.
            return self._verifier.verify(token, await self._keys.ring(refresh=True))
