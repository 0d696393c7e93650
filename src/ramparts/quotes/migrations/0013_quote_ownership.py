"""Quote ownership inside a tenant (placeholder, filled by the ownership work).

Revision ID: 0013_quote_ownership
Revises: 0012_ai_hardening
"""

revision = "0013_quote_ownership"
down_revision = "0012_ai_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
