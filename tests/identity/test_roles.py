"""Roles: the runtime knows `admin`; every other role is a served app's. A membership gets
nothing else, and the refusal says which roles there are."""

from __future__ import annotations

import asyncio
import secrets

import psycopg
import pytest

from ramparts.audit.services import AuditLog
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.identity.models import ADMIN_ROLE
from ramparts.identity.services import Provisioning, UnknownRoleError
from ramparts.quotes.roles import BUYER, ROLES
from tests.identity.helpers import TEST_REDACTOR


def _roles_of(urls: DatabaseUrls, username: str) -> set[str]:
    with psycopg.connect(libpq(urls.owner)) as conn:
        return {
            row[0]
            for row in conn.execute(
                "SELECT m.role FROM memberships m JOIN users u ON u.id = m.user_id "
                "AND u.tenant_id = m.tenant_id WHERE u.username = %s",
                (username,),
            )
        }


def test_a_membership_is_admin_or_a_role_of_a_served_app(urls: DatabaseUrls, kms: Kms) -> None:
    slug = f"roles-{secrets.token_hex(4)}"

    async def run() -> None:
        owner = Database(urls.owner, pool_size=1)
        audit = AuditLog(owner, TEST_REDACTOR)
        try:
            runtime_only = Provisioning(owner, kms, audit)  # no app served
            served = Provisioning(owner, kms, audit, roles={ADMIN_ROLE, *ROLES})
            tenant = await served.ensure_tenant(slug=slug, name="Roles", region="eu")
            await served.set_user(
                tenant,
                username=f"ann@{slug}.example",
                display_name="Ann",
                password="a long enough password 1",  # pragma: allowlist secret
                roles=[BUYER, ADMIN_ROLE],
            )
            with pytest.raises(UnknownRoleError) as refused:
                await runtime_only.set_user(
                    tenant,
                    username=f"ann@{slug}.example",
                    display_name="Ann",
                    password="another long password 2",  # pragma: allowlist secret
                    roles=[BUYER],
                )
            assert str(refused.value) == (
                "unknown role 'buyer': a role is 'admin' or one of the served apps' (none)"
            )
            with pytest.raises(UnknownRoleError, match=r"unknown role 'auditor', 'clerk'"):
                await served.set_user(
                    tenant,
                    username=f"bob@{slug}.example",
                    display_name="Bob",
                    password="a third long password 3",  # pragma: allowlist secret
                    roles=["clerk", BUYER, "auditor"],
                )
        finally:
            await owner.dispose()

    asyncio.run(run())
    assert _roles_of(urls, f"ann@{slug}.example") == {BUYER, ADMIN_ROLE}  # the refusal kept it
    assert _roles_of(urls, f"bob@{slug}.example") == set()  # nobody created half-way
