"""What the benchmarks share: a throwaway, migrated database."""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ramparts.apps import installed_apps, migration_branches
from ramparts.db.embedded import embedded_postgres
from ramparts.db.engine import DatabaseUrls, derive_app_url
from ramparts.db.migrate import upgrade

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def throwaway_database(stack: ExitStack, maintenance: str, prefix: str = "ramparts_bench") -> str:
    """A new, empty database on the server of `maintenance` (a libpq URL), dropped when
    `stack` closes; its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    stack.callback(drop)
    return name


def database(stack: ExitStack) -> DatabaseUrls:
    try:
        psycopg.connect(SERVER, connect_timeout=2).close()
        maintenance = make_url(SERVER)
    except psycopg.OperationalError:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        maintenance = stack.enter_context(embedded_postgres(home)).set(database="postgres")
    name = throwaway_database(stack, maintenance.render_as_string(hide_password=False))
    owner = maintenance.set(drivername="postgresql+psycopg", database=name)
    urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
    upgrade(urls, migration_branches(installed_apps().values()))
    return urls


def print_report(report: dict[str, Any], *, as_json: bool) -> None:
    """One JSON object with --json, else one aligned line per measure."""
    if as_json:
        print(json.dumps(report))
        return
    width = max(map(len, report)) + 2
    for name, value in report.items():
        print(f"{name:{width}} {value}")


def timed_processes(workers: list[SpawnProcess], barrier: Any, results: Any) -> tuple[int, float]:
    """Start `workers`, wait until each reaches `barrier` (started and imported), then time
    until each has put its count on `results`: (total counted, seconds)."""
    for worker in workers:
        worker.start()
    barrier.wait()
    started = time.monotonic()
    total = sum(results.get(timeout=120) for _ in workers)
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    return total, elapsed
