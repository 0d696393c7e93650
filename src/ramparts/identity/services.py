"""Provisioning of tenants and users.

Provisioning runs on the owner's connection (the runtime role may not create tenants) but still
inside a tenant session, so the row-level security policies check every row it writes. An owner
that is a superuser bypasses RLS, so every query here also filters by tenant explicitly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import Database
from ramparts.identity.models import Membership, Role, Tenant, User
from ramparts.identity.passwords import hash_password

__all__ = ["Provisioning", "TenantRecord"]


@dataclass(frozen=True)
class TenantRecord:
    id: uuid.UUID
    slug: str
    name: str
    region: str


class Provisioning:
    """Creates tenants and users; constructed with the owner's `Database`."""

    def __init__(self, owner_db: Database) -> None:
        self._db = owner_db

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

    async def set_user(
        self,
        tenant: TenantRecord,
        *,
        username: str,
        display_name: str,
        password: str,
        roles: Iterable[Role],
    ) -> uuid.UUID:
        """Create or reset a user: new password hash, exactly the given roles."""
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
            return user.id


async def demo_data_present(session: AsyncSession) -> bool:
    """True when demo tenants or users exist, in any tenant (asked as the runtime role)."""
    return bool(await session.scalar(text("SELECT ramparts_demo_data_present()")))
