"""The idempotency store of money-moving requests (PAY-3).

One row per tenant and `Idempotency-Key`: the fingerprint of the request that first used the
key, and the response it got (status, media type, body bytes), kept at least 24 hours. The row
is written in the request's own transaction, so it commits with the work it answers for, or not
at all; its primary key is what makes a concurrent duplicate wait (see
`ramparts.payments.idempotency`).

Revision ID: 0022_payments
Revises: 0021_psp_events
"""

from alembic import op

from ramparts.db.rls import tenant_table_sql

revision = "0022_payments"
down_revision = "0021_psp_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE idempotency_keys (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            key text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
            fingerprint bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
            status smallint CHECK (status BETWEEN 100 AND 599),
            media_type text CHECK (char_length(media_type) <= 200),
            body bytea,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            CONSTRAINT pk_idempotency_keys PRIMARY KEY (tenant_id, key),
            CONSTRAINT ck_idempotency_keys_response CHECK (
                (status IS NULL) = (body IS NULL) AND (status IS NULL) = (media_type IS NULL)
            ),
            CONSTRAINT ck_idempotency_keys_kept_a_day
                CHECK (expires_at >= created_at + interval '24 hours')
        )
        """,
        "CREATE INDEX ix_idempotency_keys_expires_at ON idempotency_keys (expires_at)",
        *tenant_table_sql("idempotency_keys"),
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE idempotency_keys")
