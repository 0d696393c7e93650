"""Many processes appending to one tenant's chain at once still make one gap-free chain."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections.abc import Callable

import psycopg

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.audit.verify import verify_chain
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Redactor

WRITERS = 8
EVENTS_EACH = 500


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


def test_eight_processes_make_one_gap_free_verifiable_chain(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    tenant = uuid.uuid4()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WRITERS)
    app_url = urls.app.render_as_string(hide_password=False)
    workers = [
        context.Process(target=_writer, args=(app_url, str(tenant), n, start))
        for n in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=110)
    assert [w.exitcode for w in workers] == [0] * WRITERS

    with psycopg.connect(libpq(urls.owner)) as owner:
        report = verify_chain(owner, tenant)
        seqs = [
            row[0]
            for row in owner.execute(
                "SELECT seq FROM audit_events WHERE tenant_id = %s ORDER BY seq", (tenant,)
            )
        ]
        per_writer = owner.execute(
            "SELECT body::jsonb -> 'details' ->> 'writer', count(*) FROM audit_events "
            "WHERE tenant_id = %s GROUP BY 1",
            (tenant,),
        ).fetchall()
    total = WRITERS * EVENTS_EACH
    assert report.intact, report.as_json()
    assert seqs == list(range(1, total + 1))
    assert sorted(per_writer) == sorted((str(n), EVENTS_EACH) for n in range(WRITERS))
