"""What the identity routes reach through FastAPI dependencies: the identity services the app
was built with, the signed-in caller, and the rules every protocol endpoint reads its
parameters by.

No `from __future__ import annotations`: FastAPI evaluates the signatures of these
dependencies, and of the routes that take them.
"""

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.identity.auth import BearerAuthenticator, Principal, actor_of
from ramparts.identity.clients import ServiceClients
from ramparts.identity.federation import Federation
from ramparts.identity.flow import FlowCodec, FlowStore
from ramparts.identity.login import Authenticator
from ramparts.identity.oauth import KeyCache, OAuthError, OAuthService, single_valued
from ramparts.identity.passkeys import Passkeys
from ramparts.identity.tokens import TokenVerifier
from ramparts.problems import Problem, ProblemType

__all__ = [
    "Caller",
    "Identity",
    "IdentityHttp",
    "body_params",
    "no_repeated_params",
    "refused",
    "user_of",
]


@dataclass(frozen=True)
class IdentityHttp:
    """The services behind the identity routes; the app keeps one in `app.state.identity`."""

    issuer: str
    oauth: OAuthService
    authenticator: Authenticator
    flows: FlowCodec
    flow_store: FlowStore
    keys: KeyCache
    verifier: TokenVerifier
    bearer: BearerAuthenticator
    passkeys: Passkeys
    services: ServiceClients
    federation: Federation
    audit: AuditLog

    @property
    def secure_cookies(self) -> bool:
        return self.issuer.startswith("https://")

    @property
    def cookie(self) -> str:
        # __Host- pins the cookie to our origin (Secure, Path=/, no Domain) where https allows.
        return "__Host-ramparts_login" if self.secure_cookies else "ramparts_login"


def identity_http(request: Request) -> IdentityHttp:
    identity: IdentityHttp = request.app.state.identity
    return identity


Identity = Annotated[IdentityHttp, Depends(identity_http)]


async def caller(request: Request, identity: Identity) -> Principal:
    """The principal the request's bearer token proves (verified once per request)."""
    return await identity.bearer(request)


Caller = Annotated[Principal, Depends(caller)]


async def body_params(request: Request) -> dict[str, str]:
    """A POST endpoint's parameters: in the form body only (RFC 6749 3.2, RFC 7009 2.1),
    so codes, verifiers and tokens never sit in a URL, each name at most once."""
    if request.query_params:
        raise OAuthError("invalid_request", "send the parameters in the form body")
    return single_valued((await request.form()).multi_items())


async def no_repeated_params(request: Request) -> None:
    """For endpoints that take no parameters: a repeated one is refused all the same."""
    try:
        if request.method == "POST":
            await body_params(request)
        else:
            single_valued(request.query_params.multi_items())
    except OAuthError as exc:
        raise Problem(400, ProblemType.INVALID_REQUEST, exc.description) from None


async def refused(
    identity: IdentityHttp, principal: Principal, action: Action, problem: Problem
) -> Problem:
    """Record a refused request of a signed-in caller and return the problem to raise."""
    await identity.audit.record_apart(
        principal.tenant_id,
        actor_of(principal),
        action,
        Resource("user", str(principal.user_id) if principal.user_id else None),
        Decision.DENY,
        {"reason": problem.detail, "status": problem.status},
    )
    return problem


async def user_of(identity: IdentityHttp, principal: Principal) -> uuid.UUID:
    """The signed-in person; a service client has no user account to act on."""
    if principal.user_id is None:
        raise await refused(
            identity,
            principal,
            Action.USER_ENDPOINT_REFUSED,
            Problem(403, ProblemType.NOT_A_USER, "this endpoint is for users, not services"),
        )
    return principal.user_id
