"""Service-to-service clients (control ID-3): per tenant, authenticated with private_key_jwt
(RFC 7523) or mutual TLS (RFC 8705 tls_client_auth), issued client_credentials tokens for one
audience at a time (RFC 8707). There are no shared secrets to leak: a client proves possession
of a private key, either in a signed assertion or in the TLS handshake."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import text

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database
from ramparts.identity.oauth import KeyCache, OAuthError
from ramparts.identity.tokens import TokenIssuer

__all__ = ["ASSERTION_TYPE", "ServiceClient", "ServiceClients", "new_client_id"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["ES256"]
MAX_ASSERTION_SECONDS = 300


@dataclass(frozen=True)
class ServiceClient:
    tenant: uuid.UUID
    client_id: str
    auth_method: str
    resources: tuple[str, ...]
    roles: tuple[str, ...]
    jwks: dict[str, Any] | None
    certificate_thumbprint: str | None


def new_client_id(tenant: uuid.UUID) -> str:
    return f"svc.{tenant.hex}.{secrets.token_urlsafe(16)}"


def _tenant_of(client_id: str) -> uuid.UUID | None:
    parts = client_id.split(".")
    if len(parts) != 3 or parts[0] != "svc":
        return None
    try:
        return uuid.UUID(hex=parts[1])
    except ValueError:
        return None


class ServiceClients:
    def __init__(
        self,
        database: Database,
        issuer: TokenIssuer,
        keys: KeyCache,
        audit: AuditLog,
        *,
        token_endpoint: str,
    ) -> None:
        self._db = database
        self._issuer = issuer
        self._keys = keys
        self._audit = audit
        self._token_endpoint = token_endpoint

    async def find(self, client_id: str) -> ServiceClient | None:
        tenant = _tenant_of(client_id)
        if tenant is None:
            return None
        async with self._db.tenant_session(tenant) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT auth_method, resources, roles, jwks, certificate_thumbprint "
                        "FROM service_clients WHERE tenant_id = :tenant AND client_id = :id "
                        "AND revoked_at IS NULL"
                    ),
                    {"tenant": tenant, "id": client_id},
                )
            ).first()
        if row is None:
            return None
        return ServiceClient(
            tenant, client_id, row[0], tuple(row[1]), tuple(row[2]), row[3], row[4]
        )

    async def authenticate_assertion(self, assertion: str) -> ServiceClient:
        """RFC 7523 section 3: iss = sub = client_id, aud = our token endpoint, short-lived,
        signed by one of the client's registered keys, and each jti accepted once."""
        try:
            unverified = json.loads(jws.extract_compact(assertion.encode()).payload)
        except (JoseError, ValueError, UnicodeError):
            raise OAuthError("invalid_client", "malformed client assertion", status=401) from None
        client_id = unverified.get("iss") if isinstance(unverified, dict) else None
        client = await self.find(client_id) if isinstance(client_id, str) else None
        if client is None or client.auth_method != "private_key_jwt" or client.jwks is None:
            raise await self._refused(client, "unknown client")
        try:
            keys = KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
            decoded = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": client.client_id},
                sub={"essential": True, "value": client.client_id},
                aud={"essential": True, "value": self._token_endpoint},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except JoseError as exc:
            raise await self._refused(client, f"client assertion refused: {exc}") from None
        expires = int(decoded.claims["exp"])
        if expires > time.time() + MAX_ASSERTION_SECONDS:
            raise await self._refused(client, "client assertion lives too long")
        async with self._db.tenant_session(client.tenant) as session:
            fresh = await session.execute(
                text(
                    "INSERT INTO client_assertions (tenant_id, client_id, jti, expires_at) "
                    "VALUES (:tenant, :client, :jti, :expires) ON CONFLICT DO NOTHING"
                ),
                {
                    "tenant": client.tenant,
                    "client": client.client_id,
                    "jti": str(decoded.claims["jti"])[:200],
                    "expires": datetime.fromtimestamp(expires, UTC),
                },
            )
        if not getattr(fresh, "rowcount", 0):
            raise await self._refused(
                client, "client assertion already used", Action.CLIENT_ASSERTION_REPLAYED
            )
        return client

    async def authenticate_certificate(
        self, client_id: str, thumbprint: str | None
    ) -> ServiceClient:
        """RFC 8705 tls_client_auth: the verified TLS client certificate is the credential."""
        client = await self.find(client_id)
        if (
            client is None
            or client.auth_method != "tls_client_auth"
            or thumbprint is None
            or client.certificate_thumbprint is None
            or not secrets.compare_digest(client.certificate_thumbprint, thumbprint)
        ):
            raise await self._refused(client, "client certificate refused")
        return client

    async def _refused(
        self,
        client: ServiceClient | None,
        reason: str,
        action: Action = Action.CLIENT_AUTHENTICATION_FAILED,
    ) -> OAuthError:
        """Record a refused client on its tenant's chain (the system chain when unknown)."""
        tenant = client.tenant if client else None
        await self._audit.record_apart(
            tenant,
            Actor("service", tenant=tenant, client_id=client.client_id if client else None),
            action,
            Resource("service_client", client.client_id if client else None),
            Decision.DENY,
            {"reason": reason},
        )
        return OAuthError("invalid_client", reason.split(":", maxsplit=1)[0], status=401)

    async def token(
        self, client: ServiceClient, resource: str, thumbprint: str | None
    ) -> dict[str, Any]:
        actor = Actor("service", tenant=client.tenant, id=client.client_id, roles=client.roles)
        if resource not in client.resources:
            await self._audit.record_apart(
                client.tenant,
                actor,
                Action.TOKEN_REFUSED,
                Resource("audience", resource[:200]),
                Decision.DENY,
                {"reason": "resource not allowed for this client"},
            )
            raise OAuthError("invalid_target", "this client may not request that resource")
        bound = thumbprint if client.auth_method == "tls_client_auth" else None
        ring = await self._keys.ring()
        token, jti, expires = self._issuer.service_token(
            ring,
            client_id=client.client_id,
            tenant=client.tenant,
            roles=list(client.roles),
            audience=resource,
            certificate_thumbprint=bound,
        )
        async with self._db.tenant_session(client.tenant) as session:
            await session.execute(
                text(
                    "INSERT INTO access_tokens (tenant_id, jti, expires_at) "
                    "VALUES (:tenant, :jti, :expires)"
                ),
                {"tenant": client.tenant, "jti": jti, "expires": expires},
            )
            await self._audit.record(
                session,
                actor,
                Action.TOKEN_ISSUED,
                Resource("access_token", str(jti)),
                Decision.ALLOW,
                {"audience": resource, "certificate_bound": bool(bound)},
            )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self._issuer.access_seconds,
        }
