"""A conversation keeps what backs arguments, and an approval request where each sensitive
argument came from.

`ai_conversations.sealed_provenance` holds, sealed under the tenant's key like the masking's
placeholders (both hold personal data), the values that back a sensitive argument and where
each was seen: what the user typed in one message backs a call in the next. A conversation
stored before holds none: what was said before this revision backs nothing (stricter, never
looser). `ai_approvals.origins` shows an approver, per sensitive argument, whether it came
from the user's message, a tool's trusted field or an untrusted one (never the value); a
request made before shows none.

Revision ID: 0018_ai_provenance
Revises: 0017_request_path
"""

from alembic import op

revision = "0018_ai_provenance"
down_revision = "0017_request_path"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ai_conversations ADD COLUMN sealed_provenance sealed_field")
    op.execute("ALTER TABLE ai_approvals ADD COLUMN origins jsonb NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE ai_approvals DROP COLUMN origins")
    op.execute("ALTER TABLE ai_conversations DROP COLUMN sealed_provenance")
