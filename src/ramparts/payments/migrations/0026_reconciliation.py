"""Reconciliation runs (control PAY-5): each daily comparison of the ledger with the PSP, kept.

One row per run: the UTC day compared, when it ran, what was read and matched, `clean` or
`drift`, and the drift items as a JSON array (`ramparts.payments.reconcile.Drift.as_json`:
drift type, PSP ids, amounts, currencies, statuses, ledger entry ids, tenant ids; never a
name, an e-mail or a card detail). A day may be run again (after a fix): every run is kept.

Owner-only, like `ledger_books`: a run covers the PSP account, which every tenant shares, so
its items name several tenants and no tenant may read it; the runtime role has no privilege on
it at all (the CLI and the daily job run as the owner, as `ramparts ledger verify` does). There
is no `tenant_id` column and no row-level security for the same reason. A stored run is
evidence: rows are never changed or deleted (a trigger, for every role).

Revision ID: 0026_reconciliation
Revises: 0025_direct_approvals
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0026_reconciliation"
down_revision = "0025_direct_approvals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE reconciliation_runs (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            day date NOT NULL,
            started_at timestamptz NOT NULL,
            finished_at timestamptz NOT NULL DEFAULT now(),
            status text NOT NULL CHECK (status IN ('clean', 'drift')),
            psp_transactions integer NOT NULL CHECK (psp_transactions >= 0),
            psp_objects integer NOT NULL CHECK (psp_objects >= 0),
            ledger_entries integer NOT NULL CHECK (ledger_entries >= 0),
            matched integer NOT NULL CHECK (matched >= 0),
            drift_count integer NOT NULL CHECK (drift_count >= 0),
            drift jsonb NOT NULL CHECK (
                jsonb_typeof(drift) = 'array' AND jsonb_array_length(drift) = drift_count),
            CONSTRAINT ck_reconciliation_runs_status CHECK ((status = 'clean') = (drift_count = 0)),
            CONSTRAINT ck_reconciliation_runs_times CHECK (finished_at >= started_at)
        )
        """,
        "CREATE INDEX ix_reconciliation_runs_day ON reconciliation_runs (day, started_at)",
        f"REVOKE ALL ON reconciliation_runs FROM PUBLIC, {APP_ROLE}",
        """
        CREATE FUNCTION reconciliation_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'reconciliation runs are kept as they ran: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        "CREATE TRIGGER reconciliation_runs_append_only BEFORE UPDATE OR DELETE "
        "ON reconciliation_runs FOR EACH ROW EXECUTE FUNCTION reconciliation_refuse_change()",
        "CREATE TRIGGER reconciliation_runs_no_truncate BEFORE TRUNCATE "
        "ON reconciliation_runs FOR EACH STATEMENT EXECUTE FUNCTION reconciliation_refuse_change()",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE reconciliation_runs")
    op.execute("DROP FUNCTION reconciliation_refuse_change()")
