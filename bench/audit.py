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
import secrets
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import database

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.audit.verify import verify_chain
from ramparts.db.engine import Database
from ramparts.detectors import Redactor

WRITERS = 4
SECONDS = 6.0

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


def verification(owner_libpq: str) -> tuple[float, float, int]:
    """Events verified per second over every chain, and the plain-read baseline."""
    with psycopg.connect(owner_libpq) as conn:
        tenants = [row[0] for row in conn.execute("SELECT tenant FROM audit_chains")]
        started = time.perf_counter()
        events = 0
        for tenant in tenants:
            report = verify_chain(conn, tenant)
            if not report.intact:
                raise SystemExit(f"chain broken: {report.as_json()}")
            events += report.events
        verify_rate = events / (time.perf_counter() - started)
        started = time.perf_counter()
        read = 0
        for tenant in tenants:
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                with conn.cursor(name=f"plain_{secrets.token_hex(4)}", binary=True) as cursor:
                    cursor.itersize = 10_000
                    cursor.execute(
                        "SELECT seq, body, prev_hash, hash FROM audit_events "
                        "WHERE tenant_id = %s ORDER BY seq",
                        (tenant,),
                    )
                    read += sum(1 for _ in cursor)
        read_rate = read / (time.perf_counter() - started)
    return verify_rate, read_rate, events


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
        verify_rate, read_rate, events = verification(owner_libpq)
        report["verify"] = {
            "events": events,
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
