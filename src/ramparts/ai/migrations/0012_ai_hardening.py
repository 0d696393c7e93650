"""AI gateway hardening (placeholder, filled by the DLP work).

Revision ID: 0012_ai_hardening
Revises: 0011_second_factor
"""

revision = "0012_ai_hardening"
down_revision = "0011_second_factor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
