"""Audit benchmarks: chained appends from concurrent writers, and verification (see README.md).

Each writer is its own process with its own connection pool, writing to its own tenant's chain
through `AuditLog.record_many` inside `Database.tenant_session`, exactly as the app does. The
baseline writes the same redacted rows with plain INSERTs (no lock, no hash, no chain) through
the same session path, in the same run.
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

from bench.common import database

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.audit.verify import FETCH_ROWS, verify_chain
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Redactor

WRITERS = 4
SECONDS = 6.0
VERIFY_EVENTS = 50_000

PLAIN_TABLE = """
CREATE TABLE bench_plain_events (
    tenant_id uuid NOT NULL, seq bigint NOT NULL, body text NOT NULL,
    CONSTRAINT pk_bench_plain_events PRIMARY KEY (tenant_id, seq)
);
GRANT SELECT, INSERT ON bench_plain_events TO ramparts_app
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


async def _write(app_url: URL, mode: str, batch: int, deadline: float) -> int:
    database = Database(app_url, pool_size=1)
    audit = AuditLog(database, Redactor(b"b" * 32))
    tenant = uuid.uuid4()
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
                        {"tenant": tenant, "first": written, "bodies": rows},
                    )
            written += batch
    finally:
        await database.dispose()
    return written


def _writer(app_url: str, mode: str, batch: int, barrier: Any, results: Any) -> None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    barrier.wait()
    deadline = time.monotonic() + SECONDS
    results.put(asyncio.run(_write(make_url(app_url), mode, batch, deadline)))


def appends_per_second(app_url: URL, mode: str, batch: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS + 1), context.Queue()
    url = app_url.render_as_string(hide_password=False)
    workers = [
        context.Process(target=_writer, args=(url, mode, batch, barrier, results))
        for _ in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    barrier.wait()  # every writer has started and imported: time only the writing
    started = time.monotonic()
    total = sum(results.get(timeout=120) for _ in workers)
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    return total / elapsed


async def _fill(app_url: URL, events: int) -> uuid.UUID:
    """One tenant's chain of `events` events, appended 500 to a transaction."""
    database = Database(app_url, pool_size=1)
    audit = AuditLog(database, Redactor(b"b" * 32))
    tenant = uuid.uuid4()
    try:
        for start in range(0, events, 500):
            async with database.tenant_session(tenant) as session:
                await audit.record_many(session, _events(tenant, 500, start))
    finally:
        await database.dispose()
    return tenant


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
            chained = appends_per_second(urls.app, "chain", batch)
            report[f"append_batch_{batch}"] = {
                "events_per_transaction": batch,
                "chained_per_second": round(chained),
                "plain_insert_per_second": round(plain),
                "ratio_to_plain": round(chained / plain, 2),
            }
        verify_rate, read_rate = verification(urls, VERIFY_EVENTS)
        report["verify"] = {
            "events": VERIFY_EVENTS,
            "verified_per_second": round(verify_rate),
            "plain_read_per_second": round(read_rate),
            "ratio_to_plain_read": round(verify_rate / read_rate, 2),
        }
    goals = {
        "append ≥ 2,000/s (4 writers, 25 events per transaction)": (
            report["append_batch_25"]["chained_per_second"] >= 2000
        ),
        "verify ≥ 100,000/s": report["verify"]["verified_per_second"] >= 100_000,
    }
    report["goals_met"] = goals
    if args.json:
        print(json.dumps(report))
        return
    for name in ("append_batch_1", "append_batch_25", "verify"):
        print(name, json.dumps(report[name]))
    for goal, met in goals.items():
        print(f"{'MET ' if met else 'MISSED'}  {goal}")


if __name__ == "__main__":
    main()
