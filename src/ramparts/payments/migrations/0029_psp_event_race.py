"""Simultaneous copies of one PSP event are stored once, and none of them fails.

`ramparts_store_psp_event` (migration 0021) named one arbiter for its `ON CONFLICT`, the unique
`event_id`; the table's primary key `(tenant_id, event_id)` is a second unique index. When two
copies of an event (the PSP's retry, two API processes each handed one) both pass the conflict
check before either has written its index entries, the second one waits on the first's primary
key entry, and a conflict on an index that is not an arbiter is an error, not DO NOTHING: the
copy was answered 500 and the PSP delivered it again. With no conflict target, every unique
index is an arbiter: the late copy does nothing and is answered as the duplicate it is.

Revision ID: 0029_psp_event_race
Revises: 0028_tenant_reconciliation
"""

from alembic import op

revision = "0029_psp_event_race"
down_revision = "0028_tenant_reconciliation"
branch_labels = None
depends_on = None


# CREATE OR REPLACE keeps the function's owner and grants (EXECUTE: the runtime role only).
STORE = """
    CREATE OR REPLACE FUNCTION ramparts_store_psp_event(
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
        ON CONFLICT DO NOTHING;
        RETURN FOUND;
    END $$
"""


def upgrade() -> None:
    op.execute(STORE)


def downgrade() -> None:
    op.execute(
        STORE.replace("ON CONFLICT DO", "ON CONFLICT ON CONSTRAINT psp_events_event_id_key DO")
    )
