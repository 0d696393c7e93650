"""The runtime behind PgBouncer in transaction pooling mode (`RAMPARTS_DATABASE_POOLER`).

Transaction pooling hands one server connection to whichever client starts a transaction
next, so whatever a transaction leaves on its connection reaches another client: a
session-level setting (a tenant!), a prepared statement, a session advisory lock, a LISTEN.
The runtime keeps all of its state in the transaction (`set_config(..., true)`, transaction
advisory locks); these tests put two tenants through a pool of ONE server connection and
show nothing crosses, and that the checks would see it if something did.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from ramparts.db.engine import Database, DatabaseUrls, libpq
from tests.db.test_rls import Seeded, seed_tenant
from tests.pgbouncer import Pool, RunningPgBouncer, pgbouncer
from tests.test_cli import owner_env, run

pytestmark = pytest.mark.pgbouncer

#: The alias whose pool holds a single server connection: every client takes turns on it.
ONE = "one_connection"
ROUNDS = 12  # more than psycopg's prepare threshold (5): a prepared statement would show


@pytest.fixture(scope="module")
def tenants(urls: DatabaseUrls) -> tuple[Seeded, Seeded]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        return (
            seed_tenant(owner, f"pgb-a-{secrets.token_hex(4)}"),
            seed_tenant(owner, f"pgb-b-{secrets.token_hex(4)}"),
        )


@pytest.fixture
def bouncer(tmp_path: Path, urls: DatabaseUrls) -> Iterator[RunningPgBouncer]:
    """PgBouncer with a pool of one server connection to the run's database (a fresh
    PgBouncer per test: a planted leak stays on its server connection)."""
    database = urls.owner.database
    assert database is not None
    with pgbouncer(tmp_path / "pgbouncer", urls.owner, [Pool(ONE, database, 1)]) as running:
        yield running


async def _seen(database: Database, tenant: uuid.UUID) -> tuple[int, str, list[uuid.UUID]]:
    """(server backend, app.tenant_id, quotes visible) inside a tenant transaction."""
    async with database.tenant_session(tenant) as session:
        backend, setting = (
            await session.execute(
                text("SELECT pg_backend_pid(), current_setting('app.tenant_id', true)")
            )
        ).one()
        await asyncio.sleep(0)  # let the other tenant's transaction queue behind this one
        quotes = list((await session.execute(text("SELECT id FROM quotes"))).scalars())
    return backend, setting, quotes


async def _untenanted(database: Database) -> tuple[int, str | None, int]:
    """(server backend, app.tenant_id, quotes visible) in a transaction with no tenant."""
    async with database.session() as session:
        backend, setting, quotes = (
            await session.execute(
                text(
                    "SELECT pg_backend_pid(), current_setting('app.tenant_id', true), "
                    "(SELECT count(*) FROM quotes)"
                )
            )
        ).one()
    return backend, setting, quotes


def _raw_setting(url: URL) -> tuple[int, str | None]:
    """What a new client of the pool finds on the server connection it is handed: no
    transaction of ours, not our engine, just what the connection carries over."""
    with psycopg.connect(libpq(url), autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute(
            "SELECT pg_backend_pid(), current_setting('app.tenant_id', true)"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.mark.anyio
async def test_two_tenants_interleaved_on_one_server_connection_never_see_each_other(
    bouncer: RunningPgBouncer, tenants: tuple[Seeded, Seeded]
) -> None:
    first, second = tenants
    # Two engines, as two API processes would have, each with several client connections.
    one, other = (
        Database(bouncer.url(ONE), pool_size=4, transaction_pooler=True) for _ in range(2)
    )
    try:
        for _ in range(ROUNDS):
            seen = await asyncio.gather(
                _seen(one, first.tenant),
                _seen(other, second.tenant),
                _seen(other, first.tenant),
                _seen(one, second.tenant),
                _untenanted(one),
            )
            *tenanted, untenanted = seen
            backends = {backend for backend, _, _ in tenanted} | {untenanted[0]}
            assert len(backends) == 1  # one server connection carried every transaction
            expected = [first, second, first, second]
            for (_, setting, quotes), owner in zip(tenanted, expected, strict=True):
                assert setting == str(owner.tenant)
                assert quotes == [owner.quote]
            assert untenanted[1:] == ("", 0)
            # Between transactions the server connection carries no tenant to the next client.
            backend, setting = await asyncio.to_thread(_raw_setting, bouncer.url(ONE))
            assert backend in backends
            assert setting in (None, "")
    finally:
        await one.dispose()
        await other.dispose()


@pytest.mark.anyio
async def test_a_session_level_tenant_would_leak_and_the_runtime_clears_it(
    bouncer: RunningPgBouncer, tenants: tuple[Seeded, Seeded]
) -> None:
    """The planted problem: `set_config(..., false)` (what `SET app.tenant_id` does) by one
    client stays on the pooled server connection, and the next client sees it. The check of
    the test above catches exactly that; the runtime's own transactions do not trust it."""
    first, second = tenants
    with psycopg.connect(libpq(bouncer.url(ONE)), prepare_threshold=None) as planter:
        planter.execute("SELECT set_config('app.tenant_id', %s, false)", (str(first.tenant),))
        planter.commit()
        backend, leaked = await asyncio.to_thread(_raw_setting, bouncer.url(ONE))
        assert leaked == str(first.tenant)  # another client inherits the first tenant
        database = Database(bouncer.url(ONE), pool_size=1, transaction_pooler=True)
        try:
            assert await _untenanted(database) == (backend, "", 0)
            assert await _seen(database, second.tenant) == (
                backend,
                str(second.tenant),
                [second.quote],
            )
        finally:
            await database.dispose()


@pytest.mark.anyio
async def test_prepared_statements_break_behind_pgbouncer_unless_the_pooler_is_set(
    bouncer: RunningPgBouncer, tenants: tuple[Seeded, Seeded]
) -> None:
    """Without `transaction_pooler`, psycopg prepares the tenant statement after five runs
    under a connection-local name, on a server connection the pooler shares: the second
    engine finds the name taken. With it, nothing is prepared and every round runs."""
    first, second = tenants

    async def rounds(transaction_pooler: bool) -> None:
        engines = [
            Database(bouncer.url(ONE), pool_size=1, transaction_pooler=transaction_pooler)
            for _ in range(2)
        ]
        try:
            for _ in range(ROUNDS):
                for database, seeded in zip(engines, (first, second), strict=True):
                    assert (await _seen(database, seeded.tenant))[2] == [seeded.quote]
        finally:
            for database in engines:
                await database.dispose()

    with pytest.raises((psycopg.errors.DuplicatePreparedStatement, DBAPIError)) as broken:
        await rounds(transaction_pooler=False)
    assert 'prepared statement "_pg3_' in str(broken.value)
    await rounds(transaction_pooler=True)


def test_the_worker_refuses_a_transaction_pooler(tmp_path: Path, urls: DatabaseUrls) -> None:
    """The worker waits for new jobs with LISTEN on its own server connection: behind a
    transaction pooler it would wait for nothing, so it refuses, saying what to do."""
    env = owner_env(tmp_path, urls, RAMPARTS_DATABASE_POOLER="pgbouncer")
    result = run("worker", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ramparts: error: RAMPARTS_DATABASE_POOLER: the worker needs a direct connection to "
        "PostgreSQL (LISTEN/NOTIFY); give it the server's RAMPARTS_APP_DATABASE_URL and no "
        "pooler"
    ]
