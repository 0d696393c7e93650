"""The database under the API, as its operator sees it: which tables hold tenants' rows, the
row-level security, grants and triggers on them, and reads in one tenant's context.

Reads that must see a tenant's rows run with `app.tenant_id` set for the transaction, so they
see them whether the owner is a superuser (who bypasses row-level security) or not (whom
FORCE subjects to it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

__all__ = [
    "TENANT_SETTING",
    "Policy",
    "TableSecurity",
    "all_tables",
    "as_tenant",
    "count",
    "rolled_back",
    "rows_as_text",
    "sees_every_row",
    "table_security",
    "tenant_tables",
]

#: The setting the runtime's tenant sessions set (`ramparts.db.engine.SET_TENANT`) and every
#: row-level security policy reads.
TENANT_SETTING = "app.tenant_id"
#: A policy condition that confines rows to the tenant of the transaction, as PostgreSQL
#: prints the runtime's (db/rls.py `CURRENT_TENANT`): the tenant column (`id` on the tenant
#: registry) equal to the setting, NULL (no row) when it is unset. Nothing else.
_CONFINING = re.compile(
    r"\((?:tenant_id|id) = \(NULLIF\(current_setting\('"
    + re.escape(TENANT_SETTING)
    + r"'::text, true\), ''::text\)\)::uuid\)"
)


@contextmanager
def rolled_back(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A transaction that is always rolled back, whatever happens in it."""
    with conn.transaction(force_rollback=True):
        yield conn


def as_tenant(conn: psycopg.Connection[Any], tenant: str) -> None:
    """The rest of the current transaction acts as `tenant`, as a tenant session does."""
    conn.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant))


def all_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table of the instance's schema."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY c.relname"
    ).fetchall()
    return [str(name) for (name,) in rows]


def sees_every_row(conn: psycopg.Connection[Any]) -> bool:
    """Whether the connected role bypasses row-level security (a superuser, or BYPASSRLS)."""
    row = conn.execute(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def rows_as_text(
    conn: psycopg.Connection[Any], table: str, tenants: list[str], *, limit: int
) -> Iterator[str]:
    """Each row of `table` as PostgreSQL prints it (bytea as hex), as each of `tenants` sees
    it unless the role sees every row anyway; at most `limit` rows per pass."""
    passes: list[str | None] = [None] if sees_every_row(conn) else [None, *tenants]
    query = sql.SQL("SELECT t::text FROM {} t LIMIT %s").format(sql.Identifier(table))
    for tenant in passes:
        with rolled_back(conn):
            if tenant is not None:
                as_tenant(conn, tenant)
            for (text,) in conn.execute(query, (limit,)):
                yield str(text)


def tenant_tables(conn: psycopg.Connection[Any]) -> list[str]:
    """Every table with a `tenant_id` column (the test suite's definition of a tenant table)."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
        WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
        ORDER BY c.relname
        """
    ).fetchall()
    return [str(name) for (name,) in rows]


@dataclass(frozen=True)
class Policy:
    name: str
    command: str
    roles: tuple[str, ...]
    using: str | None
    check: str | None

    def applies_to(self, role: str) -> bool:
        return "public" in self.roles or role in self.roles

    def confined(self) -> bool:
        """Each of its conditions (where present) is exactly `<tenant column> = the tenant
        setting` as the runtime's migrations write it: anything more (`... OR true`, a second
        clause) could widen it, so it does not count as confined."""
        parts = [part for part in (self.using, self.check) if part is not None]
        return bool(parts) and all(_CONFINING.fullmatch(" ".join(p.split())) for p in parts)


@dataclass(frozen=True)
class TableSecurity:
    table: str
    enabled: bool
    forced: bool
    owner: str
    policies: tuple[Policy, ...]


def table_security(conn: psycopg.Connection[Any], table: str) -> TableSecurity:
    row = conn.execute(
        "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if row is None:
        raise LookupError(f"no table {table}")
    policies = conn.execute(
        "SELECT policyname, cmd, roles::text[], qual, with_check FROM pg_policies "
        "WHERE schemaname = current_schema() AND tablename = %s ORDER BY policyname",
        (table,),
    ).fetchall()
    return TableSecurity(
        table,
        bool(row[0]),
        bool(row[1]),
        str(row[2]),
        tuple(Policy(p[0], p[1], tuple(p[2]), p[3], p[4]) for p in policies),
    )


def count(conn: psycopg.Connection[Any], table: str, where: str = "", *params: Any) -> int:
    """Rows of `table` (matching `where`, a constant SQL condition with %s parameters)."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
    if where:
        query = sql.SQL(" ").join([query, sql.SQL("WHERE " + where)])
    found = conn.execute(query, params).fetchone()
    return int(found[0]) if found else 0
