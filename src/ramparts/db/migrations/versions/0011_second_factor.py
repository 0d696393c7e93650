"""Second-factor failures counted apart from password failures (placeholder).

Revision ID: 0011_second_factor
Revises: 0010_ai
"""

revision = "0011_second_factor"
down_revision = "0010_ai"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
