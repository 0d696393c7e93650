"""Core tenancy: schema hardening, tenants, users, memberships.

Revision ID: 0001_core
Revises:
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import CURRENT_TENANT, tenant_table_sql

revision = "0001_core"
down_revision = None
# The runtime's branch: each app's migrations form a branch of their own, labelled with the
# app's name (`ramparts.db.migrate`).
branch_labels = ("ramparts",)
depends_on = None


def upgrade() -> None:
    for statement in [
        # Only the runtime role may connect, and it may not create temporary tables (a temp
        # table can shadow a real one for the rest of a pooled connection's life).
        f"""
        DO $$ BEGIN
            EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC',
                           current_database());
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {APP_ROLE}', current_database());
        END $$
        """,
        # Nobody but the owner creates objects; the runtime role only uses them.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
        f"GRANT SELECT ON alembic_version TO {APP_ROLE}",
        # Functions are executable by PUBLIC by default; ours are granted one by one.
        "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        """
        CREATE TABLE tenants (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
            name text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
            region text NOT NULL CHECK (region ~ '^[a-z]{2,8}$'),
            is_demo boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        # The tenant registry has no tenant_id: a tenant session sees its own tenant row only;
        # the owner (provisioning, the production guard) sees all of them.
        "ALTER TABLE tenants ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE tenants FORCE ROW LEVEL SECURITY",
        f"CREATE POLICY tenant_self ON tenants FOR SELECT TO {APP_ROLE} "
        f"USING (id = {CURRENT_TENANT})",
        "CREATE POLICY registry_owner ON tenants TO CURRENT_USER USING (true) WITH CHECK (true)",
        f"GRANT SELECT ON tenants TO {APP_ROLE}",
        # The production guard asks this as the runtime role, which cannot see across tenants:
        # demo tenants (flagged or by their well-known slugs) or demo users (RFC 2606 .test).
        """
        CREATE FUNCTION ramparts_demo_data_present() RETURNS boolean
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        DECLARE
            caller_tenant text := current_setting('app.tenant_id', true);
            tenant record;
            found boolean := EXISTS (
                SELECT 1 FROM tenants WHERE is_demo OR slug IN ('acme', 'globex'));
        BEGIN
            FOR tenant IN SELECT id FROM tenants WHERE NOT found LOOP
                PERFORM set_config('app.tenant_id', tenant.id::text, true);
                found := EXISTS (SELECT 1 FROM users WHERE username LIKE '%.test');
                EXIT WHEN found;
            END LOOP;
            PERFORM set_config('app.tenant_id', coalesce(caller_tenant, ''), true);
            RETURN found;
        END $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_demo_data_present() FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION ramparts_demo_data_present() TO {APP_ROLE}",
        """
        CREATE TABLE users (
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            username text NOT NULL
                CHECK (char_length(username) BETWEEN 3 AND 254 AND username = lower(username)),
            display_name text NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
            password_hash text,
            is_active boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_users PRIMARY KEY (id),
            CONSTRAINT uq_users_tenant_id_id UNIQUE (tenant_id, id),
            CONSTRAINT uq_users_tenant_id_username UNIQUE (tenant_id, username)
        )
        """,
        *tenant_table_sql("users"),
        # Composite foreign keys carry tenant_id, so a row can never point into another tenant.
        """
        CREATE TABLE memberships (
            tenant_id uuid NOT NULL,
            user_id uuid NOT NULL,
            role text NOT NULL
                CONSTRAINT ck_memberships_role CHECK (role ~ '^[a-z][a-z0-9_]{0,31}$'),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_memberships PRIMARY KEY (tenant_id, user_id, role),
            CONSTRAINT fk_memberships_user FOREIGN KEY (tenant_id, user_id)
                REFERENCES users (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("memberships"),
    ]:
        op.execute(statement)
