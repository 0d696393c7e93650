"""Row-level security at the SQL level, as the runtime role `ramparts_app`.

These tests bypass the application on purpose: they show that even SQL written without any
tenant filter, or written to attack another tenant, is confined by PostgreSQL itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import errors

from ramparts.apps import installed_apps, migration_branches
from ramparts.config import APP_ROLE
from ramparts.db.engine import DatabaseUrls
from ramparts.db.migrate import MigrationError, upgrade
from tests.conftest import libpq

TENANT_TABLES = ("users", "memberships", "quotes", "quote_items")


@dataclass(frozen=True)
class Seeded:
    tenant: uuid.UUID
    user: uuid.UUID
    quote: uuid.UUID


def seed_tenant(owner: psycopg.Connection, slug: str) -> Seeded:
    """One tenant with a buyer, a membership, a quote and an item, written by the owner."""
    tenant, user, quote = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with owner.transaction():
        owner.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
        owner.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, %s, 'eu')",
            (tenant, slug, slug),
        )
        owner.execute(
            "INSERT INTO users (id, tenant_id, username, display_name) "
            "VALUES (%s, %s, %s, 'Buyer')",
            (user, tenant, f"buyer@{slug}.test"),
        )
        owner.execute(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'buyer')",
            (tenant, user),
        )
        owner.execute(
            "INSERT INTO quotes (id, tenant_id, buyer_id, title, currency) "
            "VALUES (%s, %s, %s, 'Chairs', 'EUR')",
            (quote, tenant, user),
        )
        owner.execute(
            "INSERT INTO quote_items (tenant_id, quote_id, position, description, "
            "quantity, unit_price_minor) VALUES (%s, %s, 1, 'Chair', 2, 100)",
            (tenant, quote),
        )
    return Seeded(tenant, user, quote)


@pytest.fixture(scope="module")
def owner(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def pair(owner: psycopg.Connection) -> tuple[Seeded, Seeded]:
    suffix = uuid.uuid4().hex[:8]
    return seed_tenant(owner, f"a-{suffix}"), seed_tenant(owner, f"b-{suffix}")


@pytest.fixture
def app_conn(urls: DatabaseUrls) -> Iterator[psycopg.Connection]:
    """A connection logged in as the runtime role, inside a transaction rolled back after."""
    with psycopg.connect(libpq(urls.app)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        yield conn
        conn.rollback()


def as_tenant(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))


def test_tenant_sees_only_its_own_rows(
    app_conn: psycopg.Connection, pair: tuple[Seeded, Seeded]
) -> None:
    a, b = pair
    as_tenant(app_conn, a.tenant)
    for table in TENANT_TABLES:
        tenants = {row[0] for row in app_conn.execute(f"SELECT tenant_id FROM {table}")}
        assert tenants == {a.tenant}, table
    assert app_conn.execute("SELECT id FROM quotes WHERE id = %s", (b.quote,)).fetchall() == []
    assert app_conn.execute("SELECT id FROM tenants").fetchall() == [(a.tenant,)]
    totals = app_conn.execute("SELECT quote_id, total_minor FROM quote_totals").fetchall()
    assert totals == [(a.quote, 200)]


def test_no_tenant_set_sees_nothing(
    app_conn: psycopg.Connection, pair: tuple[Seeded, Seeded]
) -> None:
    for table in (*TENANT_TABLES, "tenants", "quote_totals"):
        count = app_conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert count == (0,), table
    # An empty string (what RESET leaves behind) is no tenant either.
    app_conn.execute("SELECT set_config('app.tenant_id', '', true)")
    assert app_conn.execute("SELECT count(*) FROM quotes").fetchone() == (0,)


FORGED_INSERTS: dict[str, tuple[str, Callable[[Seeded], tuple[object, ...]]]] = {
    "users": (
        "INSERT INTO users (tenant_id, username, display_name) VALUES (%s, 'x@x.test', 'X')",
        lambda b: (b.tenant,),
    ),
    "memberships": (
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'admin')",
        lambda b: (b.tenant, b.user),
    ),
    "quotes": (
        "INSERT INTO quotes (tenant_id, buyer_id, title, currency) "
        "VALUES (%s, %s, 'Forged', 'EUR')",
        lambda b: (b.tenant, b.user),
    ),
    "quote_items": (
        "INSERT INTO quote_items (tenant_id, quote_id, position, description, "
        "quantity, unit_price_minor) VALUES (%s, %s, 9, 'Forged', 1, 1)",
        lambda b: (b.tenant, b.quote),
    ),
}


@pytest.mark.parametrize("table", TENANT_TABLES)
def test_cannot_insert_a_row_claiming_another_tenant(
    app_conn: psycopg.Connection, pair: tuple[Seeded, Seeded], table: str
) -> None:
    a, b = pair
    as_tenant(app_conn, a.tenant)
    statement, params = FORGED_INSERTS[table]
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute(statement, params(b))


def test_cannot_reference_another_tenants_rows(
    app_conn: psycopg.Connection, pair: tuple[Seeded, Seeded]
) -> None:
    a, b = pair
    as_tenant(app_conn, a.tenant)
    # Own tenant, but pointing at B's user: the composite foreign key refuses it.
    with pytest.raises(errors.ForeignKeyViolation):
        app_conn.execute(
            "INSERT INTO quotes (tenant_id, buyer_id, title, currency) "
            "VALUES (%s, %s, 'Cross', 'EUR')",
            (a.tenant, b.user),
        )


def test_cannot_update_or_delete_another_tenants_rows(
    app_conn: psycopg.Connection, pair: tuple[Seeded, Seeded], owner: psycopg.Connection
) -> None:
    a, b = pair
    as_tenant(app_conn, a.tenant)
    for table in TENANT_TABLES:
        updated = app_conn.execute(
            f"UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = %s", (b.tenant,)
        )
        assert updated.rowcount == 0, table
    assert (
        app_conn.execute("UPDATE quotes SET title = 'Hijacked' WHERE id = %s", (b.quote,)).rowcount
        == 0
    )
    for table in reversed(TENANT_TABLES):
        assert (
            app_conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (b.tenant,)).rowcount == 0
        ), table
    with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
        app_conn.execute(
            "UPDATE quote_items SET tenant_id = %s WHERE tenant_id = %s", (b.tenant, a.tenant)
        )
    app_conn.rollback()
    title = owner.execute("SELECT title FROM quotes WHERE id = %s", (b.quote,)).fetchone()
    assert title == ("Chairs",)


def test_runtime_role_cannot_create_tenants(app_conn: psycopg.Connection) -> None:
    tenant = uuid.uuid4()
    as_tenant(app_conn, tenant)
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, 'rogue', 'Rogue', 'us')",
            (tenant,),
        )


@pytest.mark.parametrize(
    "statement",
    [
        "ALTER TABLE quotes DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE quotes NO FORCE ROW LEVEL SECURITY",
        "ALTER POLICY tenant_isolation ON quotes USING (true)",
        "DROP POLICY tenant_isolation ON quotes",
        "CREATE POLICY open ON quotes USING (true)",
        "SET ROLE postgres",
        "SELECT rolpassword FROM pg_authid",
        "SET row_security = off; SELECT count(*) FROM quotes",
        "CREATE TABLE smuggled (id int)",
        "ALTER ROLE ramparts_app BYPASSRLS",
        "TRUNCATE quotes",
    ],
)
def test_runtime_role_cannot_escape(
    app_conn: psycopg.Connection, owner: psycopg.Connection, statement: str
) -> None:
    table_owner = owner.execute(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'quotes'"
    ).fetchone()
    assert table_owner is not None
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute(statement.replace("postgres", table_owner[0]))


def test_runtime_role_has_no_power(owner: psycopg.Connection) -> None:
    row = owner.execute(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, "
        "rolinherit FROM pg_roles WHERE rolname = %s",
        (APP_ROLE,),
    ).fetchone()
    assert row == (False, False, False, False, False)
    owned = owner.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r "
        "ON r.oid = c.relowner WHERE r.rolname = %s",
        (APP_ROLE,),
    ).fetchone()
    assert owned == (0,)
    memberships = owner.execute(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r "
        "ON r.oid = m.member WHERE r.rolname = %s",
        (APP_ROLE,),
    ).fetchone()
    assert memberships == (0,)


TENANT_POLICY = (
    "(tenant_id = (NULLIF(current_setting('app.tenant_id'::text, true), ''::text))::uuid)"
)


def test_every_tenant_table_forces_rls_with_tenant_policy_and_index(
    owner: psycopg.Connection,
) -> None:
    """Walks the catalog: a new table with tenant_id but no FORCE RLS fails here."""
    tables = owner.execute(
        """
        SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg_toast%%' AND c.relkind IN ('r', 'p')
        """
    ).fetchall()
    assert {name for name, *_ in tables} >= set(TENANT_TABLES)
    for name, enabled, forced in tables:
        assert enabled, f"{name} lacks ENABLE ROW LEVEL SECURITY"
        assert forced, f"{name} lacks FORCE ROW LEVEL SECURITY"
        policies = owner.execute(
            "SELECT policyname, permissive, roles::text[], cmd, qual, with_check "
            "FROM pg_policies WHERE schemaname || '.' || tablename = %s OR tablename = %s",
            (name, name),
        ).fetchall()
        # Exactly one policy, for everyone and every command, on the tenant setting only:
        # any extra permissive policy would widen it, a restrictive one is not expected.
        assert policies == [
            ("tenant_isolation", "PERMISSIVE", ["public"], "ALL", TENANT_POLICY, TENANT_POLICY)
        ], name
        leading = owner.execute(
            """
            SELECT count(*) FROM pg_index i
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = %s::regclass AND a.attname = 'tenant_id'
            """,
            (name,),
        ).fetchone()
        assert leading is not None
        assert leading[0] >= 1, f"{name}.tenant_id is not the leading column of any index"


def test_views_run_with_the_callers_rights(owner: psycopg.Connection) -> None:
    views = owner.execute(
        "SELECT c.relname, coalesce(c.reloptions, '{}') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'v'"
    ).fetchall()
    assert views, "expected at least the quote_totals view"
    for name, options in views:
        assert "security_invoker=true" in options, f"view {name} runs as its owner"


def test_security_definer_functions_are_private_and_pinned(owner: psycopg.Connection) -> None:
    functions = owner.execute(
        "SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE'), "
        "coalesce(p.proconfig, '{}') FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prosecdef"
    ).fetchall()
    assert functions, "expected ramparts_demo_data_present"
    for name, public, config in functions:
        assert not public, f"SECURITY DEFINER function {name} is executable by PUBLIC"
        assert any(c.startswith("search_path=") for c in config), f"{name} has no search_path"


def test_runtime_role_cannot_create_temporary_tables(app_conn: psycopg.Connection) -> None:
    # A temp table named like a real one would shadow it for the connection's life.
    with pytest.raises(errors.InsufficientPrivilege):
        app_conn.execute("CREATE TEMPORARY TABLE quotes (id uuid)")


def test_migrate_refuses_a_runtime_role_with_power(
    owner: psycopg.Connection, urls: DatabaseUrls
) -> None:
    helper = f"ramparts_test_power_{uuid.uuid4().hex[:8]}"
    owner.execute(f"CREATE ROLE {helper} NOLOGIN")
    owner.execute(f"GRANT {helper} TO {APP_ROLE}")
    try:
        with pytest.raises(MigrationError, match="membership in other roles"):
            upgrade(urls)
    finally:
        owner.execute(f"REVOKE {helper} FROM {APP_ROLE}")
        owner.execute(f"DROP ROLE {helper}")
    # And accepts it again once the power is gone (the database holds the apps' branches).
    upgrade(urls, migration_branches(installed_apps().values()))
