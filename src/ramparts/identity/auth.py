"""Bearer authentication for the API: who is calling, proven by an access token."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

import structlog
from fastapi import Request
from fastapi.dependencies.models import Dependant

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database, Opening, opened
from ramparts.db.request import RequestTransaction, request_session
from ramparts.identity.mtls import client_certificate_thumbprint
from ramparts.identity.oauth import KeyCache, OAuthService
from ramparts.identity.tokens import AccessClaims, TokenError, TokenVerifier
from ramparts.problems import Problem, ProblemType

__all__ = ["BearerAuthenticator", "Principal", "actor_of"]

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
        ProblemType.UNAUTHENTICATED,
        detail,
        headers={"WWW-Authenticate": challenge},
    )


def actor_of(principal: Principal) -> Actor:
    """The audit trail's view of an authenticated caller."""
    return Actor(
        kind="service" if principal.user_id is None else "user",
        tenant=principal.tenant_id,
        id=principal.subject,
        roles=principal.roles,
        auth=principal.amr,
        client_id=principal.client_id,
    )


#: Where a request keeps the principal its token proved, so that however many steps ask
#: (the permission gate, the route), the token is verified once per request.
PRINCIPAL_KEY = "ramparts.principal"


class BearerAuthenticator:
    """A FastAPI dependency: verifies the bearer token and that it was not revoked.

    The signature is checked in memory; the revocation check needs the database. For a route
    that works in the request's transaction (`ramparts.db.request.request_session`) it opens
    that transaction in the token's tenant and checks there, as its first query; for any
    other route it checks in a short transaction of its own, so a route that opens its own
    never holds two connections of the pool at once.
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        keys: KeyCache,
        oauth: OAuthService,
        audit: AuditLog,
        database: Database,
    ) -> None:
        self._verifier = verifier
        self._keys = keys
        self._oauth = oauth
        self._audit = audit
        self._database = database

    async def __call__(self, request: Request) -> Principal:
        known = request.scope.get(PRINCIPAL_KEY)
        if isinstance(known, Principal):
            return known
        principal = await self._authenticate(request)
        request.scope[PRINCIPAL_KEY] = principal
        return principal

    async def _authenticate(self, request: Request) -> Principal:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("send an access token: Authorization: Bearer <token>")
        try:
            claims = await self._verify(token.strip())
        except TokenError as exc:
            # Nothing in an unverified token can be believed, its tenant least of all: the
            # refusal goes to the system chain.
            await self._rejected(None, request, str(exc))
            raise _unauthorized("the access token is invalid", "invalid_token") from None
        if claims.certificate_thumbprint is not None:
            presented = client_certificate_thumbprint(request.scope)
            if presented is None or not secrets.compare_digest(
                presented, claims.certificate_thumbprint
            ):
                # RFC 8705 section 3: a certificate-bound token needs that certificate.
                await self._rejected(claims, request, "certificate mismatch")
                raise _unauthorized("the access token is invalid", "invalid_token")
        if await self._revoked(request, claims):
            await self._rejected(claims, request, "revoked")
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

    async def _revoked(self, request: Request, claims: AccessClaims) -> bool:
        # A service's tokens die with the client (`ramparts clients revoke`).
        client = claims.client_id if claims.is_service else None
        transaction = RequestTransaction.of(request.scope)
        if transaction is None or not _takes_session(request.scope.get("route")):
            return await self._oauth.access_token_revoked(
                claims.tenant, claims.jti, service_client=client
            )
        # One round trip sets the tenant and checks the token (`ramparts_begin_request`).
        session = await transaction.open(
            self._database,
            claims.tenant,
            opening=Opening("ramparts_begin_request", (claims.jti, client)),
        )
        revoked = opened(session) is not True  # NULL: a token never issued
        if revoked:  # nothing more happens in it
            await transaction.end(commit=False)
        return revoked

    async def actor(self, request: Request) -> Actor:
        """A FastAPI dependency for routes that only need to know who is calling."""
        return actor_of(await self(request))

    async def _rejected(self, claims: AccessClaims | None, request: Request, reason: str) -> None:
        log.warning("token_rejected", reason=reason, path=request.url.path)
        tenant = claims.tenant if claims else None
        await self._audit.record_apart(
            tenant,
            Actor("anonymous", tenant=tenant, client_id=claims.client_id if claims else None),
            Action.TOKEN_REJECTED,
            Resource("access_token", str(claims.jti) if claims else None),
            Decision.DENY,
            {"reason": reason, "path": request.url.path},
        )

    async def _verify(self, token: str) -> AccessClaims:
        try:
            return self._verifier.verify(token, await self._keys.ring())
        except TokenError as exc:
            if "unknown or retired" not in str(exc):
                raise
            # Another process may have rotated keys since our cache was filled.
            return self._verifier.verify(token, await self._keys.ring(refresh=True))


def _takes_session(route: object) -> bool:
    """Whether `route` (the scope's matched route) depends on `request_session`."""
    root = getattr(route, "dependant", None)
    pending: list[Dependant] = [root] if isinstance(root, Dependant) else []
    while pending:
        dependant = pending.pop()
        if dependant.call is request_session:
            return True
        pending.extend(dependant.dependencies)
    return False
