"""The durable job queue (procrastinate) and the worker's hold on PSP events.

- procrastinate's own schema, read from the installed package (`SchemaManager.get_schema()`),
  never copied here: its tables, types, functions and triggers. A later procrastinate that
  changes its schema ships migration scripts, which a later revision applies.
- The runtime role gets exactly what deferring and the worker need: the functions procrastinate's
  queries call (every procrastinate function is revoked from PUBLIC first), reading and writing
  the jobs (DELETE only for the cleanup of old succeeded jobs), inserting job events (its
  triggers do), the workers' heartbeats and the periodic defers.
- `job_failures`: the error class of each job's last failed attempt (never its message), for
  `ramparts dlq list`.
- `psp_events.state` widens to `pending` → `processed` | `ignored`, with `processed_at`; the
  runtime role may update those two columns only, and a trigger refuses any change to a settled
  event (for every role): an event is processed once.
- `ramparts_stale_psp_events`: the sweep's one cross-tenant read, ids only: pending events
  older than a bound that no job holds (the worker crashed between storing and deferring).

Revision ID: 0024_jobs
Revises: 0023_payment_records
"""

import re

from alembic import op
from procrastinate import sql
from procrastinate.schema import SchemaManager

from ramparts.config import APP_ROLE

revision = "0024_jobs"
down_revision = "0023_payment_records"
branch_labels = None
depends_on = None

#: The procrastinate functions its queries call (deferring, fetching, finishing, retrying,
#: cancelling, heartbeats), read from the installed package's queries.
CALLED_FUNCTIONS = sorted(
    {
        name
        for query in sql.queries.values()
        for name in re.findall(r"\b(procrastinate_\w+)\(", query)
    }
)
#: The job lock of a PSP event's job (`ramparts.payments.jobs.event_lock`): the sweep looks
#: for it.
EVENT_LOCK_PREFIX = "psp_event:"

_FOR_EACH_FUNCTION = """
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.proname LIKE 'procrastinate\\_%'
          AND p.pronamespace = to_regnamespace(current_schema())
        {condition}
    LOOP
        EXECUTE format('{statement}', f);
    END LOOP;
END $$
"""


def _each_function(statement: str, condition: str = "") -> str:
    return _FOR_EACH_FUNCTION.format(statement=statement, condition=condition)


def upgrade() -> None:
    op.execute(SchemaManager.get_schema())
    called = ", ".join(f"'{name}'" for name in CALLED_FUNCTIONS)
    for statement in [
        _each_function("REVOKE ALL ON FUNCTION %s FROM PUBLIC"),
        _each_function(
            f"GRANT EXECUTE ON FUNCTION %s TO {APP_ROLE}", f"AND p.proname IN ({called})"
        ),
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON procrastinate_jobs TO {APP_ROLE}",
        f"GRANT SELECT, INSERT ON procrastinate_events TO {APP_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON procrastinate_periodic_defers TO {APP_ROLE}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON procrastinate_workers TO {APP_ROLE}",
        "GRANT USAGE ON SEQUENCE procrastinate_jobs_id_seq, procrastinate_events_id_seq, "
        f"procrastinate_periodic_defers_id_seq TO {APP_ROLE}",
        # The sweep finds a PSP event's jobs by their lock, in every status.
        "CREATE INDEX ramparts_jobs_lock ON procrastinate_jobs (lock) WHERE lock IS NOT NULL",
        """
        CREATE TABLE job_failures (
            job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
            error text NOT NULL CHECK (error ~ '^[A-Za-z_][A-Za-z0-9_.]{0,254}$'),
            attempts integer NOT NULL CHECK (attempts >= 1),
            failed_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        f"GRANT SELECT, INSERT, UPDATE ON job_failures TO {APP_ROLE}",
        "ALTER TABLE psp_events DROP CONSTRAINT psp_events_state_check",
        "ALTER TABLE psp_events ADD CONSTRAINT psp_events_state_check "
        "CHECK (state IN ('pending', 'processed', 'ignored'))",
        "ALTER TABLE psp_events ADD COLUMN processed_at timestamptz",
        "ALTER TABLE psp_events ADD CONSTRAINT ck_psp_events_processed "
        "CHECK ((state = 'pending') = (processed_at IS NULL))",
        f"GRANT UPDATE (state, processed_at) ON psp_events TO {APP_ROLE}",
        """
        CREATE FUNCTION psp_events_settle_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.state <> 'pending' THEN
                RAISE EXCEPTION 'PSP event % is %: it cannot change', OLD.event_id, OLD.state
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER psp_events_settle_once BEFORE UPDATE ON psp_events "
        "FOR EACH ROW EXECUTE FUNCTION psp_events_settle_once()",
        # Each tenant's pending events older than `older_than` seconds that no job holds
        # (waiting, running, or dead-lettered: the DLQ is replayed by an operator, never by
        # the sweep), oldest first, at most `max_events` in all. psp_events forces row-level
        # security, owner included, so each tenant's rows are read as that tenant; the SET
        # clause puts the caller's setting back on return. (The lock prefix is a constant.)
        f"""
        CREATE FUNCTION ramparts_stale_psp_events(older_than double precision, max_events integer)
        RETURNS TABLE (tenant_id uuid, event_id text)
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, public SET app.tenant_id = '' AS $$
        DECLARE
            tenant uuid;
            found integer := 0;
            taken integer;
        BEGIN
            IF max_events IS NULL OR max_events < 1 OR older_than IS NULL THEN
                RAISE EXCEPTION 'ramparts_stale_psp_events takes a bound and a positive count';
            END IF;
            FOR tenant IN SELECT t.id FROM tenants t ORDER BY t.id LOOP
                EXIT WHEN found >= max_events;
                PERFORM set_config('app.tenant_id', tenant::text, true);
                RETURN QUERY
                    SELECT e.tenant_id, e.event_id FROM psp_events e
                    WHERE e.tenant_id = tenant AND e.state = 'pending'
                      AND e.received_at < now() - make_interval(secs => older_than)
                      AND NOT EXISTS (
                          SELECT FROM procrastinate_jobs j
                          WHERE j.lock = '{EVENT_LOCK_PREFIX}' || e.event_id
                            AND j.status IN ('todo', 'doing', 'failed'))
                    ORDER BY e.received_at
                    LIMIT max_events - found;
                GET DIAGNOSTICS taken = ROW_COUNT;
                found := found + taken;
            END LOOP;
        END $$
        """,  # noqa: S608  # nosec B608 # the lock prefix, a constant
        "REVOKE ALL ON FUNCTION ramparts_stale_psp_events(double precision, integer) FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION ramparts_stale_psp_events(double precision, integer) "
        f"TO {APP_ROLE}",
    ]:
        op.execute(statement)


def downgrade() -> None:
    for statement in [
        "DROP FUNCTION ramparts_stale_psp_events(double precision, integer)",
        "DROP TRIGGER psp_events_settle_once ON psp_events",
        "DROP FUNCTION psp_events_settle_once()",
        f"REVOKE UPDATE (state, processed_at) ON psp_events FROM {APP_ROLE}",
        # Settled events wait again: processing them twice changes nothing (a payment is
        # confirmed once, a ledger entry posted once by its reference).
        "UPDATE psp_events SET state = 'pending' WHERE state <> 'pending'",
        "ALTER TABLE psp_events DROP CONSTRAINT ck_psp_events_processed",
        "ALTER TABLE psp_events DROP COLUMN processed_at",
        "ALTER TABLE psp_events DROP CONSTRAINT psp_events_state_check",
        "ALTER TABLE psp_events ADD CONSTRAINT psp_events_state_check CHECK (state IN ('pending'))",
        "DROP TABLE job_failures",
        # CASCADE: the functions returning a job row go with the table.
        "DROP TABLE procrastinate_events, procrastinate_periodic_defers, procrastinate_jobs, "
        "procrastinate_workers CASCADE",
        _each_function("DROP FUNCTION %s"),
        """
        DO $$
        DECLARE t regtype;
        BEGIN
            FOR t IN SELECT y.oid::regtype FROM pg_type y
                WHERE y.typname LIKE 'procrastinate\\_%' AND y.typtype IN ('e', 'c')
                  AND y.typnamespace = to_regnamespace(current_schema())
            LOOP
                EXECUTE format('DROP TYPE %s', t);
            END LOOP;
        END $$
        """,
    ]:
        op.execute(statement)
