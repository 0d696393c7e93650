"""Federated login: a tenant delegates the password step to its own OIDC provider.

authlib's OAuth client runs the authorization-code flow (with PKCE) against the IdP named in
the tenant's configuration; the ID token is verified with joserfc against the IdP's JWKS
(issuer, audience, nonce, expiry). The IdP's `amr` or `acr` decides whether it already proved
a second factor; if not, the user still passes ours. Only users linked beforehand can sign in
this way.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import text

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.sealed import IDP_CLIENT_SECRET

__all__ = [
    "DEFAULT_MFA_AMR",
    "LOOPBACK",
    "FederatedLogin",
    "Federation",
    "FederationError",
    "IdentityProvider",
    "issuer_allowed",
]

log = structlog.get_logger(__name__)

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
#: RFC 8176 amr values that say the IdP itself checked a second factor.
DEFAULT_MFA_AMR = ("mfa", "otp", "hwk", "swk")
TIMEOUT_SECONDS = 5.0  # every call to an IdP is bounded
TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS)
ID_TOKEN_ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]


class FederationError(Exception):
    """The IdP round trip failed or its answer is not acceptable; safe to log."""


@dataclass(frozen=True)
class IdentityProvider:
    tenant: uuid.UUID
    issuer: str
    client_id: str
    client_secret: str | None
    mfa_amr: frozenset[str]
    mfa_acr: frozenset[str]


@dataclass(frozen=True)
class FederatedLogin:
    user_id: uuid.UUID
    username: str
    mfa_done: bool


def issuer_allowed(issuer: str) -> bool:
    """IdPs are reached over https; plain http only on this machine (tests, local IdPs)."""
    parts = urlsplit(issuer)
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)


class Federation:
    def __init__(
        self, database: Database, fields: SealedFields, audit: AuditLog, *, redirect_uri: str
    ) -> None:
        self._db = database
        self._audit = audit
        self._fields = fields
        self.redirect_uri = redirect_uri

    async def provider(self, tenant: uuid.UUID) -> IdentityProvider | None:
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT issuer, client_id, sealed_client_secret, mfa_amr, mfa_acr "
                        "FROM tenant_identity_providers WHERE tenant_id = :tenant"
                    ),
                    {"tenant": tenant},
                )
            ).first()
            if row is None:
                return None
            secret = (
                (
                    await self._fields.open(session, tenant, IDP_CLIENT_SECRET, tenant, row[2])
                ).decode()
                if row[2] is not None
                else None
            )
        return IdentityProvider(
            tenant, row[0], row[1], secret, frozenset(row[3]), frozenset(row[4])
        )

    async def _metadata(self, idp: IdentityProvider) -> dict[str, Any]:
        if not issuer_allowed(idp.issuer):
            raise FederationError("IdP issuers must use https (plain http only on loopback)")
        url = f"{idp.issuer.rstrip('/')}/.well-known/openid-configuration"
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False) as client:
            response = await client.get(url)
        if response.status_code != 200:
            raise FederationError(f"IdP discovery answered {response.status_code}")
        metadata: dict[str, Any] = response.json()
        if metadata.get("issuer") != idp.issuer:
            raise FederationError("IdP discovery names another issuer")
        return metadata

    def _client(self, idp: IdentityProvider) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=idp.client_id,
            client_secret=idp.client_secret,
            token_endpoint_auth_method="client_secret_post" if idp.client_secret else "none",
            redirect_uri=self.redirect_uri,
            scope="openid",
            code_challenge_method="S256",
            timeout=TIMEOUT_SECONDS,
        )

    async def start(self, idp: IdentityProvider) -> tuple[str, dict[str, str]]:
        """The IdP authorization URL and the state to keep for the callback."""
        metadata = await self._metadata(idp)
        verifier, nonce = secrets.token_urlsafe(48), secrets.token_urlsafe(24)
        async with self._client(idp) as client:
            url, state = client.create_authorization_url(
                metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
            )
        return url, {"state": state, "verifier": verifier, "nonce": nonce}

    async def finish(
        self, idp: IdentityProvider, pending: dict[str, str], callback_url: str
    ) -> FederatedLogin:
        """The linked user the IdP vouches for; a refusal is recorded on the tenant's chain."""
        try:
            return await self._finish(idp, pending, callback_url)
        except FederationError as exc:
            await self._audit.record_apart(
                idp.tenant,
                Actor("anonymous", tenant=idp.tenant),
                Action.FEDERATED_LOGIN_FAILED,
                Resource("identity_provider", idp.issuer),
                Decision.DENY,
                {"reason": str(exc)},
            )
            raise

    async def _finish(
        self, idp: IdentityProvider, pending: dict[str, str], callback_url: str
    ) -> FederatedLogin:
        metadata = await self._metadata(idp)
        try:
            async with self._client(idp) as client:
                tokens = await client.fetch_token(
                    metadata["token_endpoint"],
                    authorization_response=callback_url,
                    code_verifier=pending["verifier"],
                    state=pending["state"],
                )
                jwks = (await client.get(metadata["jwks_uri"])).json()
        except Exception as exc:  # authlib and httpx raise many kinds  # noqa: BLE001
            raise FederationError(
                f"IdP token exchange failed: {type(exc).__name__}: {exc}"
            ) from None
        claims = self._verify_id_token(idp, str(tokens.get("id_token", "")), jwks, pending["nonce"])
        subject = str(claims["sub"])
        async with self._db.tenant_session(idp.tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT u.id, u.username FROM federated_identities f JOIN users u "
                        "ON u.tenant_id = f.tenant_id AND u.id = f.user_id "
                        "WHERE f.tenant_id = :tenant AND f.issuer = :issuer AND f.subject = :sub "
                        "AND u.is_active"
                    ),
                    {"tenant": idp.tenant, "issuer": idp.issuer, "sub": subject},
                )
            ).first()
        if row is None:
            raise FederationError("this IdP account is not linked to a user here")
        amr = tuple(a for a in claims.get("amr", []) if isinstance(a, str))
        acr = claims.get("acr")
        mfa_done = bool(idp.mfa_amr & set(amr)) or (isinstance(acr, str) and acr in idp.mfa_acr)
        return FederatedLogin(row[0], row[1], mfa_done=mfa_done)

    def _verify_id_token(
        self, idp: IdentityProvider, token: str, jwks: dict[str, Any], nonce: str
    ) -> dict[str, Any]:
        try:
            keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
            decoded = jwt.decode(token, keys, algorithms=ID_TOKEN_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": idp.issuer},
                aud={"essential": True, "value": idp.client_id},
                nonce={"essential": True, "value": nonce},
                sub={"essential": True},
                exp={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise FederationError(f"IdP ID token refused: {exc}") from None
        return decoded.claims
