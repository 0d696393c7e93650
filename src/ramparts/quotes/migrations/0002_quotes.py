"""Quotes and their line items, with a per-quote totals view.

The quote app's branch starts here (label `quotes`), on the runtime's tenants and users.

Revision ID: 0002_quotes
Revises:
Depends on: 0001_core
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0002_quotes"
down_revision = None
branch_labels = ("quotes",)
depends_on = "0001_core"
#: Before apps had branches this revision ran in the runtime's single chain, right after
#: 0001_core: a database stamped there later that has what it created had it run
#: (`ramparts.db.migrate` adopts it, without running it again).
single_chain_after = "0001_core"
single_chain_created = ("quotes", "quote_items", "quote_totals")


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE quotes (
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            buyer_id uuid NOT NULL,
            seller_id uuid,
            title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
            description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 10000),
            status text NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'submitted', 'accepted', 'rejected', 'cancelled')),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            sensitivity text NOT NULL DEFAULT 'internal'
                CHECK (sensitivity IN ('public', 'internal', 'confidential', 'restricted')),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_quotes PRIMARY KEY (id),
            CONSTRAINT uq_quotes_tenant_id_id UNIQUE (tenant_id, id),
            CONSTRAINT fk_quotes_buyer FOREIGN KEY (tenant_id, buyer_id)
                REFERENCES users (tenant_id, id),
            CONSTRAINT fk_quotes_seller FOREIGN KEY (tenant_id, seller_id)
                REFERENCES users (tenant_id, id)
        )
        """,
        *tenant_table_sql("quotes"),
        """
        CREATE TABLE quote_items (
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            tenant_id uuid NOT NULL,
            quote_id uuid NOT NULL,
            position integer NOT NULL CHECK (position BETWEEN 1 AND 1000),
            description text NOT NULL CHECK (char_length(description) BETWEEN 1 AND 1000),
            quantity integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000000),
            unit_price_minor bigint NOT NULL CHECK (unit_price_minor BETWEEN 0 AND 10000000000),
            CONSTRAINT pk_quote_items PRIMARY KEY (id),
            CONSTRAINT uq_quote_items_tenant_id_quote_id_position
                UNIQUE (tenant_id, quote_id, position),
            CONSTRAINT fk_quote_items_quote FOREIGN KEY (tenant_id, quote_id)
                REFERENCES quotes (tenant_id, id) ON DELETE CASCADE
        )
        """,
        *tenant_table_sql("quote_items"),
        # security_invoker: the view runs with the caller's rights, so RLS on the base tables
        # applies to whoever reads it (a plain view would run as its owner and leak).
        """
        CREATE VIEW quote_totals WITH (security_invoker = true) AS
        SELECT q.tenant_id, q.id AS quote_id, q.currency,
               COALESCE(sum(i.quantity * i.unit_price_minor), 0)::bigint AS total_minor,
               count(i.id)::integer AS item_count
        FROM quotes q LEFT JOIN quote_items i
             ON i.tenant_id = q.tenant_id AND i.quote_id = q.id
        GROUP BY q.tenant_id, q.id, q.currency
        """,
        f"GRANT SELECT ON quote_totals TO {APP_ROLE}",
    ]:
        op.execute(statement)
