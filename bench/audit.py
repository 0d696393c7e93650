"""Audit benchmarks: recording from concurrent writers, the sequencer, verification (README.md).

Each writer is its own process with its own connection pool, recording through
`AuditLog.record_many` inside `Database.tenant_session`, exactly as the app does (which queues
the events), each on its own tenant's chain or all on one. The baseline writes the same
redacted rows with plain INSERTs through the same session path, in the same run.

The sequencer's rate is measured on one tenant: N queued events, then `audit_sequence` passes
(one transaction each, as `Sequencer` runs them) until the queue is empty; the baseline
INSERTs the same final rows into a plain table, one transaction per batch of the same size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.string import ByteaBinaryLoader
from sqlalchemy import text
from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database, timed_processes

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.sequencer import BATCH_EVENTS, Sequencer
from ramparts.audit.services import AuditLog, Event
from ramparts.audit.verify import FETCH_ROWS, verify_chain
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Redactor

WRITERS = 4
SECONDS = 6.0
VERIFY_EVENTS = 50_000
SEQUENCE_EVENTS = 100_000

PLAIN_TABLE = """
CREATE TABLE bench_plain_events (
    tenant_id uuid NOT NULL, seq bigint NOT NULL, body text NOT NULL,
    CONSTRAINT pk_bench_plain_events PRIMARY KEY (tenant_id, seq)
);
GRANT SELECT, INSERT ON bench_plain_events TO ramparts_app;
CREATE TABLE bench_indexed_events (LIKE audit_events INCLUDING ALL)
"""


def _events(tenant: uuid.UUID, count: int, start: int) -> list[Event]:
    actor = Actor(
        kind="user",
        tenant=tenant,
        id=str(uuid.uuid4()),
        username="buyer@acme.test",
        roles=("buyer",),
        auth=("pwd", "otp"),
        ip="192.0.2.10",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) bench",
    )
    return [
        Event(
            actor,
            Action.LOGIN_FAILED,
            Resource("user", actor.id),
            Decision.DENY,
            {"reason": "wrong password", "attempt": start + i, "client": "ramparts-web"},
        )
        for i in range(count)
    ]


async def _write(
    app_url: URL, mode: str, batch: int, deadline: float, *, tenant: uuid.UUID, first: int
) -> int:
    database = Database(app_url, pool_size=1)
    audit = AuditLog(database, Redactor(b"b" * 32))
    written = 0
    try:
        while time.monotonic() < deadline:
            events = _events(tenant, batch, written)
            async with database.tenant_session(tenant) as session:
                if mode == "chain":
                    await audit.record_many(session, events)
                else:
                    # Same redaction and canonical form; no lock, no hash, no chain.
                    rows = [f"{audit._head(e)}}}" for e in events]
                    await session.execute(
                        text(
                            "INSERT INTO bench_plain_events (tenant_id, seq, body) "
                            "SELECT :tenant, :first + n, b "
                            "FROM unnest(CAST(:bodies AS text[])) WITH ORDINALITY AS u(b, n)"
                        ),
                        {"tenant": tenant, "first": first + written, "bodies": rows},
                    )
            written += batch
    finally:
        await database.dispose()
    return written


def _writer(  # noqa: PLR0917 - one process's part, as multiprocessing passes it
    app_url: str, mode: str, batch: int, tenant: str, first: int, barrier: Any, results: Any
) -> None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    barrier.wait()
    deadline = time.monotonic() + SECONDS
    results.put(
        asyncio.run(
            _write(make_url(app_url), mode, batch, deadline, tenant=uuid.UUID(tenant), first=first)
        )
    )


def _sequencer(app_url: str, stop: Any, results: Any) -> None:
    """A server's sequencer, chaining what the writers queue until told to stop."""
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    async def run() -> int:
        database = Database(make_url(app_url), pool_size=1)
        sequencer = Sequencer(database, max_lag_seconds=1)
        chained = 0
        try:
            while not stop.is_set():
                done = await sequencer.sequence()
                chained += done.sequenced
                if not done.full:
                    await asyncio.sleep(0.25)  # as Sequencer.run with the default bound
        finally:
            await database.dispose()
        return chained

    results.put(asyncio.run(run()))


def appends_per_second(app_url: URL, mode: str, batch: int, *, one_tenant: bool = False) -> float:
    """Events recorded per second by WRITERS processes, each on its own tenant or all on one
    (the plain baseline then gives each writer its own range of `seq`). Recording runs beside
    a sequencer process, as in a server; what it has not chained by the end is chained after,
    untimed, so the next measure starts on an empty queue."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS + 1), context.Queue()
    url = app_url.render_as_string(hide_password=False)
    stop, chained = context.Event(), context.Queue()
    sequencer = context.Process(target=_sequencer, args=(url, stop, chained))
    if mode == "chain":
        sequencer.start()
    shared = uuid.uuid4()
    workers = [
        context.Process(
            target=_writer,
            args=(
                url,
                mode,
                batch,
                str(shared if one_tenant else uuid.uuid4()),
                n * 100_000_000,
                barrier,
                results,
            ),
        )
        for n in range(WRITERS)
    ]
    total, elapsed = timed_processes(workers, barrier, results)  # only the writing is timed
    if mode == "chain":
        stop.set()
        chained.get(timeout=120)
        sequencer.join()
        asyncio.run(_drain(app_url))
    return total / elapsed


async def _drain(app_url: URL) -> None:
    database = Database(app_url, pool_size=1)
    try:
        await Sequencer(database, max_lag_seconds=1).drain()
    finally:
        await database.dispose()


async def _queue(app_url: URL, tenant: uuid.UUID, events: int) -> None:
    """Queue `events` events on `tenant`'s chain, 500 to a transaction."""
    database = Database(app_url, pool_size=1)
    audit = AuditLog(database, Redactor(b"b" * 32))
    try:
        for start in range(0, events, 500):
            async with database.tenant_session(tenant) as session:
                await audit.record_many(session, _events(tenant, 500, start))
    finally:
        await database.dispose()


async def _fill(app_url: URL, events: int) -> uuid.UUID:
    """One tenant's chain of `events` events, queued 500 to a transaction, then chained."""
    tenant = uuid.uuid4()
    await _queue(app_url, tenant, events)
    await _drain(app_url)
    return tenant


def sequencing(urls: DatabaseUrls, events: int, batch: int) -> dict[str, Any]:
    """Events chained per second on one tenant, beside INSERTs of the same rows.

    Both baselines copy the chained rows inside the server, `batch` to a transaction: into a
    plain table (primary key only), and into a copy of audit_events with all its indexes,
    which is what every chained event costs before any hashing or queue work."""
    tenant = uuid.uuid4()
    asyncio.run(_queue(urls.app, tenant, events))
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute("ANALYZE audit_queue")
    with psycopg.connect(libpq(urls.app), autocommit=True) as app:
        started = time.perf_counter()
        chained = 0
        while rows := app.execute("SELECT * FROM audit_sequence(%s)", (batch,)).fetchall():
            chained += sum(count for _, count in rows)
        rate = chained / (time.perf_counter() - started)
    if chained != events:
        raise SystemExit(f"chained {chained} of {events} events")
    copies = {}
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        for table, columns in (
            ("bench_plain_events", "tenant_id, seq, body"),
            ("bench_indexed_events", "tenant_id, seq, body, prev_hash, hash"),
        ):
            started = time.perf_counter()
            for first in range(0, events, batch):
                conn.execute(
                    f"INSERT INTO {table} SELECT {columns} FROM audit_events "  # noqa: S608
                    "WHERE tenant_id = %s AND seq > %s AND seq <= %s",
                    (tenant, first, first + batch),
                )
            copies[table] = events / (time.perf_counter() - started)
    plain, indexed = copies["bench_plain_events"], copies["bench_indexed_events"]
    return {
        "events": events,
        "events_per_pass": batch,
        "chained_per_second": round(rate),
        "plain_insert_per_second": round(plain),
        "ratio_to_plain": round(rate / plain, 2),
        "indexed_insert_per_second": round(indexed),
        "ratio_to_indexed": round(rate / indexed, 2),
    }


def _read(conn: psycopg.Connection, tenant: uuid.UUID) -> int:
    """The baseline: the same pages of the same rows, read without checking anything."""
    read, last = 0, 0
    with conn.cursor(binary=True) as cursor:
        cursor.adapters.register_loader("text", ByteaBinaryLoader)
        while rows := cursor.execute(
            "SELECT seq, body, hash FROM audit_events WHERE tenant_id = %s AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (tenant, last, FETCH_ROWS),
        ).fetchall():
            read, last = read + len(rows), rows[-1][0]
    return read


def verification(urls: DatabaseUrls, events: int) -> tuple[float, float]:
    """Events verified per second on one long chain (median of three), and the plain read."""
    tenant = asyncio.run(_fill(urls.app, events))
    verify_rates, read_rates = [], []
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        # Steady state: autovacuum would have analyzed the table; without statistics the
        # planner sorts a fresh table on disk instead of walking the primary key.
        conn.execute("ANALYZE audit_events")
        for _ in range(3):
            started = time.perf_counter()
            report = verify_chain(conn, tenant)
            verify_rates.append(report.events / (time.perf_counter() - started))
            if not report.intact or report.events != events:
                raise SystemExit(f"chain broken: {report.as_json()}")
            started = time.perf_counter()
            read_rates.append(_read(conn, tenant) / (time.perf_counter() - started))
    return statistics.median(verify_rates), statistics.median(read_rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    report: dict[str, Any] = {"writers": WRITERS, "seconds_per_run": SECONDS}
    with ExitStack() as stack:
        urls = database(stack)
        owner_libpq = urls.owner.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(owner_libpq, autocommit=True) as conn:
            conn.execute(PLAIN_TABLE)
        for batch in (1, 25):
            plain = appends_per_second(urls.app, "plain", batch)
            recorded = appends_per_second(urls.app, "chain", batch)
            report[f"append_batch_{batch}"] = {
                "events_per_transaction": batch,
                "recorded_per_second": round(recorded),
                "plain_insert_per_second": round(plain),
                "ratio_to_plain": round(recorded / plain, 2),
            }
        plain = appends_per_second(urls.app, "plain", 1, one_tenant=True)
        recorded = appends_per_second(urls.app, "chain", 1, one_tenant=True)
        report["append_one_tenant"] = {
            "events_per_transaction": 1,
            "recorded_per_second": round(recorded),
            "plain_insert_per_second": round(plain),
            "ratio_to_plain": round(recorded / plain, 2),
        }
        report["sequence_one_tenant"] = sequencing(urls, SEQUENCE_EVENTS, BATCH_EVENTS)
        verify_rate, read_rate = verification(urls, VERIFY_EVENTS)
        report["verify"] = {
            "events": VERIFY_EVENTS,
            "verified_per_second": round(verify_rate),
            "plain_read_per_second": round(read_rate),
            "ratio_to_plain_read": round(verify_rate / read_rate, 2),
        }
    goals = {
        "append ≥ 2,000/s (4 writers, 25 events per transaction)": (
            report["append_batch_25"]["recorded_per_second"] >= 2000
        ),
        "4 writers on one tenant ≥ 0.9x 4 writers on 4 tenants (no per-tenant cap)": (
            report["append_one_tenant"]["recorded_per_second"]
            >= 0.9 * report["append_batch_1"]["recorded_per_second"]
        ),
        "sequencer ≥ 20,000/s on one tenant": (
            report["sequence_one_tenant"]["chained_per_second"] >= 20_000
        ),
        "verify ≥ 100,000/s": report["verify"]["verified_per_second"] >= 100_000,
    }
    report["goals_met"] = goals
    if args.json:
        print(json.dumps(report))
        return
    for name in (
        "append_batch_1",
        "append_batch_25",
        "append_one_tenant",
        "sequence_one_tenant",
        "verify",
    ):
        print(name, json.dumps(report[name]))
    for goal, met in goals.items():
        print(f"{'MET ' if met else 'MISSED'}  {goal}")


if __name__ == "__main__":
    main()
