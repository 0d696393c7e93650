"""The runtime role may learn its own tenant's data region (authorization needs it), nothing
more: the function reads the tenant of the caller's session, never an argument.

Revision ID: 0007_tenant_region
Revises: 0006_audit
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0007_tenant_region"
down_revision = "0006_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        """
        CREATE FUNCTION ramparts_tenant_region() RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public
        AS $$
            SELECT region FROM tenants
            WHERE id = NULLIF(current_setting('app.tenant_id', true), '')::uuid
        $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_tenant_region() FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION ramparts_tenant_region() TO {APP_ROLE}",
    ]:
        op.execute(statement)
