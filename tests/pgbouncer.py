"""Debian's PgBouncer in transaction pooling mode, started by a test in front of the machine's
PostgreSQL, as a production deployment runs it in front of its primary."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from ramparts.config import APP_ROLE
from tests.live import free_port

PGBOUNCER = "/usr/sbin/pgbouncer"


@dataclass(frozen=True)
class Pool:
    """A database PgBouncer serves under `alias`: `database` on the server, through at most
    `size` server connections."""

    alias: str
    database: str
    size: int


@dataclass(frozen=True)
class RunningPgBouncer:
    host: str
    port: int
    log: Path

    def url(self, alias: str, user: str = APP_ROLE) -> URL:
        """A URL of `alias` through PgBouncer, logging in as `user`."""
        return URL.create(
            "postgresql+psycopg", username=user, host=self.host, port=self.port, database=alias
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _config(server: URL, port: int, pools: list[Pool], users: Path) -> str:
    databases = "\n".join(
        f"{pool.alias} = host={server.host} port={server.port or 5432} "
        f"dbname={pool.database} pool_size={pool.size}"
        for pool in pools
    )
    # auth_type trust: the loopback server trusts its clients already (the test server's
    # own setting); a deployment uses scram-sha-256 with auth_query or an auth_file.
    return f"""[databases]
{databases}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
pool_mode = transaction
max_client_conn = 500
server_reset_query =
ignore_startup_parameters = extra_float_digits
"""


@contextmanager
def pgbouncer(directory: Path, server: URL, pools: list[Pool]) -> Iterator[RunningPgBouncer]:
    """PgBouncer on a free loopback port for the block, serving `pools` in transaction mode."""
    if not Path(PGBOUNCER).exists():  # pragma: no cover - .ci/run installs it
        pytest.fail(f"{PGBOUNCER} is missing: apt-get install pgbouncer")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    users = directory / "userlist.txt"
    users.write_text(f'"{APP_ROLE}" ""\n"{server.username}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(_config(server, port, pools, users))
    log = directory / "pgbouncer.log"
    # PgBouncer refuses to run as root: it reads its files, then becomes `postgres`.
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PGBOUNCER, *as_user, str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    running = RunningPgBouncer("127.0.0.1", port, log)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"pgbouncer exited {process.returncode}:\n{running.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"pgbouncer did not listen within 10 s:\n{running.output()}")
                time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
