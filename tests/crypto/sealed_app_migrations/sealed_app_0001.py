"""A test app's table with a sealed column (tests/crypto/test_sealed_columns.py).

Revision ID: sealed_app_0001
Revises:
Depends on: 0019_role_format
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "sealed_app_0001"
down_revision = None
branch_labels = ("sealed_app",)
depends_on = "0019_role_format"


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE sealed_notes (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            id uuid NOT NULL,
            body sealed_field,
            CONSTRAINT pk_sealed_notes PRIMARY KEY (tenant_id, id)
        )
        """,
        *tenant_table_sql("sealed_notes"),
    ]:
        op.execute(statement)
