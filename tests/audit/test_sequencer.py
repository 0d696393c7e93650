"""The queue and the sequencer: nothing recorded is lost, whatever dies when, and nothing
rolled back is chained.

Each test here owns a database no live server runs against, so what is queued stays queued
until the test itself sequences it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

import httpx
import psycopg
import pytest
from psycopg import errors
from structlog.testing import capture_logs

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.sequencer import Sequencer, SequencerStalledError
from ramparts.audit.services import AuditLog
from ramparts.audit.verify import verify_chain
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Redactor
from tests.identity.helpers import TEST_REDACTOR, obtain_tokens, provision

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def fresh(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    return make_database()


@pytest.fixture
def owner(fresh: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(fresh.owner), autocommit=True) as conn:
        yield conn


def _event(
    tenant: uuid.UUID, number: int, decision: Decision = Decision.ALLOW
) -> tuple[Actor, Action, Resource, Decision, dict[str, int]]:
    return (
        Actor("service", tenant=tenant, id="writer"),
        Action.TOKEN_ISSUED,
        Resource("access_token", str(number)),
        decision,
        {"number": number},
    )


def _queued(owner: psycopg.Connection, tenant: uuid.UUID) -> int:
    row = owner.execute("SELECT count(*) FROM audit_queue WHERE tenant = %s", (tenant,)).fetchone()
    return int(row[0]) if row else 0


def _numbers(owner: psycopg.Connection, tenant: uuid.UUID) -> list[tuple[int, int]]:
    """(seq, details.number) of the tenant's chained events, in chain order."""
    return [
        (seq, int(number))
        for seq, number in owner.execute(
            "SELECT seq, body::jsonb -> 'details' ->> 'number' FROM audit_events "
            "WHERE tenant_id = %s ORDER BY seq",
            (tenant,),
        )
    ]


async def _record(urls: DatabaseUrls, tenant: uuid.UUID, numbers: Iterable[int]) -> None:
    database = Database(urls.app, pool_size=1)
    audit = AuditLog(database, TEST_REDACTOR)
    try:
        for number in numbers:
            await audit.record_apart(tenant, *_event(tenant, number))
    finally:
        await database.dispose()


async def _drain(urls: DatabaseUrls) -> int:
    database = Database(urls.app, pool_size=1)
    try:
        return await Sequencer(database, max_lag_seconds=1).drain()
    finally:
        await database.dispose()


def _record_then_die(app_url: str, tenant: str, count: int) -> None:
    """Record `count` events, each committed on its own, then exit without any cleanup."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    async def record() -> None:
        audit = AuditLog(Database(make_url(app_url), pool_size=1), Redactor(bytes(32)))
        chain = uuid.UUID(tenant)
        for number in range(count):
            await audit.record_apart(chain, *_event(chain, number))

    asyncio.run(record())
    os._exit(0)


async def test_events_queued_by_a_process_that_died_are_chained_by_another(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    app_url = fresh.app.render_as_string(hide_password=False)
    writer = multiprocessing.get_context("spawn").Process(
        target=_record_then_die, args=(app_url, str(tenant), 5)
    )
    writer.start()
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert (_queued(owner, tenant), _numbers(owner, tenant)) == (5, [])
    waiting = verify_chain(owner, tenant)
    assert (waiting.intact, waiting.events, waiting.queued) == (True, 0, 5)
    assert waiting.oldest_queued_seconds is not None
    assert waiting.oldest_queued_seconds > 0

    assert await _drain(fresh) >= 5
    assert _numbers(owner, tenant) == [(n + 1, n) for n in range(5)]
    report = verify_chain(owner, tenant)
    assert (report.intact, report.events, report.queued) == (True, 5, 0)


async def test_a_sequencing_transaction_killed_halfway_leaves_the_queue_whole(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    await _record(fresh, tenant, range(20))
    with (
        psycopg.connect(libpq(fresh.app)) as doomed,
        psycopg.connect(libpq(fresh.app), autocommit=True) as other,
    ):
        chained = doomed.execute("SELECT * FROM audit_sequence(1000)").fetchall()
        assert (tenant, 20) in chained  # deleted from the queue and chained, not committed
        # Another sequencer skips the chain the open transaction holds, without waiting.
        other.execute("SET statement_timeout = '5s'")
        assert tenant not in {c for c, _ in other.execute("SELECT * FROM audit_sequence(1000)")}
        pid = doomed.info.backend_pid
        owner.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            doomed.execute("SELECT 1")
    assert (_queued(owner, tenant), _numbers(owner, tenant)) == (20, [])

    assert await _drain(fresh) >= 20
    assert _numbers(owner, tenant) == [(n + 1, n) for n in range(20)]
    assert verify_chain(owner, tenant).intact


async def test_a_rolled_back_transactions_events_never_appear_its_refusal_does(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    database = Database(fresh.app, pool_size=2)
    audit = AuditLog(database, TEST_REDACTOR)

    class RefusedError(Exception):
        pass

    async def refused_request() -> None:
        async with database.tenant_session(tenant) as session:
            await audit.record(session, *_event(tenant, 1))
            # Written apart while this transaction is open on the same chain: nothing
            # waits, since recording takes no lock.
            await audit.record_apart(tenant, *_event(tenant, 2, Decision.DENY))
            raise RefusedError

    try:
        with pytest.raises(RefusedError):
            await refused_request()
        await Sequencer(database, max_lag_seconds=1).drain()
    finally:
        await database.dispose()
    assert _queued(owner, tenant) == 0
    assert _numbers(owner, tenant) == [(1, 2)]
    assert verify_chain(owner, tenant).intact


async def test_the_sequencer_warns_when_behind_and_never_waits_on_a_held_chain(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    database = Database(fresh.app, pool_size=2)
    await AuditLog(database, TEST_REDACTOR).record_apart(tenant, *_event(tenant, 7))
    sequencer = Sequencer(database, max_lag_seconds=0.05)
    try:
        with capture_logs() as logs:
            with owner.transaction():  # as the checkpoint signer does
                owner.execute("SELECT audit_lock(%s)", (tenant,))
                running = asyncio.create_task(sequencer.run())
                await asyncio.sleep(0.5)
                assert not running.done()
                assert _queued(owner, tenant) == 1
            # Released, the chain is taken on the sequencer's next pass.
            await asyncio.sleep(0.5)
            await _stopped(running)
    finally:
        await database.dispose()
    assert _numbers(owner, tenant) == [(1, 7)]
    [behind] = [e for e in logs if e["event"] == "audit_sequencer_behind"]
    assert behind["log_level"] == "warning"
    assert behind["max_lag_seconds"] == 0.05
    assert behind["oldest_queued_seconds"] >= 0.05  # logged to the millisecond


async def test_the_sequencer_survives_an_unreachable_database(fresh: DatabaseUrls) -> None:
    gone = Database(fresh.app.set(port=1), pool_size=1)
    sequencer = Sequencer(gone, max_lag_seconds=0.02)
    try:
        with capture_logs() as logs:
            running = asyncio.create_task(sequencer.run())
            await asyncio.sleep(0.5)
            assert not running.done()
            await _stopped(running)
    finally:
        await gone.dispose()
    failures = [e["failures"] for e in logs if e["event"] == "audit_sequencer_failed"]
    assert failures[:2] == [1, 2]


async def test_the_runtime_role_cannot_touch_the_queue_or_chain_it_at_will(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    await _record(fresh, tenant, [1])
    with psycopg.connect(libpq(fresh.app)) as app:
        for statement in (
            "SELECT count(*) FROM audit_queue",
            'INSERT INTO audit_queue (tenant, head) VALUES (gen_random_uuid(), \'{"action":"x"\')',
            "UPDATE audit_queue SET head = head",
            "DELETE FROM audit_queue",
            "TRUNCATE audit_queue",
            f"SELECT audit_chain_queued('{tenant}', 10)",  # internal: names any chain
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                app.execute(statement)
            app.rollback()
        with pytest.raises(errors.UndefinedFunction):  # nothing appends under the lock any more
            app.execute('SELECT * FROM audit_append(ARRAY[\'{"action":"x"\'])')
        app.rollback()
        with pytest.raises(errors.RaiseException, match="positive batch size"):
            app.execute("SELECT * FROM audit_sequence(0)")
        app.rollback()
        with pytest.raises(errors.RaiseException, match="inside a tenant session"):
            app.execute("SELECT audit_sequence_own(10)")
        app.rollback()
    # Even the owner changes or empties the queue only by chaining it.
    for statement in ("UPDATE audit_queue SET head = head", "TRUNCATE audit_queue"):
        with pytest.raises(errors.InsufficientPrivilege, match="append-only"):
            owner.execute(statement)
    assert _queued(owner, tenant) == 1


def test_the_servers_sequencer_chains_a_requests_events_within_the_bound(
    fresh: DatabaseUrls, kms: Kms, serve_app: Callable[..., httpx.Client]
) -> None:
    server = serve_app(database_urls=fresh)
    account = provision(fresh, kms)
    obtain_tokens(server, account)
    signed_in = time.monotonic()
    with psycopg.connect(libpq(fresh.owner), autocommit=True) as owner:
        while time.monotonic() - signed_in < 3:
            actions = [
                action
                for (action,) in owner.execute(
                    "SELECT audit_action(body) FROM audit_events WHERE tenant_id = %s",
                    (account.tenant_id,),
                )
            ]
            if "identity:token:issued" in actions:
                break
            time.sleep(0.05)
        assert "identity:login:succeeded" in actions
        assert "identity:token:issued" in actions
        assert verify_chain(owner, account.tenant_id).intact


@pytest.mark.parametrize(
    "head",
    [
        '{"action":"x"',  # no actor: the action index could not read it
        '{"action":"' + "a" * 201 + '","actor":{"id":"a"}',  # an action the index cannot hold
        '{"action":"x","actor":{"id":"' + "a" * 1025 + '"}',  # an actor id it cannot hold
    ],
)
def test_the_queue_takes_only_events_that_can_be_chained(
    fresh: DatabaseUrls, owner: psycopg.Connection, head: str
) -> None:
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(fresh.app)) as app:
        app.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
        with pytest.raises(errors.RaiseException, match="canonical events"):
            app.execute("SELECT * FROM audit_enqueue(%s::text[])", ([head],))
    assert _queued(owner, tenant) == 0


async def test_a_chain_that_cannot_be_chained_never_stops_the_others(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    """The second wall: an event in the queue that the chain cannot take (written there by
    the owner, past `audit_enqueue`) stays queued and the other tenants' events are chained.
    Its own database: the stuck event stays."""
    fresh = make_database()
    owner = psycopg.connect(libpq(fresh.owner), autocommit=True)
    stuck, honest = sorted([uuid.uuid4(), uuid.uuid4()])  # the stuck chain comes first
    owner.execute(
        "INSERT INTO audit_queue (tenant, head, tail, queued_at) "
        "VALUES (%s, %s, '}', clock_timestamp())",
        (stuck, '{"action":"x"'),
    )
    await _record(fresh, honest, [1, 2])
    database = Database(fresh.app, pool_size=1)
    try:
        with pytest.raises(SequencerStalledError, match="without progress"):
            await Sequencer(database, max_lag_seconds=1).drain(patience=0.3)
    finally:
        await database.dispose()
    with owner:
        assert _numbers(owner, honest) == [(1, 1), (2, 2)]
        assert _queued(owner, stuck) == 1
        assert not owner.execute(
            "SELECT 1 FROM audit_events WHERE tenant_id = %s", (stuck,)
        ).fetchall()


async def test_draining_gives_up_on_a_chain_held_open(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    tenant = uuid.uuid4()
    await _record(fresh, tenant, [1])
    database = Database(fresh.app, pool_size=1)
    try:
        with owner.transaction():
            owner.execute("SELECT audit_lock(%s)", (tenant,))
            started = time.monotonic()
            with pytest.raises(SequencerStalledError, match="held by an open transaction"):
                await Sequencer(database, max_lag_seconds=1).drain(patience=0.3)
            assert time.monotonic() - started < 5
        assert await Sequencer(database, max_lag_seconds=1).drain() == 1
    finally:
        await database.dispose()
    assert _numbers(owner, tenant) == [(1, 1)]


async def test_a_pass_chains_at_most_its_batch_oldest_chain_first(
    fresh: DatabaseUrls, owner: psycopg.Connection
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await _record(fresh, first, range(3))
    await _record(fresh, second, range(3))
    database = Database(fresh.app, pool_size=1)
    try:
        done = await Sequencer(database, max_lag_seconds=1, batch=4).sequence()
    finally:
        await database.dispose()
    assert (done.sequenced, done.full) == (4, True)
    assert [n for _, n in _numbers(owner, first)] == [0, 1, 2]
    assert [n for _, n in _numbers(owner, second)] == [0]


async def _stopped(running: asyncio.Task[None]) -> None:
    """Cancel the sequencer and wait until it has let go of its connections: disposing of
    the pool under a task still running leaves it holding one, and the test's event loop
    waiting on it."""
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running, timeout=30)
