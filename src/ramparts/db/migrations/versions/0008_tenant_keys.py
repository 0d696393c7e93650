"""Per-tenant data keys, wrapped by the KMS (envelope encryption); deleting them shreds.

Revision ID: 0008_tenant_keys
Revises: 0007_tenant_region
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "0008_tenant_keys"
down_revision = "0007_tenant_region"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # `purpose` data seals fields (versioned: a rotation adds one); `index` keys blind
        # indexes (never rotated, or equal values would stop matching). No foreign key to
        # tenants: a tenant's keys are shredded on purpose, whatever else remains.
        """
        CREATE TABLE tenant_data_keys (
            tenant_id uuid NOT NULL,
            purpose text NOT NULL CHECK (purpose IN ('data', 'index')),
            version integer NOT NULL CHECK (version >= 1),
            kms_key text NOT NULL,
            wrapped bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_tenant_data_keys PRIMARY KEY (tenant_id, purpose, version)
        )
        """,
        *tenant_table_sql("tenant_data_keys", privileges="SELECT, INSERT"),
    ]:
        op.execute(statement)
