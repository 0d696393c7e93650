"""Second-factor failures counted apart from password failures: a correct password resets only
its own count, so it no longer buys fresh guesses at the second factor (lockout.py).

Revision ID: 0011_second_factor
Revises: 0010_ai
"""

from alembic import op

revision = "0011_second_factor"
down_revision = "0010_ai"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE users "
        "ADD COLUMN second_factor_failures integer NOT NULL DEFAULT 0 "
        "CHECK (second_factor_failures >= 0), "
        "ADD COLUMN second_factor_locked_until timestamptz"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE users DROP COLUMN second_factor_locked_until, "
        "DROP COLUMN second_factor_failures"
    )
