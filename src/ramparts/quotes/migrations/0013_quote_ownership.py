"""Quote ownership inside a tenant: listings look up a person's own quotes by index.

A buyer lists the quotes they asked for, a seller those open to every seller or assigned to
them (`QuoteService.find(party=...)`); each is an index range, oldest first, instead of a scan
of the tenant's quotes.

Revision ID: 0013_quote_ownership
Revises: 0002_quotes
Depends on: 0012_ai_hardening
"""

from alembic import op

revision = "0013_quote_ownership"
down_revision = "0002_quotes"
branch_labels = None
# Where it ran in the runtime's single chain: a database stamped at exactly this revision then
# had the runtime at 0012_ai_hardening, and this says so.
depends_on = "0012_ai_hardening"
#: See 0002_quotes: in the single chain this ran right after 0012_ai_hardening.
single_chain_after = "0012_ai_hardening"
single_chain_created = ("ix_quotes_buyer", "ix_quotes_seller")


def upgrade() -> None:
    op.execute("CREATE INDEX ix_quotes_buyer ON quotes (tenant_id, buyer_id, created_at)")
    op.execute("CREATE INDEX ix_quotes_seller ON quotes (tenant_id, seller_id, created_at)")


def downgrade() -> None:
    op.execute("DROP INDEX ix_quotes_seller")
    op.execute("DROP INDEX ix_quotes_buyer")
