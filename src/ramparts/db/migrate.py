"""Roles and Alembic migrations, run as the owner (`ramparts migrate`)."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from ramparts.config import APP_ROLE
from ramparts.db.engine import DatabaseUrls, libpq

__all__ = ["MigrationError", "current_revision", "head_revision", "upgrade"]

_PACKAGE = Path(__file__).resolve().parent.parent
#: Each domain keeps its own migrations beside its models; Alembic chains them.
VERSION_LOCATIONS = (
    _PACKAGE / "db" / "migrations" / "versions",
    _PACKAGE / "quotes" / "migrations",
    _PACKAGE / "audit" / "migrations",
    _PACKAGE / "ai" / "migrations",
)


class MigrationError(Exception):
    """The database cannot be brought to the expected schema or roles."""


def _config(url: URL | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_PACKAGE / "db" / "migrations"))
    config.set_main_option("version_locations", " ".join(str(p) for p in VERSION_LOCATIONS))
    config.set_main_option("path_separator", "space")
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:
        raise MigrationError("no migrations found")
    return head


def current_revision(url: URL) -> str | None:
    engine = create_engine(url, poolclass=None)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


ROLE_POWERS = """
SELECT r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication,
       NOT r.rolcanlogin,
       EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.member = r.oid),
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relowner = r.oid)
FROM pg_roles r WHERE r.rolname = %s
"""
POWER_NAMES = (
    "SUPERUSER",
    "BYPASSRLS",
    "CREATEROLE",
    "CREATEDB",
    "REPLICATION",
    "NOLOGIN",
    "membership in other roles",
    "ownership of objects",
)


def ensure_app_role(urls: DatabaseUrls) -> None:
    """Create the runtime login role, or refuse an existing one that has any power."""
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        row = conn.execute(ROLE_POWERS, (APP_ROLE,)).fetchone()
        if row is None:
            # DuplicateObject: created concurrently by another migrate on the same cluster.
            with suppress(psycopg.errors.DuplicateObject):
                conn.execute(
                    sql.SQL(
                        "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB "
                        "NOCREATEROLE NOINHERIT NOREPLICATION"
                    ).format(sql.Identifier(APP_ROLE))
                )
        else:
            powers = [name for name, has in zip(POWER_NAMES, row, strict=True) if has]
            if powers:
                raise MigrationError(
                    f"role {APP_ROLE} has {', '.join(powers)}; "
                    "the runtime role must have none of these"
                )
        if urls.app.password:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(urls.app.password)
                )
            )


def upgrade(urls: DatabaseUrls) -> tuple[str | None, str]:
    """Bring the schema to head; returns (revision before, revision after)."""
    ensure_app_role(urls)
    before = current_revision(urls.owner)
    command.upgrade(_config(urls.owner), "head")
    return before, head_revision()
