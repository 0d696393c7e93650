"""PostgreSQL's own tools (`pg_dump`, `pg_restore`) of the server's major version, and what
the backup reads from the server itself.

A dump is taken by a `pg_dump` of the server's major version: the machine's
(`/usr/lib/postgresql/<major>/bin`), the embedded pgserver's own binaries, or one on PATH,
whichever matches. Passwords reach the tools through PGPASSWORD, never their command line
(which any local user can read).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from ramparts.db.engine import libpq

__all__ = [
    "BackupToolError",
    "count_rows",
    "find_tool",
    "require_every_row",
    "server_major",
    "tool_connection",
]

_VERSION = re.compile(r"\(PostgreSQL\) ([0-9]+)")
TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


class BackupToolError(Exception):
    """A PostgreSQL tool is missing, or failed (its first line of error says why)."""


def server_major(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    if row is None:  # pragma: no cover - the query always answers
        raise BackupToolError("the server did not say its version")
    return int(row[0])


def _candidates(name: str, major: int) -> list[Path]:
    found = [Path(f"/usr/lib/postgresql/{major}/bin") / name]
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin is not None:
        found.append(Path(spec.origin).parent / "pginstall" / "bin" / name)
    on_path = shutil.which(name)
    if on_path is not None:
        found.append(Path(on_path))
    return found


def find_tool(name: str, major: int) -> Path:
    """`name` (pg_dump, pg_restore) of PostgreSQL `major`: an older one cannot read a newer
    server, and a newer pg_dump writes archives an older pg_restore refuses."""
    seen = []
    for path in _candidates(name, major):
        if not path.is_file():
            continue
        version = subprocess.run(  # noqa: S603 - a PostgreSQL binary, no shell
            [str(path), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        matched = _VERSION.search(version)
        if matched is not None and int(matched[1]) == major:
            return path
        seen.append(f"{path} ({version.strip() or 'no version'})")
    raise BackupToolError(
        f"no {name} of PostgreSQL {major} found"
        + (f"; not matching: {', '.join(seen)}" if seen else "")
        + f"; install postgresql-client-{major}"
    )


def tool_connection(url: URL) -> tuple[str, dict[str, str]]:
    """A connection string for a PostgreSQL tool, and its environment: the password goes in
    PGPASSWORD, never on the command line."""
    env = dict(os.environ)
    # libpq also reads the password from the query (`?password=`, which wins over the one
    # before the host): take it from there too.
    query = {name: value for name, value in url.query.items() if name != "password"}
    password = url.query.get("password", url.password)
    if isinstance(password, tuple):  # given more than once: libpq takes the last
        password = password[-1]
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return libpq(url.set(password=None, query=query)), env


def require_every_row(conn: psycopg.Connection, what: str) -> None:
    """Refuse a role that row-level security holds back: it would dump, load or count only
    part of the rows (every tenant table has FORCE ROW LEVEL SECURITY)."""
    row = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not (row and row[0]):
        raise BackupToolError(
            f"{what} needs a role that sees every row (SUPERUSER or BYPASSRLS), "
            "not one held to row-level security"
        )


def count_rows(conn: psycopg.Connection) -> dict[str, int]:
    """Rows per table (`schema.table`), with row security off: a count that row-level
    security would cut short fails instead."""
    conn.execute("SELECT set_config('row_security', 'off', true)")
    counts = {}
    for schema, table in conn.execute(TABLES).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts
