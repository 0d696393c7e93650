"""The embedded PostgreSQL server (pgserver) used when RAMPARTS_DATABASE_URL is unset.

It listens on a Unix socket only (never on a TCP port) under RAMPARTS_HOME, and is stopped
when the last process holding it exits.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DATABASE_NAME", "embedded_postgres"]

DATABASE_NAME = "ramparts"


def _pgserver() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then uses a
    # private directory under /tmp, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # noqa: PLC0415 - importing starts nothing, but is slow and noisy
        import pgserver.utils  # noqa: PLC0415

    return pgserver


def _forget_dead_holders(pgserver: Any, pgdata: Path) -> None:
    """Drop processes that died without releasing the server from pgserver's holder list.

    pgserver stops the server when its last holder exits; a holder killed hard (SIGKILL, OOM)
    stays listed forever and would keep every later server running after its users exit.
    """
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    holders = pgserver.utils.DiskList(path)
    with pgserver.postgres_server.PostgresServer._lock:  # pgserver's own lock
        alive = [pid for pid in holders.get() if psutil.pid_exists(pid)]
        holders.put(alive)


@contextmanager
def embedded_postgres(home: Path) -> Iterator[URL]:
    """Start (or join) the embedded server under `home` and yield the owner URL."""
    pgdata = (home / "pgdata").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgserver = _pgserver()
    _forget_dead_holders(pgserver, pgdata)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
        yield make_url(server.get_uri(DATABASE_NAME))
    finally:
        server.cleanup()
