"""The database a restore goes into: fresh from CREATE DATABASE, and owned by the restorer.

"Empty" is more than "no tables". Whatever a database holds besides its catalogs' initial
contents outlives the restore and runs beside, or instead of, what was restored: a function
or operator in `public` that shadows a built-in (CVE-2018-1058), default privileges that hand
every restored table to another role, an event trigger, a large object, a grant of CONNECT or
of a system function to another role, a per-database setting. Everything created after initdb
has an OID from 16384 on, so each database catalog is searched for one; what initdb made is
checked for changed privileges (against `pg_init_privs`) and owners instead.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ramparts.config import APP_ROLE

__all__ = ["leftovers", "not_owned_by_restorer"]

#: FirstNormalObjectId: every object created after initdb has an OID from here on.
FIRST_USER_OID = 16384
#: The database-local catalogs with an OID column (shared catalogs hold the cluster's roles,
#: databases and tablespaces, which any database sees).
CATALOGS = """
SELECT c.relname,
       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
          AND NOT a.attisdropped AND a.atttypid = 'aclitem[]'::regtype)
FROM pg_class c
WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind = 'r' AND NOT c.relisshared
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'oid')
ORDER BY 1
"""
#: Temporary schemas persist once any session used one; theirs are another session's objects.
TEMP = r"(SELECT oid FROM pg_namespace WHERE nspname ~ '^pg_(toast_)?temp_[0-9]+$')"
_EXCEPT_TEMP = {
    "pg_namespace": f"oid NOT IN {TEMP}",
    "pg_class": f"relnamespace NOT IN {TEMP}",
    "pg_type": f"typnamespace NOT IN {TEMP}",
}
#: initdb's information_schema is made after `pg_init_privs` is recorded: its grants are not
#: there to compare with.
_INITDB_ACL_EXEMPT = {
    "pg_namespace": "nspname = 'information_schema'",
    "pg_class": "relnamespace = 'information_schema'::regnamespace",
    "pg_type": "typnamespace = 'information_schema'::regnamespace",
    "pg_proc": "pronamespace = 'information_schema'::regnamespace",
}
OTHER = """
SELECT 'column privileges' WHERE EXISTS (
    SELECT 1 FROM pg_attribute a WHERE a.attrelid < 16384
      AND a.attrelid NOT IN (SELECT oid FROM pg_class
                             WHERE relnamespace = 'information_schema'::regnamespace)
      AND a.attacl IS DISTINCT FROM (
        SELECT initprivs FROM pg_init_privs i WHERE i.objoid = a.attrelid
          AND i.classoid = 'pg_class'::regclass AND i.objsubid = a.attnum))
UNION ALL
SELECT 'database settings' WHERE EXISTS (
    SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = current_database())
UNION ALL
SELECT 'database grants' WHERE EXISTS (
    SELECT 1 FROM pg_database d, aclexplode(d.datacl) g
    WHERE d.datname = current_database() AND g.grantee NOT IN (0, d.datdba)
      AND pg_get_userbyid(g.grantee) <> %(app)s)
UNION ALL
SELECT 'schema public''s owner' WHERE EXISTS (
    SELECT 1 FROM pg_namespace WHERE nspname = 'public'
      AND nspowner <> 'pg_database_owner'::regrole)
"""


def _catalog_checks(conn: psycopg.Connection) -> list[sql.Composable]:
    checks: list[sql.Composable] = []
    for catalog, acl in conn.execute(CATALOGS).fetchall():
        table = sql.Identifier("pg_catalog", catalog)
        # A large object's OID is the caller's to choose (lo_create(42)): any is a leftover.
        created = sql.SQL("true" if catalog == "pg_largeobject_metadata" else "oid >= {}").format(
            sql.Literal(FIRST_USER_OID)
        )
        if catalog in _EXCEPT_TEMP:
            created = sql.SQL("{} AND {}").format(created, sql.SQL(_EXCEPT_TEMP[catalog]))
        checks.append(
            sql.SQL("SELECT {} WHERE EXISTS (SELECT 1 FROM {} WHERE {})").format(
                sql.Literal(catalog), table, created
            )
        )
        if acl is None:
            continue
        exempt = (
            sql.SQL(f"NOT ({_INITDB_ACL_EXEMPT[catalog]}) AND ")
            if (catalog in _INITDB_ACL_EXEMPT)
            else sql.SQL("")
        )
        checks.append(
            sql.SQL(
                "SELECT {} WHERE EXISTS (SELECT 1 FROM {} o WHERE {}o.oid < {} AND o.{} "
                "IS DISTINCT FROM (SELECT initprivs FROM pg_init_privs i WHERE i.objoid = o.oid "
                "AND i.classoid = {}::regclass AND i.objsubid = 0))"
            ).format(
                sql.Literal(f"{catalog} privileges"),
                table,
                exempt,
                sql.Literal(FIRST_USER_OID),
                sql.Identifier(acl),
                sql.Literal(f"pg_catalog.{catalog}"),
            )
        )
    return checks


def leftovers(conn: psycopg.Connection) -> list[str]:
    """What the database holds that CREATE DATABASE from a pristine template does not give it:
    the catalogs with objects of their own, changed privileges or settings; [] when fresh."""
    query = sql.SQL(" UNION ALL ").join([*_catalog_checks(conn), sql.SQL(OTHER)])
    return [row[0] for row in conn.execute(query, {"app": APP_ROLE}).fetchall()]


def not_owned_by_restorer(conn: psycopg.Connection) -> str | None:
    """The database's owner when it is not the role restoring into it: that owner would own
    schema `public` (PostgreSQL 15) and could shadow or drop what was restored."""
    row = conn.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database "
        "WHERE datname = current_database() AND datdba <> "
        "(SELECT oid FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    return None if row is None else str(row[0])
