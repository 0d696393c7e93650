"""PSP webhook events, stored once by event id, waiting for the worker.

`psp_events` holds each verified event the PSP sent about a tenant's object, in that tenant's
rows (row-level security). The event id is unique across tenants, so a second delivery of an
event stores nothing, whichever tenant it names. Rows start `pending`; the job worker (a
later revision) takes them from there, and grants itself what it needs to move them on. The
runtime role may only insert and read: an event as received is never rewritten by a request.

`ramparts_store_psp_event` sets the tenant and stores an event in one round trip (the webhook
route opens its tenant transaction with it): it runs as its caller (row-level security and
grants apply) and answers whether the event was new.

Revision ID: 0021_psp_events
Revises: 0020_ledger
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0021_psp_events"
down_revision = "0020_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE psp_events (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            event_id text NOT NULL CHECK (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
            event_type text NOT NULL CHECK (event_type ~ '^[a-z_]+(\\.[a-z_]+){1,4}$'),
            object_id text NOT NULL CHECK (char_length(object_id) BETWEEN 1 AND 255),
            livemode boolean NOT NULL,
            psp_created_at timestamptz NOT NULL,
            signed_at timestamptz NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now(),
            payload jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
            state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending')),
            PRIMARY KEY (tenant_id, event_id),
            CONSTRAINT psp_events_event_id_key UNIQUE (event_id)
        )
        """,
        # What the worker will take, oldest first, per tenant.
        "CREATE INDEX psp_events_pending ON psp_events (tenant_id, received_at) "
        "WHERE state = 'pending'",
        *tenant_table_sql("psp_events", privileges="SELECT, INSERT"),
        """
        CREATE FUNCTION ramparts_store_psp_event(
            tenant uuid, event_id text, event_type text, object_id text, livemode boolean,
            psp_created_at timestamptz, signed_at timestamptz, payload jsonb
        ) RETURNS boolean
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, public AS $$
        BEGIN
            PERFORM set_config('app.tenant_id', tenant::text, true);
            INSERT INTO psp_events (tenant_id, event_id, event_type, object_id, livemode,
                                    psp_created_at, signed_at, payload)
            VALUES (tenant, event_id, event_type, object_id, livemode,
                    psp_created_at, signed_at, payload)
            ON CONFLICT ON CONSTRAINT psp_events_event_id_key DO NOTHING;
            RETURN FOUND;
        END $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_store_psp_event("
        "uuid, text, text, text, boolean, timestamptz, timestamptz, jsonb) FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION ramparts_store_psp_event("
        f"uuid, text, text, text, boolean, timestamptz, timestamptz, jsonb) TO {APP_ROLE}",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION ramparts_store_psp_event("
        "uuid, text, text, text, boolean, timestamptz, timestamptz, jsonb)"
    )
    op.execute("DROP TABLE psp_events")
