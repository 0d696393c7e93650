"""Provisioning of tenants and users.

Provisioning runs on the owner's connection (the runtime role may not create tenants) but still
inside a tenant session, so the row-level security policies check every row it writes. An owner
that is a superuser bypasses RLS, so every query here also filters by tenant explicitly.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import SYSTEM_TENANT, Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms, tenant_key
from ramparts.crypto.sealing import (
    EncryptedColumn,
    SealedFields,
    count_sealed,
    encrypted_columns,
    reencrypt,
)
from ramparts.db.engine import Database
from ramparts.identity.clients import new_client_id
from ramparts.identity.federation import DEFAULT_MFA_AMR, issuer_allowed
from ramparts.identity.keys import load_key_ring, rotate_signing_key
from ramparts.identity.models import ADMIN_ROLE, Membership, Tenant, User
from ramparts.identity.passwords import check_password, hash_password
from ramparts.identity.sealed import IDP_CLIENT_SECRET, TOTP_SECRET

__all__ = ["Provisioning", "TenantRecord", "UnknownRoleError"]


#: Provisioning is run by an operator on the command line, not by a signed-in user.
OPERATOR = Actor.system("ramparts-cli")


@dataclass(frozen=True)
class TenantRecord:
    id: uuid.UUID
    slug: str
    name: str
    region: str


class UnknownRoleError(ValueError):
    """A role that is neither the runtime's `admin` nor a role of a served app."""


class Provisioning:
    """Creates tenants, users and clients; constructed with the owner's `Database`.

    `roles` are the roles a membership may hold: `admin` and those of the apps served
    (`ramparts.apps.app_roles`); `app_columns` the encrypted columns the installed apps
    declare, which key rotation and tenant shredding cover besides the runtime's own. (A
    service client's roles are what its tokens say to the policies, not memberships.)"""

    def __init__(
        self,
        owner_db: Database,
        kms: Kms,
        audit: AuditLog,
        *,
        roles: Collection[str] = (ADMIN_ROLE,),
        app_columns: Sequence[EncryptedColumn] = (),
    ) -> None:
        self._db = owner_db
        self._kms = kms
        self._keys = DataKeys(kms)
        self._fields = SealedFields(self._keys)
        self._audit = audit
        self._roles = frozenset(roles)
        self._app_columns = tuple(app_columns)

    @property
    def encrypted_columns(self) -> tuple[EncryptedColumn, ...]:
        """Every column that rotation re-encrypts and shredding counts."""
        return encrypted_columns(self._app_columns)

    def _check_roles(self, roles: Iterable[str]) -> None:
        unknown = sorted(set(roles) - self._roles)
        if unknown:
            raise UnknownRoleError(
                f"unknown role {', '.join(map(repr, unknown))}: a role is {ADMIN_ROLE!r} or one "
                f"of the served apps' ({', '.join(sorted(self._roles - {ADMIN_ROLE})) or 'none'})"
            )

    async def _record(
        self, session: AsyncSession, action: Action, resource: Resource, **details: Any
    ) -> None:
        await self._audit.record(session, OPERATOR, action, resource, Decision.ALLOW, details)

    async def ensure_tenant(
        self, *, slug: str, name: str, region: str, is_demo: bool = False
    ) -> TenantRecord:
        """Return the tenant with `slug`, creating it when it does not exist."""
        async with self._db.session() as session:
            tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
            if tenant is None:
                tenant = Tenant(
                    id=uuid.uuid4(), slug=slug, name=name, region=region, is_demo=is_demo
                )
                session.add(tenant)
        return TenantRecord(id=tenant.id, slug=tenant.slug, name=tenant.name, region=tenant.region)

    async def rotate_data_key(self, tenant: TenantRecord) -> int:
        """A new data key version for the tenant; returns it. Fields sealed under earlier
        versions still open until `reencrypt` moves them."""
        async with self._db.tenant_session(tenant.id) as session:
            key = await self._keys.rotate(session, tenant.id)
            await self._record(
                session,
                Action.DATA_KEY_ROTATED,
                Resource("tenant", str(tenant.id)),
                version=key.version,
            )
        return key.version

    async def reencrypt(
        self,
        tenant: TenantRecord,
        progress: Callable[[int, int], None] = lambda done, total: None,
        *,
        batch: int = 200,
        lock_wait: float = 30.0,
    ) -> int:
        """Re-seal the tenant's encrypted fields, in every declared column, under its newest
        data key (resumable; rows that requests hold are waited for up to `lock_wait` s)."""
        done = await reencrypt(
            self._db,
            self._keys,
            tenant.id,
            self.encrypted_columns,
            batch=batch,
            lock_wait=lock_wait,
            progress=progress,
        )
        async with self._db.tenant_session(tenant.id) as session:
            await self._record(
                session, Action.FIELDS_REENCRYPTED, Resource("tenant", str(tenant.id)), fields=done
            )
        return done

    async def rotate_kms_key(self, tenant: TenantRecord) -> dict[str, Any]:
        """A new version of the tenant's KMS key, and its data keys re-wrapped under it."""
        current = await asyncio.to_thread(self._kms.rotate, tenant_key(tenant.id))
        async with self._db.tenant_session(tenant.id) as session:
            rewrapped = await self._keys.rewrap(session, tenant.id)
            await self._record(
                session, Action.KMS_KEY_ROTATED, Resource("tenant", str(tenant.id)), key=current
            )
        return {"kms_key": current, "rewrapped": rewrapped}

    async def delete_tenant(self, tenant: TenantRecord) -> int:
        """Delete the tenant and crypto-shred it: its KMS key and data keys are destroyed, so
        its sealed fields stay unreadable in every backup. The audit trail is kept (it is
        append-only and already redacted), with how many fields of each encrypted column the
        shredding made unreadable. Returns how many data keys were shredded."""
        async with self._db.tenant_session(tenant.id) as session:
            sealed = await count_sealed(session, tenant.id, self.encrypted_columns)
            shredded = await self._keys.shred(session, tenant.id)
            await session.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant.id})
        async with self._db.tenant_session(SYSTEM_TENANT) as session:
            await self._record(
                session,
                Action.TENANT_DELETED,
                Resource("tenant", str(tenant.id)),
                slug=tenant.slug,
                data_keys_shredded=shredded,
                sealed_fields_shredded=sealed,
            )
        return shredded

    async def tenant(self, slug: str) -> TenantRecord | None:
        async with self._db.session() as session:
            tenant = await session.scalar(select(Tenant).where(Tenant.slug == slug))
        if tenant is None:
            return None
        return TenantRecord(id=tenant.id, slug=tenant.slug, name=tenant.name, region=tenant.region)

    async def revoke_service_client(self, tenant: TenantRecord, client_id: str) -> bool:
        async with self._db.tenant_session(tenant.id) as session:
            result = await session.execute(
                text(
                    "UPDATE service_clients SET revoked_at = now() WHERE tenant_id = :tenant "
                    "AND client_id = :id AND revoked_at IS NULL"
                ),
                {"tenant": tenant.id, "id": client_id},
            )
            revoked = bool(getattr(result, "rowcount", 0))
            if revoked:
                await self._record(
                    session, Action.SERVICE_CLIENT_REVOKED, Resource("service_client", client_id)
                )
        return revoked

    async def set_user(
        self,
        tenant: TenantRecord,
        *,
        username: str,
        display_name: str,
        password: str,
        roles: Iterable[str],
        totp_secret: str | None = None,
    ) -> uuid.UUID:
        """Create or reset a user: new password hash, exactly the given roles, and (when
        given) a freshly enrolled TOTP secret, sealed to this tenant and user."""
        roles = list(roles)
        self._check_roles(roles)
        async with self._db.tenant_session(tenant.id) as session:
            user = await session.scalar(
                select(User).where(User.tenant_id == tenant.id, User.username == username)
            )
            if user is None:
                user = User(
                    id=uuid.uuid4(),
                    tenant_id=tenant.id,
                    username=username,
                    display_name=display_name,
                )
                session.add(user)
            check_password(password, username=username)
            user.password_hash = hash_password(password)
            await session.flush()
            await session.execute(
                delete(Membership).where(
                    Membership.tenant_id == tenant.id, Membership.user_id == user.id
                )
            )
            session.add_all(
                Membership(tenant_id=tenant.id, user_id=user.id, role=role) for role in roles
            )
            if totp_secret is not None:
                sealed = await self._fields.seal(
                    session, tenant.id, TOTP_SECRET, user.id, totp_secret.encode()
                )
                await session.execute(
                    text(
                        "INSERT INTO totp_credentials (tenant_id, user_id, sealed_secret) "
                        "VALUES (:tenant, :user, :sealed) ON CONFLICT (tenant_id, user_id) "
                        "DO UPDATE SET sealed_secret = excluded.sealed_secret, last_step = 0"
                    ).bindparams(TOTP_SECRET.param("sealed")),
                    {"tenant": tenant.id, "user": user.id, "sealed": sealed},
                )
            await self._record(
                session,
                Action.USER_SET,
                Resource("user", str(user.id)),
                roles=sorted(roles),
                totp_enrolled=totp_secret is not None,
            )
            return user.id

    async def ensure_public_client(
        self, *, client_id: str, name: str, redirect_uri: str, post_logout_redirect_uri: str
    ) -> None:
        """Register (or update) a first-party public client that uses PKCE."""
        async with self._db.session() as session:
            await session.execute(
                text(
                    "INSERT INTO oauth_clients (client_id, name, redirect_uris, "
                    "post_logout_redirect_uris, is_public) VALUES (:id, :name, :redirects, "
                    ":logouts, true) ON CONFLICT (client_id) DO UPDATE SET name = excluded.name,"
                    " redirect_uris = excluded.redirect_uris, "
                    "post_logout_redirect_uris = excluded.post_logout_redirect_uris"
                ),
                {
                    "id": client_id,
                    "name": name,
                    "redirects": [redirect_uri],
                    "logouts": [post_logout_redirect_uri],
                },
            )

    async def create_service_client(
        self,
        tenant: TenantRecord,
        *,
        name: str,
        resources: list[str],
        roles: list[str],
        jwks: dict[str, Any] | None = None,
        certificate_thumbprint: str | None = None,
    ) -> str:
        """Register a service client; exactly one credential: public keys or a certificate."""
        if (jwks is None) == (certificate_thumbprint is None):
            raise ValueError("give either public keys (private_key_jwt) or a certificate (mTLS)")
        if jwks is not None:
            _check_jwks(jwks)
        client_id = new_client_id(tenant.id)
        async with self._db.tenant_session(tenant.id) as session:
            await session.execute(
                text(
                    "INSERT INTO service_clients (tenant_id, client_id, name, auth_method, "
                    "jwks, certificate_thumbprint, resources, roles) VALUES (:tenant, :id, "
                    ":name, :method, CAST(:jwks AS jsonb), :thumb, :resources, :roles)"
                ),
                {
                    "tenant": tenant.id,
                    "id": client_id,
                    "name": name,
                    "method": "private_key_jwt" if jwks is not None else "tls_client_auth",
                    "jwks": json.dumps(jwks) if jwks is not None else None,
                    "thumb": certificate_thumbprint,
                    "resources": resources,
                    "roles": roles,
                },
            )
            await self._record(
                session,
                Action.SERVICE_CLIENT_CREATED,
                Resource("service_client", client_id),
                resources=resources,
                roles=roles,
                auth_method="private_key_jwt" if jwks is not None else "tls_client_auth",
            )
        return client_id

    async def set_identity_provider(
        self,
        tenant: TenantRecord,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None = None,
        mfa_amr: list[str] | None = None,
        mfa_acr: list[str] | None = None,
    ) -> None:
        """Delegate this tenant's login to its own OIDC provider (the secret is sealed)."""
        if not issuer_allowed(issuer):
            raise ValueError("the issuer must be an https URL (plain http only on loopback)")
        async with self._db.tenant_session(tenant.id) as session:
            sealed = (
                await self._fields.seal(
                    session, tenant.id, IDP_CLIENT_SECRET, tenant.id, client_secret.encode()
                )
                if client_secret
                else None
            )
            await session.execute(
                text(
                    "INSERT INTO tenant_identity_providers (tenant_id, issuer, client_id, "
                    "sealed_client_secret, mfa_amr, mfa_acr) VALUES (:tenant, :issuer, "
                    ":client, :secret, :amr, :acr) ON CONFLICT (tenant_id) DO UPDATE SET "
                    "issuer = excluded.issuer, client_id = excluded.client_id, "
                    "sealed_client_secret = excluded.sealed_client_secret, "
                    "mfa_amr = excluded.mfa_amr, mfa_acr = excluded.mfa_acr"
                ).bindparams(IDP_CLIENT_SECRET.param("secret")),
                {
                    "tenant": tenant.id,
                    "issuer": issuer,
                    "client": client_id,
                    "secret": sealed,
                    "amr": mfa_amr if mfa_amr is not None else list(DEFAULT_MFA_AMR),
                    "acr": mfa_acr or [],
                },
            )
            await self._record(
                session,
                Action.IDENTITY_PROVIDER_SET,
                Resource("identity_provider", issuer),
                client_id=client_id,
            )

    async def link_username(self, tenant: TenantRecord, *, username: str, subject: str) -> None:
        """Link the tenant's user `username` to `subject` at the tenant's configured IdP."""
        async with self._db.tenant_session(tenant.id) as session:
            issuer = await session.scalar(
                text("SELECT issuer FROM tenant_identity_providers WHERE tenant_id = :tenant"),
                {"tenant": tenant.id},
            )
            user_id = await session.scalar(
                select(User.id).where(User.tenant_id == tenant.id, User.username == username)
            )
        if issuer is None:
            raise ValueError(f"tenant {tenant.slug!r} has no identity provider")
        if user_id is None:
            raise ValueError(f"no user {username!r} in tenant {tenant.slug!r}")
        await self.link_federated_identity(tenant, user_id=user_id, issuer=issuer, subject=subject)

    async def link_federated_identity(
        self, tenant: TenantRecord, *, user_id: uuid.UUID, issuer: str, subject: str
    ) -> None:
        async with self._db.tenant_session(tenant.id) as session:
            await session.execute(
                text(
                    "INSERT INTO federated_identities (tenant_id, issuer, subject, user_id) "
                    "VALUES (:tenant, :issuer, :subject, :user) ON CONFLICT DO NOTHING"
                ),
                {"tenant": tenant.id, "issuer": issuer, "subject": subject, "user": user_id},
            )
            await self._record(
                session,
                Action.FEDERATED_IDENTITY_LINKED,
                Resource("user", str(user_id)),
                issuer=issuer,
                subject=subject,
            )

    async def ensure_signing_key(self, *, overlap: timedelta) -> str | None:
        """Create the first signing key when there is none; returns its kid if created."""
        async with self._db.tenant_session(SYSTEM_TENANT) as session:
            ring = await load_key_ring(session, overlap=overlap)
            if ring.published():
                return None
            created = await self._rotate(session, overlap)
        return str(created["kid"])

    async def rotate_signing_key(self, *, overlap: timedelta) -> dict[str, Any]:
        async with self._db.tenant_session(SYSTEM_TENANT) as session:
            return await self._rotate(session, overlap)

    async def _rotate(self, session: AsyncSession, overlap: timedelta) -> dict[str, Any]:
        rotated = await rotate_signing_key(session, self._kms, overlap=overlap)
        await self._record(
            session,
            Action.SIGNING_KEY_ROTATED,
            Resource("signing_key", str(rotated["kid"])),
            published=rotated["published"],
        )
        return rotated


def _check_jwks(jwks: dict[str, Any]) -> None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys or not all(isinstance(k, dict) for k in keys):
        raise ValueError("the JWKS must hold at least one key")
    if any("d" in key for key in keys):
        raise ValueError("the JWKS contains a private key; register only public keys")
    # Assertions are verified with ES256 only: any other key could never sign one.
    if not all(
        key.get("kty") == "EC" and key.get("crv") == "P-256" and key.get("alg", "ES256") == "ES256"
        for key in keys
    ):
        raise ValueError("only ES256 keys are accepted: EC keys on curve P-256")


async def demo_data_present(session: AsyncSession) -> bool:
    """True when demo tenants or users exist, in any tenant (asked as the runtime role)."""
    return bool(await session.scalar(text("SELECT ramparts_demo_data_present()")))
