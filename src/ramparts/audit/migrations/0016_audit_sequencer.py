"""The audit sequencer (placeholder, filled in by issue 13).

Revision ID: 0016_audit_sequencer
Revises: 0015_ai_masked_calls
"""

revision = "0016_audit_sequencer"
down_revision = "0015_ai_masked_calls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass
