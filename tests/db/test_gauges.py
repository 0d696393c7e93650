"""The operations gauges: one call across every tenant, counts and ages, cached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.db.gauges import OperationsGauges, OperationsSnapshot

EMPTY = OperationsSnapshot(
    approvals_pending=0,
    approval_oldest_seconds=None,
    dead_letters=0,
    reconciliation_drift=None,
    reconciliation_finished=None,
    killswitch_global=False,
    killswitch_tenants=0,
    killswitch_tools=0,
    audit_lag_seconds=0.0,
)


def _tenant(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    tenant, user, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'T', 'eu')",
        (tenant, f"t-{tenant.hex[:8]}"),
    )
    conn.execute(
        "INSERT INTO users (id, tenant_id, username, display_name) VALUES (%s, %s, %s, 'U')",
        (user, tenant, f"u-{user.hex[:8]}@example.test"),
    )
    conn.execute(
        "INSERT INTO ai_conversations (tenant_id, id, user_id) VALUES (%s, %s, %s)",
        (tenant, conversation, user),
    )
    return tenant, user, conversation


def _approval(
    conn: psycopg.Connection[tuple[object, ...]],
    ids: tuple[uuid.UUID, uuid.UUID, uuid.UUID],
    *,
    status: str = "pending",
    age: timedelta = timedelta(0),
    expires_in: timedelta = timedelta(hours=24),
) -> None:
    tenant, user, conversation = ids
    now = datetime.now(UTC)
    conn.execute(
        "INSERT INTO ai_approvals (tenant_id, id, conversation_id, tool, arguments, reason, "
        "provenance, requested_by, status, expires_at, created_at) "
        "VALUES (%s, %s, %s, 'pay', '{}', 'held', '[]', %s, %s, %s, %s)",
        (tenant, uuid.uuid4(), conversation, user, status, now + expires_in, now - age),
    )


def _switch(
    conn: psycopg.Connection[tuple[object, ...]],
    tenant: uuid.UUID | None,
    tool: str,
    origin: str,
    *,
    engaged: bool = True,
) -> None:
    conn.execute(
        "INSERT INTO ai_killswitch (scope_tenant, tool, origin, engaged, set_by) "
        "VALUES (%s, %s, %s, %s, 'test')",
        (tenant, tool, origin, engaged),
    )


def _run(conn: psycopg.Connection[tuple[object, ...]], drift: int, finished: datetime) -> None:
    conn.execute(
        "INSERT INTO reconciliation_runs (day, started_at, finished_at, status, "
        "psp_transactions, psp_objects, ledger_entries, matched, drift_count, drift) "
        "VALUES (%s, %s, %s, %s, 9, 9, 9, 9, %s, %s)",
        (
            date(2001, 2, 3),
            finished,
            finished,
            "drift" if drift else "clean",
            drift,
            Jsonb([{"type": "missing"}] * drift),
        ),
    )


def _snapshot(urls: DatabaseUrls, *, max_age: float = 0.0) -> OperationsSnapshot:
    async def read() -> OperationsSnapshot:
        database = Database(urls.app, pool_size=1)
        try:
            return await OperationsGauges(database, max_age=max_age).snapshot()
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_the_gauges_count_every_tenant_in_one_call(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    assert _snapshot(urls) == EMPTY
    now = datetime.now(UTC)
    with psycopg.connect(libpq(urls.owner)) as conn:
        first, second = _tenant(conn), _tenant(conn)
        _approval(conn, first, age=timedelta(hours=2))
        _approval(conn, first)
        _approval(conn, first, status="rejected", age=timedelta(days=3))
        _approval(conn, second, age=timedelta(minutes=5))
        # Expired before anyone decided: nobody can approve it any more.
        _approval(conn, second, age=timedelta(days=2), expires_in=timedelta(hours=-1))
        for status in ("failed", "failed", "todo", "succeeded"):
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
                "VALUES ('psp', 'process_psp_event', %s)",
                (status,),
            )
        _run(conn, 0, now - timedelta(days=1))
        _run(conn, 2, now - timedelta(minutes=1))
        _switch(conn, None, "", "operator")  # the whole assistant, everywhere
        _switch(conn, first[0], "", "tenant")  # one tenant's assistant, by both
        _switch(conn, first[0], "", "operator")
        _switch(conn, second[0], "pay", "tenant")  # one tool of one tenant
        _switch(conn, None, "refund", "operator")  # one tool of every tenant
        _switch(conn, second[0], "", "tenant", engaged=False)  # lifted
        conn.execute(
            "INSERT INTO audit_queue (tenant, head, tail, queued_at) VALUES (%s, 'h', 't', %s)",
            (first[0], now - timedelta(seconds=30)),
        )
    found = _snapshot(urls)
    assert found.approvals_pending == 3
    assert found.approval_oldest_seconds == pytest.approx(7200, abs=60)
    assert found.dead_letters == 2
    assert found.reconciliation_drift == 2
    assert found.reconciliation_finished == pytest.approx((now - timedelta(minutes=1)).timestamp())
    assert (found.killswitch_global, found.killswitch_tenants, found.killswitch_tools) == (
        True,
        1,
        2,
    )
    assert found.audit_lag_seconds == pytest.approx(30, abs=10)


def test_a_reading_serves_the_scrapes_until_it_is_max_age_old(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()

    async def scrapes() -> tuple[list[OperationsSnapshot], OperationsSnapshot]:
        database = Database(urls.app, pool_size=1)
        cached, fresh = OperationsGauges(database, max_age=60), OperationsGauges(database)
        try:
            first = await cached.snapshot()
            with psycopg.connect(libpq(urls.owner)) as conn:
                _switch(conn, None, "", "operator")
            # A storm of scrapes: one reading, shared.
            storm = await asyncio.gather(*(cached.snapshot() for _ in range(20)))
            return [first, *storm], await fresh.snapshot()
        finally:
            await database.dispose()

    served, fresh = asyncio.run(scrapes())
    assert all(snapshot is served[0] for snapshot in served)
    assert not served[0].killswitch_global
    assert fresh.killswitch_global


def test_the_runtime_role_reads_the_gauges_but_not_the_tables_behind_them(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    with psycopg.connect(libpq(urls.app)) as conn:
        for table in ("ai_killswitch", "reconciliation_runs", "audit_queue"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM {table}")
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM ramparts_operations_gauges()").fetchone() == (1,)
