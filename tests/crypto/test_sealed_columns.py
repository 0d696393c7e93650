"""Encrypted columns in a real database: plaintext refused at two layers, no second factor or
password in the clear anywhere, data key rotation with a resumable re-encryption, and tenant
deletion that crypto-shreds even a backup."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pyotp
import pytest
from psycopg import errors, sql
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from ramparts.audit.services import AuditLog
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms, KmsError
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.demo import seed_demo
from ramparts.identity.models import Role
from ramparts.identity.sealed import TOTP_SECRET
from ramparts.identity.services import TenantRecord
from tests.identity.helpers import TEST_REDACTOR, provision, provisioning_for
from tests.live import temporary_kms

pytestmark = pytest.mark.anyio


class JobInterruptedError(Exception):
    pass


def test_the_database_refuses_plaintext_secrets(urls: DatabaseUrls, kms: Kms) -> None:
    account = provision(urls, kms)
    assert account.totp_secret is not None
    with psycopg.connect(libpq(urls.owner)) as conn:
        for statement, value in [
            ("UPDATE totp_credentials SET sealed_secret = %s WHERE tenant_id = %s", b""),
            (
                "UPDATE totp_credentials SET sealed_secret = %s WHERE tenant_id = %s",
                account.totp_secret.encode() * 2,  # long enough, but not a sealed field
            ),
            (
                "UPDATE signing_keys SET sealed_private = %s WHERE %s IS NOT NULL",
                b'{"kty": "EC", "d": "private"}',
            ),
        ]:
            with conn.transaction(), pytest.raises(errors.CheckViolation):
                conn.execute(statement, (value, account.tenant_id))


async def test_the_column_type_binds_only_sealed_values(urls: DatabaseUrls, kms: Kms) -> None:
    account = await asyncio.to_thread(provision, urls, kms)
    database = Database(urls.app, pool_size=1)
    try:
        with pytest.raises(StatementError, match="only values sealed by SealedFields"):
            async with database.tenant_session(account.tenant_id) as session:
                await session.execute(
                    text(
                        "UPDATE totp_credentials SET sealed_secret = :sealed "
                        "WHERE tenant_id = :tenant"
                    ).bindparams(TOTP_SECRET.param("sealed")),
                    {"sealed": b"plain", "tenant": account.tenant_id},
                )
    finally:
        await database.dispose()


async def test_no_password_or_second_factor_is_stored_in_the_clear(
    make_database: Callable[..., DatabaseUrls], tmp_path: Path
) -> None:
    urls = make_database()
    owner = Database(urls.owner, pool_size=1)
    try:
        report = await seed_demo(
            owner,
            temporary_kms(tmp_path),
            AuditLog(owner, TEST_REDACTOR),
            public_url="http://127.0.0.1:8000",
        )
    finally:
        await owner.dispose()
    secrets_and_passwords = [u["password"] for u in report["users"]] + [
        u["totp_secret"] for u in report["users"]
    ]
    forms = set()
    for value in secrets_and_passwords:
        forms |= {value.lower(), value.encode().hex()}
    forms |= {base64.b32decode(u["totp_secret"]).hex() for u in report["users"]}
    with psycopg.connect(libpq(urls.owner)) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        dump = "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(
                sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            )
        ).lower()
    assert "totp_credentials" in tables
    assert len(dump) > 10_000  # the demo data is really there
    leaked = [form for form in forms if form in dump]
    assert leaked == []


async def _sealed_versions(owner: Database, tenant: uuid.UUID) -> list[int]:
    async with owner.session() as session:
        rows = await session.scalars(
            text(
                "SELECT ramparts_sealed_version(sealed_secret) FROM totp_credentials "
                "WHERE tenant_id = :tenant ORDER BY user_id"
            ),
            {"tenant": tenant},
        )
        return list(rows)


async def test_rotation_reencrypts_every_field_and_resumes_after_interruption(
    urls: DatabaseUrls, kms: Kms
) -> None:
    first = await asyncio.to_thread(provision, urls, kms)
    accounts = [first]
    for _ in range(4):
        more = await asyncio.to_thread(
            provision, urls, kms, roles=(Role.SELLER,), tenant=first.tenant
        )
        accounts.append(more)
    record = TenantRecord(first.tenant_id, first.tenant, first.tenant, "eu")
    owner = Database(urls.owner, pool_size=1)
    try:
        provisioning = provisioning_for(owner, kms)
        assert await _sealed_versions(owner, record.id) == [1] * 5
        assert await provisioning.rotate_data_key(record) == 2
        seen: list[tuple[int, int]] = []

        def stop_after_first_batch(done: int, total: int) -> None:
            seen.append((done, total))
            if done:
                raise JobInterruptedError

        with pytest.raises(JobInterruptedError):
            await provisioning.reencrypt(record, progress=stop_after_first_batch, batch=2)
        assert seen == [(0, 5), (2, 5)]
        assert sorted(await _sealed_versions(owner, record.id)) == [1, 1, 1, 2, 2]
        assert await provisioning.reencrypt(record, batch=2) == 3  # resumes: only the rest
        assert await _sealed_versions(owner, record.id) == [2] * 5
        assert await provisioning.reencrypt(record) == 0  # nothing left: a no-op
        fields = SealedFields(DataKeys(kms))
        async with owner.tenant_session(record.id) as session:
            for account in accounts:
                sealed = await session.scalar(
                    text(
                        "SELECT sealed_secret FROM totp_credentials "
                        "WHERE tenant_id = :tenant AND user_id = :user"
                    ),
                    {"tenant": record.id, "user": account.user_id},
                )
                opened = await fields.open(session, record.id, TOTP_SECRET, account.user_id, sealed)
                assert opened.decode() == account.totp_secret
                assert pyotp.TOTP(opened.decode()).now()
    finally:
        await owner.dispose()


async def test_deleting_a_tenant_crypto_shreds_it_even_from_a_backup(
    urls: DatabaseUrls, kms: Kms
) -> None:
    account = await asyncio.to_thread(provision, urls, kms)
    record = TenantRecord(account.tenant_id, account.tenant, account.tenant, "eu")
    with psycopg.connect(libpq(urls.owner)) as conn:  # the backup
        sealed = conn.execute(
            "SELECT sealed_secret FROM totp_credentials WHERE tenant_id = %s", (record.id,)
        ).fetchone()
        keys = conn.execute(
            "SELECT tenant_id, purpose, version, kms_key, wrapped FROM tenant_data_keys "
            "WHERE tenant_id = %s",
            (record.id,),
        ).fetchall()
    assert sealed is not None
    assert keys
    owner = Database(urls.owner, pool_size=1)
    try:
        assert await provisioning_for(owner, kms).delete_tenant(record) == len(keys)
        with psycopg.connect(libpq(urls.owner)) as conn:
            for table in ("tenants", "users", "totp_credentials", "tenant_data_keys"):
                column = "id" if table == "tenants" else "tenant_id"
                count = conn.execute(
                    sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                        sql.Identifier(table), sql.Identifier(column)
                    ),
                    (record.id,),
                ).fetchone()
                assert count == (0,), table
            deleted = conn.execute(
                "SELECT body::jsonb->'details' FROM audit_events "
                "WHERE audit_action(body) = 'identity:tenant:deleted' "
                "AND body::jsonb->'resource'->>'id' = %s",
                (str(record.id),),
            ).fetchall()
            assert len(deleted) == 1
            conn.cursor().executemany(  # the backup restored
                "INSERT INTO tenant_data_keys (tenant_id, purpose, version, kms_key, wrapped) "
                "VALUES (%s, %s, %s, %s, %s)",
                keys,
            )
        fields = SealedFields(DataKeys(kms))
        async with owner.tenant_session(record.id) as session:
            with pytest.raises(KmsError, match="does not exist"):
                await fields.open(session, record.id, TOTP_SECRET, account.user_id, sealed[0])
    finally:
        await owner.dispose()
