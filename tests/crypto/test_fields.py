"""Envelope and field encryption against a real PostgreSQL: round trip, tampering, rotation,
and crypto-shredding."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from ramparts.crypto.fields import FieldCipher, FieldDecryptionError
from ramparts.crypto.keys import DataKeys, KeyShreddedError
from ramparts.crypto.kms import KmsError, tenant_key
from ramparts.db.engine import Database, DatabaseUrls, libpq
from tests.live import temporary_kms

pytestmark = pytest.mark.anyio
CIPHER = FieldCipher()
IBAN = b"DE89370400440532013000"  # pragma: allowlist secret


def seal(key: object, row: str = "row-1", column: str = "iban") -> bytes:
    return CIPHER.seal(key, table="payees", column=column, row=row, value=IBAN)  # type: ignore[arg-type]


async def test_round_trip_and_every_swap_refused(urls: DatabaseUrls, tmp_path: Path) -> None:
    keys = DataKeys(temporary_kms(tmp_path))
    database = Database(urls.app, pool_size=1)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    try:
        async with database.tenant_session(tenant) as session:
            key = await keys.current(session, tenant)
        async with database.tenant_session(other) as session:
            other_key = await keys.current(session, other)
    finally:
        await database.dispose()
    sealed = seal(key)
    assert IBAN not in sealed
    assert CIPHER.open(key, table="payees", column="iban", row="row-1", sealed=sealed) == IBAN
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    for attempt in [
        lambda: CIPHER.open(key, table="payees", column="iban", row="row-1", sealed=bytes(flipped)),
        lambda: CIPHER.open(key, table="payees", column="iban", row="row-2", sealed=sealed),
        lambda: CIPHER.open(key, table="payees", column="tax_id", row="row-1", sealed=sealed),
        lambda: CIPHER.open(other_key, table="payees", column="iban", row="row-1", sealed=sealed),
    ]:
        with pytest.raises(FieldDecryptionError):
            attempt()


async def test_rotation_keeps_old_fields_readable(urls: DatabaseUrls, tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    keys = DataKeys(kms)
    database = Database(urls.app, pool_size=1)
    tenant = uuid.uuid4()
    try:
        async with database.tenant_session(tenant) as session:
            first = await keys.current(session, tenant)
            old = seal(first)
            second = await keys.rotate(session, tenant)
            kms.rotate(tenant_key(tenant))  # the KMS key too: earlier wrappings still unwrap
            third = await keys.rotate(session, tenant)
        async with database.tenant_session(tenant) as session:
            fresh = DataKeys(kms)  # no cache: everything unwrapped from the database
            assert (await fresh.current(session, tenant)).version == third.version == 3
            opened_with = await fresh.version(session, tenant, FieldCipher.version_of(old))
    finally:
        await database.dispose()
    assert second.version == 2
    assert CIPHER.open(opened_with, table="payees", column="iban", row="row-1", sealed=old) == IBAN


async def test_deleting_a_tenants_keys_shreds_its_fields(
    urls: DatabaseUrls, tmp_path: Path
) -> None:
    kms = temporary_kms(tmp_path)
    database, owner = Database(urls.app, pool_size=1), Database(urls.owner, pool_size=1)
    tenant = uuid.uuid4()
    try:
        async with database.tenant_session(tenant) as session:
            field = seal(await DataKeys(kms).current(session, tenant))
        with psycopg.connect(libpq(urls.owner)) as conn:  # a backup: the field and its keys
            backup = conn.execute(
                "SELECT tenant_id, purpose, version, kms_key, wrapped FROM tenant_data_keys "
                "WHERE tenant_id = %s",
                (tenant,),
            ).fetchall()
        assert len(backup) == 1
        with psycopg.connect(libpq(urls.app)) as app:
            app.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute("DELETE FROM tenant_data_keys")  # the runtime role cannot shred
        async with owner.tenant_session(tenant) as session:
            assert await DataKeys(kms).shred(session, tenant) == 1
        async with database.tenant_session(tenant) as session:
            with pytest.raises(KeyShreddedError):
                await DataKeys(kms).version(session, tenant, FieldCipher.version_of(field))
        with psycopg.connect(libpq(urls.owner)) as conn:  # the backup restored
            conn.cursor().executemany(
                "INSERT INTO tenant_data_keys (tenant_id, purpose, version, kms_key, wrapped) "
                "VALUES (%s, %s, %s, %s, %s)",
                backup,
            )
        async with database.tenant_session(tenant) as session:
            # The wrapped data key is back, but the tenant's KMS key is gone: it unwraps nowhere.
            with pytest.raises(KmsError, match="does not exist"):
                await DataKeys(kms).version(session, tenant, FieldCipher.version_of(field))
    finally:
        await database.dispose()
        await owner.dispose()


async def test_blind_indexes_match_equal_values_per_tenant(
    urls: DatabaseUrls, tmp_path: Path
) -> None:
    keys = DataKeys(temporary_kms(tmp_path))
    database = Database(urls.app, pool_size=1)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    try:
        async with database.tenant_session(tenant) as session:
            index_key = await keys.index_key(session, tenant)
            assert await keys.index_key(session, tenant) == index_key
        async with database.tenant_session(other) as session:
            other_index = await keys.index_key(session, other)
    finally:
        await database.dispose()
    spaced = FieldCipher.blind_index(index_key, column="iban", value="de89 3704 0044 0532 0130 00")
    compact = FieldCipher.blind_index(index_key, column="iban", value="DE89370400440532013000")
    assert spaced == compact
    assert (
        FieldCipher.blind_index(other_index, column="iban", value="DE89370400440532013000")
        != compact
    )
