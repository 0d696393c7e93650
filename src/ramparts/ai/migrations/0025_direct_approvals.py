"""Approval requests a person makes directly, not through the assistant.

A request is a registered tool's call that a different person decides (`ai.approvals`). Until
now only the AI gateway made them, for a model's call in a conversation. A person may now ask
for such a call themselves (an app's route: a refund, a disbursement), with the exact arguments
they sent: `origin` says which (`assistant`: the gateway held a model's call, in its
conversation; `api`: a person asked directly, in no conversation), and the database keeps the
two consistent. Both are decided by the same service, with the same rules.

Revision ID: 0025_direct_approvals
Revises: 0024_jobs
"""

from alembic import op

revision = "0025_direct_approvals"
down_revision = "0024_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in [
        "ALTER TABLE ai_approvals ALTER COLUMN conversation_id DROP NOT NULL",
        "ALTER TABLE ai_approvals ADD COLUMN origin text NOT NULL DEFAULT 'assistant' "
        "CONSTRAINT ck_ai_approvals_origin CHECK (origin IN ('assistant', 'api'))",
        # A model's call belongs to its conversation; a person's own request to none.
        "ALTER TABLE ai_approvals ADD CONSTRAINT ck_ai_approvals_conversation CHECK "
        "((origin = 'assistant') = (conversation_id IS NOT NULL))",
        # The pending requests of a tool (what an app counts against what is still to be
        # moved: the refunds asked for and not decided).
        "CREATE INDEX ix_ai_approvals_pending ON ai_approvals (tenant_id, tool) "
        "WHERE status = 'pending'",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DELETE FROM ai_approvals WHERE origin = 'api'")
    op.execute("DROP INDEX ix_ai_approvals_pending")
    op.execute("ALTER TABLE ai_approvals DROP CONSTRAINT ck_ai_approvals_conversation")
    op.execute("ALTER TABLE ai_approvals DROP COLUMN origin")
    op.execute("ALTER TABLE ai_approvals ALTER COLUMN conversation_id SET NOT NULL")
