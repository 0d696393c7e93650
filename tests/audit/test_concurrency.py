"""Many processes recording on one tenant's chain while several sequencers chain the queue
still make one gap-free chain, every event on it exactly once, each writer's in its order."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Callable

import psycopg

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.sequencer import Sequencer
from ramparts.audit.services import AuditLog
from ramparts.audit.verify import verify_chain
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Redactor

WRITERS = 8
SEQUENCERS = 3
EVENTS_EACH = 500
#: Small batches, so the sequencers meet on the chain over and over.
BATCH = 40


def _writer(app_url: str, tenant: str, writer: int, start: object) -> None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    async def write() -> None:
        database = Database(make_url(app_url), pool_size=1)
        audit = AuditLog(database, Redactor(bytes(32)))
        chain = uuid.UUID(tenant)
        try:
            for number in range(EVENTS_EACH):
                await audit.record_apart(
                    chain,
                    Actor("service", tenant=chain, id=f"writer-{writer}"),
                    Action.TOKEN_ISSUED,
                    Resource("access_token", f"{writer}-{number}"),
                    Decision.ALLOW,
                    {"writer": writer, "number": number},
                )
        finally:
            await database.dispose()

    start.wait()  # type: ignore[attr-defined]
    asyncio.run(write())


def _sequencer(app_url: str, start: object, stop: object, chained: object) -> None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    async def sequence() -> int:
        database = Database(make_url(app_url), pool_size=1)
        sequencer = Sequencer(database, max_lag_seconds=1, batch=BATCH)
        total = 0
        try:
            while not stop.is_set():  # type: ignore[attr-defined]
                total += (await sequencer.sequence()).sequenced
        finally:
            await database.dispose()
        return total

    start.wait()  # type: ignore[attr-defined]
    chained.put(asyncio.run(sequence()))  # type: ignore[attr-defined]


def test_writers_and_sequencers_make_one_gap_free_verifiable_chain(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    tenant = uuid.uuid4()
    context = multiprocessing.get_context("spawn")
    start, stop, chained = context.Barrier(WRITERS + SEQUENCERS), context.Event(), context.Queue()
    app_url = urls.app.render_as_string(hide_password=False)
    writers = [
        context.Process(target=_writer, args=(app_url, str(tenant), n, start))
        for n in range(WRITERS)
    ]
    sequencers = [
        context.Process(target=_sequencer, args=(app_url, start, stop, chained))
        for _ in range(SEQUENCERS)
    ]
    for process in writers + sequencers:
        process.start()
    for writer in writers:
        writer.join(timeout=110)
    assert [w.exitcode for w in writers] == [0] * WRITERS
    stop.set()
    by_each = [chained.get(timeout=30) for _ in sequencers]
    for sequencer in sequencers:
        sequencer.join(timeout=30)
    assert [s.exitcode for s in sequencers] == [0] * SEQUENCERS
    total = WRITERS * EVENTS_EACH
    # Every sequencer did part of the work; what they left, a last pass chains.
    assert all(count > 0 for count in by_each), by_each

    async def rest() -> int:
        database = Database(urls.app, pool_size=1)
        try:
            return await Sequencer(database, max_lag_seconds=1).drain()
        finally:
            await database.dispose()

    assert sum(by_each) + asyncio.run(rest()) == total

    with psycopg.connect(libpq(urls.owner)) as owner:
        report = verify_chain(owner, tenant)
        rows = owner.execute(
            "SELECT seq, body::jsonb -> 'details' FROM audit_events WHERE tenant_id = %s "
            "ORDER BY seq",
            (tenant,),
        ).fetchall()
    assert report.intact, report.as_json()
    assert (report.queued, report.oldest_queued_seconds) == (0, None)
    assert [seq for seq, _ in rows] == list(range(1, total + 1))
    numbers: dict[int, list[int]] = {n: [] for n in range(WRITERS)}
    for _, details in rows:
        numbers[details["writer"]].append(details["number"])
    # Exactly once each, and in the order each writer committed them.
    assert numbers == {n: list(range(EVENTS_EACH)) for n in range(WRITERS)}
