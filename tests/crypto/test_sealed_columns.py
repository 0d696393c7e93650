"""Encrypted columns in a real database: plaintext refused at two layers, no second factor or
password in the clear anywhere, every sealed column declared and so covered by rotation, data
key rotation with a resumable re-encryption, and tenant deletion that crypto-shreds even a
backup."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyotp
import pytest
from psycopg import errors, sql
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from ramparts.ai.conversations import CONVERSATION_TOKENS
from ramparts.apps import App, encrypted_columns_of, installed_apps, migration_branches
from ramparts.audit.services import AuditLog
from ramparts.crypto.fields import FieldCipher
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms, KmsError
from ramparts.crypto.sealing import (
    EncryptedColumn,
    RowsLockedError,
    SealedFields,
    UndeclaredColumnsError,
    encrypted_columns,
)
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.db.migrate import upgrade
from ramparts.demo import seed_demo
from ramparts.identity.sealed import TOTP_SECRET
from ramparts.identity.services import Provisioning, TenantRecord
from ramparts.quotes.roles import SELLER
from tests.audit.trail import sequence
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
            apps=list(installed_apps().values()),
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


def test_every_sealed_column_of_the_database_is_declared(urls: DatabaseUrls) -> None:
    """Rotation and shredding work from the declared columns: a column of the `sealed_field`
    domain that nobody declared would stay under an old key forever, so it fails here."""
    with psycopg.connect(libpq(urls.owner)) as conn:
        in_database = set(
            conn.execute(
                "SELECT table_name::text, column_name::text FROM information_schema.columns "
                "WHERE domain_name = 'sealed_field'"
            ).fetchall()
        )
        declared = encrypted_columns(encrypted_columns_of(installed_apps().values()))
        assert in_database == {(c.table, c.column) for c in declared}
        for column in declared:  # every declared row expression names a row of its table
            conn.execute(
                sql.SQL("SELECT ({})::text, tenant_id FROM {} LIMIT 0").format(
                    sql.SQL(column.row), sql.Identifier(column.table)
                )
            )
    # One column, one AAD: a second declaration naming its rows differently is refused.
    with pytest.raises(ValueError, match="declared twice"):
        EncryptedColumn(TOTP_SECRET.table, TOTP_SECRET.column, row="tenant_id")


async def test_rotation_and_shredding_reach_the_assistants_sealed_tokens(
    urls: DatabaseUrls, kms: Kms
) -> None:
    account = await asyncio.to_thread(provision, urls, kms)
    record = TenantRecord(account.tenant_id, account.tenant, account.tenant, "eu")
    conversation, tokens = uuid.uuid4(), b'{"<EMAIL_1>": "ana@example.com"}'
    owner = Database(urls.owner, pool_size=1)
    fields = SealedFields(DataKeys(kms))
    try:
        async with owner.tenant_session(record.id) as session:
            sealed = await fields.seal(
                session, record.id, CONVERSATION_TOKENS, conversation, tokens
            )
            await session.execute(
                text(
                    "INSERT INTO ai_conversations (tenant_id, id, user_id, sealed_tokens) "
                    "VALUES (:tenant, :id, :user, :sealed)"
                ).bindparams(CONVERSATION_TOKENS.param("sealed")),
                {
                    "tenant": record.id,
                    "id": conversation,
                    "user": account.user_id,
                    "sealed": sealed,
                },
            )
        provisioning = provisioning_for(owner, kms)
        assert await provisioning.rotate_data_key(record) == 2
        assert await provisioning.reencrypt(record) == 2  # the TOTP secret and the tokens
        async with owner.tenant_session(record.id) as session:
            resealed = await session.scalar(
                text(
                    "SELECT sealed_tokens FROM ai_conversations WHERE tenant_id = :t AND id = :id"
                ),
                {"t": record.id, "id": conversation},
            )
            assert FieldCipher.version_of(bytes(resealed)) == 2
            assert (
                await fields.open(session, record.id, CONVERSATION_TOKENS, conversation, resealed)
                == tokens
            )

        shredded = await _delete_and_count_shredded(urls, provisioning, record)
        assert set(shredded) == {f"{c.table}.{c.column}" for c in provisioning.encrypted_columns}
        assert shredded["ai_conversations.sealed_tokens"] == 1
        assert shredded["totp_credentials.sealed_secret"] == 1
    finally:
        await owner.dispose()


#: An app that brings a table with a sealed column, and declares the column in its App.
NOTE_BODY = EncryptedColumn("sealed_notes", "body", row="id")
SEALED_APP = App(
    name="sealed_app",
    title="An app with a sealed column",
    migrations=Path(__file__).resolve().parent / "sealed_app_migrations",
    encrypted_columns=(NOTE_BODY,),
)


async def test_rotation_and_shredding_reach_an_apps_declared_columns(
    make_database: Callable[..., DatabaseUrls], kms: Kms
) -> None:
    """An app's sealed column is rotated and shredded like the runtime's, because the App
    declares it; without the declaration re-encryption refuses rather than leave it behind."""
    urls = make_database(migrate=False)
    await asyncio.to_thread(upgrade, urls, migration_branches([SEALED_APP]))
    account = await asyncio.to_thread(provision, urls, kms)
    record = TenantRecord(account.tenant_id, account.tenant, account.tenant, "eu")
    note, body = uuid.uuid4(), b"the app's secret note"
    owner = Database(urls.owner, pool_size=1)
    fields = SealedFields(DataKeys(kms))
    audit = AuditLog(owner, TEST_REDACTOR)
    try:
        async with owner.tenant_session(record.id) as session:
            sealed = await fields.seal(session, record.id, NOTE_BODY, note, body)
            await session.execute(
                text(
                    "INSERT INTO sealed_notes (tenant_id, id, body) VALUES (:t, :id, :body)"
                ).bindparams(NOTE_BODY.param("body")),
                {"t": record.id, "id": note, "body": sealed},
            )
        blind = Provisioning(owner, kms, audit)  # told nothing of the app
        assert NOTE_BODY not in blind.encrypted_columns
        assert await blind.rotate_data_key(record) == 2
        with pytest.raises(UndeclaredColumnsError, match=r"sealed_notes\.body declared by no"):
            await blind.reencrypt(record)
        assert await _note_versions(owner, record.id) == [1]  # nothing moved by the refusal

        provisioning = Provisioning(owner, kms, audit, app_columns=SEALED_APP.encrypted_columns)
        assert NOTE_BODY in provisioning.encrypted_columns
        assert await provisioning.reencrypt(record) == 2  # the TOTP secret and the note
        assert await _note_versions(owner, record.id) == [2]
        async with owner.tenant_session(record.id) as session:
            resealed = await session.scalar(
                text("SELECT body FROM sealed_notes WHERE tenant_id = :t"), {"t": record.id}
            )
            assert await fields.open(session, record.id, NOTE_BODY, note, resealed) == body

        shredded = await _delete_and_count_shredded(urls, provisioning, record)
        assert shredded["sealed_notes.body"] == 1
    finally:
        await owner.dispose()


async def _delete_and_count_shredded(
    urls: DatabaseUrls, provisioning: Provisioning, record: TenantRecord
) -> dict[str, int]:
    """Delete the tenant; the audit trail's count of the fields shredded, per column."""
    await provisioning.delete_tenant(record)
    sequence(urls)
    with psycopg.connect(libpq(urls.owner)) as conn:
        [details] = conn.execute(
            "SELECT body::jsonb->'details' FROM audit_events "
            "WHERE audit_action(body) = 'identity:tenant:deleted' "
            "AND body::jsonb->'resource'->>'id' = %s",
            (str(record.id),),
        ).fetchone() or [None]
    return {c["column"]: c["fields"] for c in details["sealed_fields_shredded"]}


async def _note_versions(owner: Database, tenant: uuid.UUID) -> list[int]:
    async with owner.tenant_session(tenant) as session:
        rows = await session.scalars(
            text("SELECT ramparts_sealed_version(body) FROM sealed_notes WHERE tenant_id = :t"),
            {"t": tenant},
        )
        return list(rows)


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
        more = await asyncio.to_thread(provision, urls, kms, roles=(SELLER,), tenant=first.tenant)
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


async def test_rotation_waits_for_rows_that_requests_hold_and_never_reports_them_done(
    urls: DatabaseUrls, kms: Kms
) -> None:
    """A row locked by a running request (a chat holds its conversation through its model
    calls) is re-sealed once released; one held too long fails the run, never passes as done."""
    first = await asyncio.to_thread(provision, urls, kms)
    second = await asyncio.to_thread(provision, urls, kms, roles=(SELLER,), tenant=first.tenant)
    record = TenantRecord(first.tenant_id, first.tenant, first.tenant, "eu")
    owner = Database(urls.owner, pool_size=2)
    held = await psycopg.AsyncConnection.connect(libpq(urls.owner))

    async def hold(account: Any) -> None:
        await held.execute(
            "SELECT 1 FROM totp_credentials WHERE tenant_id = %s AND user_id = %s FOR UPDATE",
            (record.id, account.user_id),
        )

    try:
        provisioning = provisioning_for(owner, kms)
        assert await provisioning.rotate_data_key(record) == 2
        await hold(first)
        with pytest.raises(RowsLockedError, match=r"totp_credentials\.sealed_secret"):
            await provisioning.reencrypt(record, lock_wait=0.3)
        assert sorted(await _sealed_versions(owner, record.id)) == [1, 2]  # the free one moved
        await held.rollback()

        assert await provisioning.rotate_data_key(record) == 3
        await hold(second)
        release = asyncio.get_running_loop().call_later(
            0.5, lambda: asyncio.ensure_future(held.rollback())
        )
        assert await provisioning.reencrypt(record, lock_wait=10) == 2
        release.cancel()
        assert await _sealed_versions(owner, record.id) == [3, 3]
    finally:
        await held.close()
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
        sequence(urls)
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
