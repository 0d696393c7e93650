"""A quote carries the seller's proposal text, sent with the answer (`POST .../submit`).

The text is the vendor's own words: bounded here as in the API (10,000 characters), and
untrusted content to the assistant (`get_quote` never declares it trusted).

Revision ID: 0028_quote_proposal
Revises: 0013_quote_ownership
"""

from alembic import op

revision = "0028_quote_proposal"
down_revision = "0013_quote_ownership"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE quotes ADD COLUMN proposal text "
        "CONSTRAINT ck_quotes_proposal_length CHECK (char_length(proposal) BETWEEN 1 AND 10000)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE quotes DROP COLUMN proposal")
