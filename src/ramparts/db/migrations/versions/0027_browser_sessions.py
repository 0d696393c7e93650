"""Browser sessions: the first-party web app's server-side sessions (a backend for frontend).

The browser holds one cookie: the tenant's id and 256 random bits. The row is found by the
SHA-256 of those bits and holds the user's OAuth tokens sealed with AES-GCM under a key derived
from the same bits, so the database alone (a dump, a backup) opens no session. Under row-level
security like every tenant table.

Revision ID: 0027_browser_sessions
Revises: 0026_reconciliation
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "0027_browser_sessions"
down_revision = "0026_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE browser_sessions (
            tenant_id uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
            id_hash bytea NOT NULL CHECK (octet_length(id_hash) = 32),
            user_id uuid NOT NULL,
            sealed bytea NOT NULL,
            access_expires_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, id_hash),
            FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    for statement in tenant_table_sql("browser_sessions"):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE browser_sessions")
