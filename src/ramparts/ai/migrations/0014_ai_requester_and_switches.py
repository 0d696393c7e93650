"""Approvals remember how their requester signed in (to re-authorize them at decision time),
and a tenant session may read which switches keep its assistant off, and whose they are.

Revision ID: 0014_ai_requester_and_switches
Revises: 0012_ai_hardening
"""

from alembic import op

from ramparts.config import APP_ROLE

revision = "0014_ai_requester_and_switches"
down_revision = "0012_ai_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        # The requester's authentication methods when they asked: with their roles as they are
        # at decision time, Cedar judges them again (a request made before `{}` is judged as
        # made without a second factor: stricter, never looser).
        "ALTER TABLE ai_approvals ADD COLUMN requested_amr text[] NOT NULL DEFAULT '{}'",
        # The engaged switches covering the caller's tenant ('' = the whole assistant) and who
        # holds each (operator or tenant), so a tenant admin is told the effective state. The
        # runtime role still has no privilege on the table itself.
        """
        CREATE FUNCTION ramparts_ai_switches() RETURNS TABLE (tool text, origin text)
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
            SELECT DISTINCT tool, origin FROM ai_killswitch
            WHERE engaged
              AND (scope_tenant IS NULL
                   OR scope_tenant = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        $$
        """,
        "REVOKE ALL ON FUNCTION ramparts_ai_switches() FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION ramparts_ai_switches() TO {APP_ROLE}",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION ramparts_ai_switches()")
    op.execute("ALTER TABLE ai_approvals DROP COLUMN requested_amr")
