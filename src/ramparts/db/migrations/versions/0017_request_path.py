"""The request path (placeholder, filled in by issue 13).

Revision ID: 0017_request_path
Revises: 0016_audit_sequencer
"""

revision = "0017_request_path"
down_revision = "0016_audit_sequencer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass
