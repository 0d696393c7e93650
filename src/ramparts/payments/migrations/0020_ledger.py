"""The double-entry ledger: accounts, entries and their postings, append-only, balanced by the
database itself (control PAY-5).

A posting moves `amount` minor units (positive: debit, negative: credit) on one account; an
account is a name in one currency, so its key holds the currency and a posting's foreign key
to it makes a posting in another currency impossible. The database refuses, for every role
(the owner included: triggers, not grants):
- an entry whose postings do not sum to zero in each currency, or that has fewer than two
  (a deferred constraint trigger, checked at COMMIT, when every posting is in);
- a posting added to an entry of an earlier transaction (an entry is closed at its commit);
- any UPDATE, DELETE or TRUNCATE: a correction is a reversing entry, which must mirror the
  entry it reverses exactly, and an entry is reversed at most once.
Only a superuser who switches triggers off (session_replication_role) or an owner who drops
them gets past, and `ramparts ledger verify` checks the guards are there as well as every
entry and balance.

The tables have no foreign key to `tenants`: books are kept after a tenant is deleted (they
hold amounts and PSP ids, no personal data), as the audit trail is. `ledger_books` lists every
tenant that ever posted, with no row-level security, so the owner's verification finds every
book even when the owner is subject to row-level security.

Revision ID: 0020_ledger
Revises: 0019_role_format
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0020_ledger"
down_revision = "0019_role_format"
branch_labels = None
depends_on = None

TABLES = ("ledger_books", "ledger_accounts", "ledger_entries", "ledger_postings")


def upgrade() -> None:
    for statement in [
        """
        CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only: % on % refused; post a reversing entry',
                TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        """
        CREATE TABLE ledger_books (
            tenant uuid PRIMARY KEY,
            opened_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        f"REVOKE ALL ON ledger_books FROM PUBLIC, {APP_ROLE}",
        # `never_negative`: the account's balance on its normal side may not go below zero
        # (funds held for a payment cannot pay out more than came in); the service checks it
        # under a lock before posting, and verification reports any account below.
        """
        CREATE TABLE ledger_accounts (
            tenant_id uuid NOT NULL,
            name text NOT NULL
                CHECK (name ~ '^[a-z][a-z_]{0,62}(:[A-Za-z0-9_.-]{1,255})?$'),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            kind text NOT NULL
                CHECK (kind IN ('asset', 'liability', 'equity', 'revenue', 'expense')),
            never_negative boolean NOT NULL DEFAULT false,
            opened_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_ledger_accounts PRIMARY KEY (tenant_id, name, currency)
        )
        """,
        *tenant_table_sql("ledger_accounts", privileges="SELECT, INSERT"),
        # `reference` is the PSP object the movement is (a charge, a refund, a payout, a
        # balance transaction): one entry per kind and reference, so a retried or duplicated
        # posting finds the first instead of moving money twice. `xact` is the transaction
        # that posted it (set by a trigger, whatever the INSERT says).
        """
        CREATE TABLE ledger_entries (
            tenant_id uuid NOT NULL,
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            -- The order entries were posted in (within a transaction, too).
            seq bigint GENERATED ALWAYS AS IDENTITY,
            kind text NOT NULL CHECK (
                kind IN ('deposit', 'psp_fee', 'refund', 'disbursement', 'reversal')),
            reference text NOT NULL CHECK (length(reference) BETWEEN 1 AND 255),
            payment text CHECK (length(payment) BETWEEN 1 AND 255),
            reverses uuid,
            posted_at timestamptz NOT NULL DEFAULT now(),
            xact xid8 NOT NULL DEFAULT pg_current_xact_id(),
            CONSTRAINT pk_ledger_entries PRIMARY KEY (tenant_id, id),
            CONSTRAINT uq_ledger_entries_reference UNIQUE (tenant_id, kind, reference),
            CONSTRAINT uq_ledger_entries_reverses UNIQUE (tenant_id, reverses),
            CONSTRAINT fk_ledger_entries_reverses FOREIGN KEY (tenant_id, reverses)
                REFERENCES ledger_entries (tenant_id, id),
            CONSTRAINT ck_ledger_entries_reversal
                CHECK ((kind = 'reversal') = (reverses IS NOT NULL))
        )
        """,
        "CREATE INDEX ix_ledger_entries_posted_at ON ledger_entries (tenant_id, posted_at)",
        "CREATE INDEX ix_ledger_entries_payment ON ledger_entries (tenant_id, payment)",
        *tenant_table_sql("ledger_entries", privileges="SELECT, INSERT"),
        # Amounts are bounded well inside bigint, so no sum of an entry's postings overflows.
        """
        CREATE TABLE ledger_postings (
            tenant_id uuid NOT NULL,
            entry_id uuid NOT NULL,
            position smallint NOT NULL CHECK (position BETWEEN 1 AND 64),
            account text NOT NULL,
            currency text NOT NULL,
            amount bigint NOT NULL
                CHECK (amount <> 0 AND amount BETWEEN -1000000000000000 AND 1000000000000000),
            CONSTRAINT pk_ledger_postings PRIMARY KEY (tenant_id, entry_id, position),
            CONSTRAINT fk_ledger_postings_entry FOREIGN KEY (tenant_id, entry_id)
                REFERENCES ledger_entries (tenant_id, id),
            CONSTRAINT fk_ledger_postings_account FOREIGN KEY (tenant_id, account, currency)
                REFERENCES ledger_accounts (tenant_id, name, currency)
        )
        """,
        # Balances are sums over an account's postings: an index-only scan.
        """
        CREATE INDEX ix_ledger_postings_account
        ON ledger_postings (tenant_id, account, currency) INCLUDE (amount)
        """,
        *tenant_table_sql("ledger_postings", privileges="SELECT, INSERT"),
        # Stamps the posting transaction and opens the tenant's book. SECURITY DEFINER only
        # for the book (the runtime role has no privilege on it); the tenant is the row's,
        # which row-level security has checked is the caller's own.
        """
        CREATE FUNCTION ledger_stamp_entry() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
        BEGIN
            NEW.xact := pg_current_xact_id();
            NEW.posted_at := now();
            IF NOT EXISTS (SELECT 1 FROM ledger_books b WHERE b.tenant = NEW.tenant_id) THEN
                INSERT INTO ledger_books (tenant) VALUES (NEW.tenant_id) ON CONFLICT DO NOTHING;
            END IF;
            RETURN NEW;
        END $$
        """,
        "REVOKE ALL ON FUNCTION ledger_stamp_entry() FROM PUBLIC",
        """
        CREATE TRIGGER ledger_entries_stamp BEFORE INSERT ON ledger_entries
        FOR EACH ROW EXECUTE FUNCTION ledger_stamp_entry()
        """,
        # pg_current_xact_id() is the top-level transaction's id, also inside a savepoint.
        """
        CREATE FUNCTION ledger_posting_joins_open_entry() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT EXISTS (
                SELECT 1 FROM public.ledger_entries e
                WHERE e.tenant_id = NEW.tenant_id AND e.id = NEW.entry_id
                  AND e.xact = pg_current_xact_id()
            ) THEN
                RAISE EXCEPTION 'ledger entry % is closed or unknown: postings join only an '
                    'entry posted in the same transaction', NEW.entry_id
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_closed';
            END IF;
            RETURN NEW;
        END $$
        """,
        """
        CREATE TRIGGER ledger_postings_open_entry BEFORE INSERT ON ledger_postings
        FOR EACH ROW EXECUTE FUNCTION ledger_posting_joins_open_entry()
        """,
        # Checked at COMMIT (deferred), once per entry: since postings join only an entry of
        # their own transaction, every posting ever written is under one of these checks.
        """
        CREATE FUNCTION ledger_assert_entry(p_tenant uuid, p_entry uuid) RETURNS void
        LANGUAGE plpgsql AS $$
        DECLARE
            postings integer;
            off text;
            original_kind text;
            entry record;
        BEGIN
            SELECT e.tenant_id, e.id, e.reverses INTO entry FROM public.ledger_entries e
                WHERE e.tenant_id = p_tenant AND e.id = p_entry;
            SELECT count(*) INTO postings FROM public.ledger_postings p
                WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.id;
            IF postings < 2 THEN
                RAISE EXCEPTION 'ledger entry % has % posting(s); an entry needs two or more',
                    entry.id, postings
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_balanced';
            END IF;
            SELECT string_agg(s.currency || ' ' || s.total, ', ' ORDER BY s.currency) INTO off
            FROM (
                SELECT p.currency, sum(p.amount) AS total FROM public.ledger_postings p
                WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.id
                GROUP BY p.currency HAVING sum(p.amount) <> 0
            ) s;
            IF off IS NOT NULL THEN
                RAISE EXCEPTION 'ledger entry % does not balance: %', entry.id, off
                    USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_balanced';
            END IF;
            IF entry.reverses IS NOT NULL THEN
                SELECT e.kind INTO original_kind FROM public.ledger_entries e
                    WHERE e.tenant_id = entry.tenant_id AND e.id = entry.reverses;
                IF original_kind = 'reversal' OR EXISTS (
                    (SELECT p.account, p.currency, p.amount FROM public.ledger_postings p
                     WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.id
                     EXCEPT ALL
                     SELECT p.account, p.currency, -p.amount FROM public.ledger_postings p
                     WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.reverses)
                    UNION ALL
                    (SELECT p.account, p.currency, -p.amount FROM public.ledger_postings p
                     WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.reverses
                     EXCEPT ALL
                     SELECT p.account, p.currency, p.amount FROM public.ledger_postings p
                     WHERE p.tenant_id = entry.tenant_id AND p.entry_id = entry.id)
                ) THEN
                    RAISE EXCEPTION 'ledger entry % does not mirror the entry % it reverses',
                        entry.id, entry.reverses
                        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_reversal_mirrors';
                END IF;
            END IF;
        END $$
        """,
        """
        CREATE FUNCTION ledger_check_entry() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM ledger_assert_entry(NEW.tenant_id, NEW.id);
            RETURN NULL;
        END $$
        """,
        """
        CREATE FUNCTION ledger_check_posting() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM ledger_assert_entry(NEW.tenant_id, NEW.entry_id);
            RETURN NULL;
        END $$
        """,
        """
        CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_entries
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_entry()
        """,
        # The checks run as whoever posts: the runtime role may call the one they share.
        f"GRANT EXECUTE ON FUNCTION ledger_assert_entry(uuid, uuid) TO {APP_ROLE}",
        # And once per posting: `SET CONSTRAINTS ... IMMEDIATE` runs the entry's check early,
        # and a posting added after it would otherwise never be checked.
        """
        CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_postings
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_check_posting()
        """,
    ]:
        op.execute(statement)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.execute(f"DROP TABLE {table}")
    for function in (
        "ledger_check_posting()",
        "ledger_check_entry()",
        "ledger_assert_entry(uuid, uuid)",
        "ledger_posting_joins_open_entry()",
        "ledger_stamp_entry()",
        "ledger_refuse_change()",
    ):
        op.execute(f"DROP FUNCTION {function}")
