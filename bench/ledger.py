"""Ledger benchmark: balanced entries posted per second, against pgbench's TPC-B-like run on
the same server in the same run (README.md).

Each writer is its own process with its own connection, posting through `Ledger` inside
`Database.tenant_session` as the runtime role, exactly as the money flows will (row-level
security, the deferred balance check, the append-only triggers, the account upsert), each on
its own tenant: a deposit for a new payment (which opens its held-funds account), then the
PSP's fee on it, one entry per transaction; then the same with 10 entries per transaction; then
a deposit and a refund drawn on it, one entry per transaction (a refund locks the held funds
and checks what is left before it posts: the path of refunds, disbursements and reversals).
Beside them, the floor of that path: empty tenant sessions (BEGIN, the tenant, COMMIT) per
second from the same writers, which write nothing and so wait for no WAL flush.
The baseline is `pgbench -b tpcb-like` with as many clients, on its own database on the same
server (scale = clients, so its branch rows do not serialise the clients), one TPC-B
transaction (three UPDATEs, a SELECT, an INSERT) being one unit.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import re
import shutil
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import SERVER, database, print_report, throwaway_database, timed_processes

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments.ledger import Ledger
from ramparts.payments.ledger_verify import verify_book

WRITERS = 4
SECONDS = 8.0
GOAL = 2_000  # balanced entries per second


async def _write(
    app_url: URL, per_transaction: int, deadline: float, tenant: uuid.UUID, refunds: bool
) -> int:
    database = Database(app_url, pool_size=1)
    ledger = Ledger()
    posted = 0
    try:
        while time.monotonic() < deadline:
            async with database.tenant_session(tenant) as session:
                if not per_transaction:  # the floor: the session path alone, no write
                    posted += 1
                for _ in range(per_transaction):
                    payment = f"pi_{posted - posted % 2}"
                    if posted % 2 == 0:
                        await ledger.record_deposit(
                            session, payment=payment, amount=10_000, currency="EUR"
                        )
                    elif refunds:
                        await ledger.record_refund(
                            session, payment=payment, refund=f"re_{posted}", amount=2_500,
                            currency="EUR",
                        )  # fmt: skip
                    else:
                        await ledger.record_psp_fee(
                            session, payment=payment, reference=f"txn_{posted}", amount=320,
                            currency="EUR",
                        )  # fmt: skip
                    posted += 1
    finally:
        await database.dispose()
    return posted


def _writer(  # noqa: PLR0917 - a child process's arguments
    app_url: str, per_transaction: int, tenant: str, refunds: bool, barrier: Any, results: Any
) -> None:
    from sqlalchemy.engine import make_url  # noqa: PLC0415 - in the child process

    barrier.wait()
    deadline = time.monotonic() + SECONDS
    results.put(
        asyncio.run(
            _write(make_url(app_url), per_transaction, deadline, uuid.UUID(tenant), refunds)
        )
    )


def entries_per_second(
    urls: DatabaseUrls, per_transaction: int, *, refunds: bool = False
) -> tuple[float, list[str]]:
    """Entries posted per second by WRITERS processes, and their tenants."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS + 1), context.Queue()
    url = urls.app.render_as_string(hide_password=False)
    tenants = [str(uuid.uuid4()) for _ in range(WRITERS)]
    workers = [
        context.Process(
            target=_writer, args=(url, per_transaction, tenant, refunds, barrier, results)
        )
        for tenant in tenants
    ]
    total, elapsed = timed_processes(workers, barrier, results)  # only the posting is timed
    return total / elapsed, tenants


def pgbench_tps(stack: ExitStack) -> float:
    """TPC-B-like transactions per second, WRITERS clients, on a throwaway database."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        raise SystemExit("pgbench is not installed (Debian: postgresql-client)")
    name = throwaway_database(stack, SERVER, "ramparts_pgbench")
    where = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
    subprocess.run(
        [pgbench, *where, "-i", "-q", "-s", str(WRITERS), name], check=True, capture_output=True
    )
    done = subprocess.run(
        [pgbench, *where, "-b", "tpcb-like", "-c", str(WRITERS), "-j", str(WRITERS),
         "-T", str(int(SECONDS)), "-n", name],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    found = re.search(r"tps = ([0-9.]+)", done.stdout)
    if found is None:
        raise SystemExit(f"pgbench printed no tps:\n{done.stdout}")
    return float(found.group(1))


def _verified(urls: DatabaseUrls, tenants: list[str]) -> int:
    """Every book written is intact; how many entries they hold."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        reports = [verify_book(conn, uuid.UUID(tenant)) for tenant in tenants]
    problems = [problem for report in reports for problem in report.problems]
    if problems:
        raise SystemExit(f"the benchmark's books are not intact: {problems[:3]}")
    return sum(report.entries for report in reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 below the goal")
    arguments = parser.parse_args()
    with ExitStack() as stack:
        urls = database(stack)
        baseline = pgbench_tps(stack)
        floor, _ = entries_per_second(urls, 0)
        single, tenants = entries_per_second(urls, 1)
        batched, more = entries_per_second(urls, 10)
        drawing, drawn = entries_per_second(urls, 1, refunds=True)
        checked = _verified(urls, tenants + more + drawn)
    report = {
        "writers": WRITERS,
        "pgbench_tpcb_tps": round(baseline, 1),
        "empty_tenant_sessions_per_s": round(floor, 1),
        "entries_per_s_1_per_tx": round(single, 1),
        "ratio_1_per_tx": round(single / baseline, 3),
        "entries_per_s_10_per_tx": round(batched, 1),
        "ratio_10_per_tx": round(batched / baseline, 3),
        "entries_per_s_1_per_tx_deposits_and_refunds": round(drawing, 1),
        "ratio_1_per_tx_deposits_and_refunds": round(drawing / baseline, 3),
        "entries_verified": checked,
        "goal_entries_per_s": GOAL,
        "goal_met": single >= GOAL,
    }
    print_report(report, as_json=arguments.json)
    if arguments.check and not report["goal_met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
