"""What /metrics reports from the database, in one call: `ramparts_operations_gauges()`.

One row, across every tenant: approvals pending (and the oldest one's age), dead-lettered
jobs, the latest reconciliation run's drift, the kill-switches engaged (global, tenants,
tools) and the audit queue's lag (its oldest event not yet in a hash chain). Counts and ages
only: nothing in it names a tenant, a person or a payment.

SECURITY DEFINER (the owner's rights: the runtime role reads none of `ai_killswitch`,
`reconciliation_runs` or `audit_queue`, and `ai_approvals` only as one tenant) with a pinned
`search_path`; EXECUTE revoked from PUBLIC and granted to the runtime role alone. Pending
approvals are counted tenant by tenant under row-level security, which the table forces on
its owner too, as `ramparts_stale_psp_events` reads its events; the SET clause puts the
caller's `app.tenant_id` back on return. Each count reads the pending rows only (the partial
index `ix_ai_approvals_pending` of migration 0025).

Revision ID: 0030_operations_gauges
Revises: 0029_psp_event_race
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0030_operations_gauges"
down_revision = "0029_psp_event_race"
branch_labels = None
depends_on = None

FUNCTION = "ramparts_operations_gauges()"


def upgrade() -> None:
    for statement in [
        """
        CREATE FUNCTION ramparts_operations_gauges()
        RETURNS TABLE (
            approvals_pending bigint,
            approval_oldest_seconds double precision,
            dead_letters bigint,
            reconciliation_drift integer,
            reconciliation_finished double precision,
            killswitch_global boolean,
            killswitch_tenants bigint,
            killswitch_tools bigint,
            audit_lag_seconds double precision
        )
        LANGUAGE plpgsql VOLATILE SECURITY DEFINER
        SET search_path = pg_catalog, public SET app.tenant_id = '' AS $$
        DECLARE
            tenant uuid;
            pending bigint;
            oldest timestamptz;
        BEGIN
            approvals_pending := 0;
            FOR tenant IN SELECT t.id FROM tenants t LOOP
                PERFORM set_config('app.tenant_id', tenant::text, true);
                SELECT count(*), min(a.created_at) INTO pending, oldest FROM ai_approvals a
                WHERE a.tenant_id = tenant AND a.status = 'pending' AND a.expires_at > now();
                approvals_pending := approvals_pending + pending;
                approval_oldest_seconds := greatest(
                    approval_oldest_seconds,
                    extract(epoch FROM clock_timestamp() - oldest)::float8);
            END LOOP;
            SELECT count(*) INTO dead_letters FROM procrastinate_jobs j WHERE j.status = 'failed';
            SELECT r.drift_count, extract(epoch FROM r.finished_at)::float8
                INTO reconciliation_drift, reconciliation_finished
                FROM reconciliation_runs r ORDER BY r.finished_at DESC LIMIT 1;
            SELECT coalesce(bool_or(k.scope_tenant IS NULL AND k.tool = ''), false),
                   count(DISTINCT k.scope_tenant) FILTER (
                       WHERE k.scope_tenant IS NOT NULL AND k.tool = ''),
                   count(DISTINCT (k.scope_tenant, k.tool)) FILTER (WHERE k.tool <> '')
                INTO killswitch_global, killswitch_tenants, killswitch_tools
                FROM ai_killswitch k WHERE k.engaged;
            audit_lag_seconds := coalesce(
                extract(epoch FROM clock_timestamp() - audit_queue_oldest())::float8, 0);
            RETURN NEXT;
        END $$
        """,
        f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO {APP_ROLE}",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {FUNCTION}")
