"""`Database`: tenant sessions, tenant-less sessions and the runtime-role self-check."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

import psycopg
import pytest
from sqlalchemy import text

from ramparts.db.engine import (
    Database,
    DatabaseUrls,
    Opening,
    TransactionAbortedError,
    UnsafeRuntimeRoleError,
    driver_of,
)
from ramparts.identity.services import demo_data_present
from tests.conftest import libpq
from tests.db.test_rls import seed_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture
async def app_db(urls: DatabaseUrls) -> AsyncIterator[Database]:
    """The runtime role with a single pooled connection, so any leak would be reused."""
    database = Database(urls.app, pool_size=1)
    yield database
    await database.dispose()


async def test_tenant_session_sees_only_its_tenant(urls: DatabaseUrls, app_db: Database) -> None:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        a = seed_tenant(owner, f"e-{uuid.uuid4().hex[:8]}")
        seed_tenant(owner, f"f-{uuid.uuid4().hex[:8]}")
    async with app_db.tenant_session(a.tenant) as session:
        rows = (await session.execute(text("SELECT DISTINCT tenant_id FROM quotes"))).all()
    assert rows == [(a.tenant,)]
    async with app_db.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM quotes")) == 0


async def test_tenant_id_must_be_a_uuid(app_db: Database) -> None:
    with pytest.raises(TypeError, match="tenant_id must be a UUID"):
        async with app_db.tenant_session(str(uuid.uuid4())):  # type: ignore[arg-type]
            pass


async def test_a_leaked_session_level_tenant_does_not_carry_over(
    urls: DatabaseUrls, app_db: Database
) -> None:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        a = seed_tenant(owner, f"g-{uuid.uuid4().hex[:8]}")
    async with app_db.engine.connect() as connection:
        await connection.execute(text(f"SET app.tenant_id = '{a.tenant}'"))
        await connection.commit()
    async with app_db.session() as session:
        assert await session.scalar(text("SELECT count(*) FROM quotes")) == 0


async def test_runtime_role_passes_its_self_check(app_db: Database) -> None:
    await app_db.verify_runtime_role()


async def test_self_check_refuses_the_owner(urls: DatabaseUrls) -> None:
    database = Database(urls.owner, pool_size=1)
    try:
        with pytest.raises(UnsafeRuntimeRoleError, match="not 'ramparts_app'"):
            await database.verify_runtime_role()
    finally:
        await database.dispose()


async def test_demo_data_check_sees_across_tenants_and_keeps_the_callers_tenant(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    database = Database(urls.app, pool_size=1)
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        real = seed_tenant(owner, "corp")
        owner.execute("UPDATE users SET username = 'buyer@corp.example'")

        async def present() -> bool:
            async with database.tenant_session(real.tenant) as session:
                found = await demo_data_present(session)
                # The check switches tenants internally; the caller's must be restored.
                assert await session.scalar(text("SELECT count(*) FROM quotes")) == 1
                return found

        try:
            assert await present() is False
            other = seed_tenant(owner, "other")  # its buyer is buyer@other.test
            assert await present() is True
            owner.execute(
                "UPDATE users SET username = 'b@other.example' WHERE id = %s", (other.user,)
            )
            assert await present() is False
            owner.execute("UPDATE tenants SET slug = 'acme' WHERE id = %s", (other.tenant,))
            assert await present() is True
        finally:
            await database.dispose()


async def test_a_pooled_connection_killed_by_the_server_is_replaced(
    urls: DatabaseUrls, app_db: Database
) -> None:
    """No ping before each use: the first statement on a dead pooled connection fails, and
    the transaction starts again on a fresh connection."""
    async with app_db.session() as session:
        killed = await session.scalar(text("SELECT pg_backend_pid()"))
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        assert owner.execute("SELECT pg_terminate_backend(%s)", (killed,)).fetchone() == (True,)
    async with app_db.session() as session:
        fresh = await session.scalar(text("SELECT pg_backend_pid()"))
    assert fresh not in {None, killed}


async def test_a_transaction_cancelled_while_it_opens_stays_cancelled(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    """A cancelled task's first statement is interrupted and its connection left broken:
    the cancellation goes on, the transaction is not started again (which would swallow it
    and keep, say, the audit sequencer running after its server stopped it)."""
    urls = make_database()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute(
            "CREATE FUNCTION slow_opening(tenant uuid) RETURNS boolean LANGUAGE sql "
            "AS $$ SELECT pg_sleep(2) IS NULL $$"
        )
        owner.execute("GRANT EXECUTE ON FUNCTION slow_opening(uuid) TO ramparts_app")
    database = Database(urls.app, pool_size=1)
    opened: list[uuid.UUID] = []

    async def open_slowly() -> None:
        tenant = uuid.uuid4()
        async with database.tenant_session(tenant, opening=Opening("slow_opening")):
            opened.append(tenant)

    try:
        task = asyncio.create_task(open_slowly())
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)
    finally:
        await database.dispose()
    assert opened == []


@pytest.fixture
async def probe(make_database: Callable[..., DatabaseUrls]) -> AsyncIterator[Database]:
    """A database of the test's own with a table the runtime role may write."""
    urls = make_database()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute("CREATE TABLE probe (note text NOT NULL)")
        owner.execute("GRANT SELECT, INSERT ON probe TO ramparts_app")
    database = Database(urls.app, pool_size=1)
    yield database
    await database.dispose()


async def _notes(database: Database) -> list[str]:
    async with database.session() as session:
        return list(await session.scalars(text("SELECT note FROM probe ORDER BY note")))


async def test_a_transaction_an_error_aborted_does_not_pass_for_committed(
    probe: Database,
) -> None:
    """PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK, not an error."""

    async def swallow_a_failure() -> None:
        async with probe.session() as session:
            await session.execute(text("INSERT INTO probe VALUES ('lost')"))
            with suppress(psycopg.errors.DivisionByZero):
                await (await driver_of(session)).execute("SELECT 1 / 0")

    with pytest.raises(TransactionAbortedError):
        await swallow_a_failure()
    assert await _notes(probe) == []
    assert await _notes(probe) == []  # and the pooled connection serves the next one
