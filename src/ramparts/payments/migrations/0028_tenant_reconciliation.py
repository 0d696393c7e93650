"""A tenant's view of the reconciliation runs (control PAY-5), for the people who keep its books.

`reconciliation_runs` stays owner-only (migration 0026): a run covers the PSP account every
tenant shares, so its counts and items describe several tenants. This function is the one
way the runtime role reads it: every run, newest first, with only the drift items that name
the current tenant (`app.tenant_id`, as row-level security reads it), each stripped of what
could name another tenant (its `tenants` list becomes the caller's own; its ledger entries
only those in the caller's book; an item that names several tenants keeps neither side's
amounts, which may be another tenant's money). It returns no run-wide count: how much the PSP
moved for everyone is no tenant's business. No tenant set: no rows.

SECURITY DEFINER (the owner's rights, to read the table) with a pinned `search_path`, so no
object of the caller's can stand in for ours; EXECUTE revoked from PUBLIC and granted to the
runtime role alone.

Revision ID: 0028_tenant_reconciliation
Revises: 0027_browser_sessions
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import CURRENT_TENANT

revision = "0028_tenant_reconciliation"
down_revision = "0027_browser_sessions"
branch_labels = None
depends_on = None

FUNCTION = "tenant_reconciliation_runs(integer)"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE FUNCTION tenant_reconciliation_runs(p_limit integer)
        RETURNS TABLE (
            id uuid, day date, started_at timestamptz, finished_at timestamptz, drift jsonb
        )
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            WITH me AS (SELECT {CURRENT_TENANT} AS tenant)
            SELECT r.id, r.day, r.started_at, r.finished_at, coalesce((
                SELECT jsonb_agg(
                    (CASE WHEN jsonb_array_length(coalesce(item -> 'tenants', '[]'::jsonb)) > 1
                          THEN item - 'psp' - 'ledger' ELSE item END)
                    || jsonb_build_object(
                        'tenants', jsonb_build_array(me.tenant::text),
                        'entries', coalesce((
                            SELECT jsonb_agg(entry) FROM jsonb_array_elements_text(
                                coalesce(item -> 'entries', '[]'::jsonb)) AS entry
                            WHERE EXISTS (
                                SELECT 1 FROM public.ledger_entries e
                                WHERE e.tenant_id = me.tenant AND e.id::text = entry)
                        ), '[]'::jsonb))
                    ORDER BY ordinality)
                FROM jsonb_array_elements(r.drift) WITH ORDINALITY AS items(item, ordinality)
                WHERE coalesce(item -> 'tenants', '[]'::jsonb) ? me.tenant::text
            ), '[]'::jsonb)
            FROM public.reconciliation_runs r, me
            WHERE me.tenant IS NOT NULL
            ORDER BY r.started_at DESC, r.id DESC
            LIMIT least(greatest(p_limit, 1), 100)
        $$
        """  # noqa: S608  # nosec B608 # the one interpolation is a constant (CURRENT_TENANT)
    )
    op.execute(f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {FUNCTION}")
