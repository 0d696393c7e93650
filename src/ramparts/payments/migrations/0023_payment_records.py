"""Payments as the runtime keeps them: what an app asked the PSP to collect, every attempt to
pay it, and the refunds and disbursements drawn on it.

- `payments`: one PaymentIntent at the PSP (`psp_id`), for one resource of one app (`app`,
  `subject`: the app's own id, such as an order's), paid by `payer_id`. `status` is the
  PaymentIntent's, except that `succeeded` means *paid*: it comes with `confirmed_at`, which
  only the worker sets, after a verified `payment_intent.succeeded` event whose intent the PSP
  itself says has succeeded (until then a succeeded intent shows as `processing`). The
  database refuses a status leaving `succeeded` or `canceled`, a confirmation changing, and
  `succeeded` without one: out-of-order events and bugs cannot move money states backwards.
- `payment_attempts`: every attempt to pay (declines included) with the card's PSP
  fingerprint, never its number: what velocity limits count.
- `payment_refunds`, `payment_disbursements`: money going back to the payer or out to the
  payee, each one PSP object (`psp_id`, once known), requested by one person and approved by
  another (`ck_*_four_eyes`).

The runtime role may insert and read, and update only the columns that move (status,
`psp_id`, confirmation): who asked, for how much and for what is never rewritten.

Revision ID: 0023_payment_records
Revises: 0022_payments
"""

from alembic import op

from ramparts.config import APP_ROLE
from ramparts.db.rls import tenant_table_sql

revision = "0023_payment_records"
down_revision = "0022_payments"
branch_labels = None
depends_on = None

_PSP_ID = "char_length({0}) BETWEEN 1 AND 255 AND {0} ~ '^[A-Za-z0-9_]+$'"
_TERMINAL_PAYMENT = "('succeeded', 'canceled')"


def upgrade() -> None:
    for statement in [
        f"""
        CREATE TABLE payments (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            app text NOT NULL CHECK (app ~ '^[a-z][a-z0-9_]{{0,63}}$'),
            subject text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
            payer_id uuid,
            requested_by uuid NOT NULL,
            psp_id text UNIQUE CHECK ({_PSP_ID.format("psp_id")}),
            amount bigint NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
            currency text NOT NULL CHECK (currency ~ '^[a-z]{{3}}$'),
            status text NOT NULL CHECK (status IN (
                'requires_payment_method', 'requires_confirmation', 'requires_action',
                'processing', 'requires_capture', 'succeeded', 'canceled')),
            confirmed_at timestamptz,
            confirmed_by_event text CHECK (confirmed_by_event ~ '^evt_[A-Za-z0-9_]{{1,250}}$'),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_payments PRIMARY KEY (tenant_id, id),
            CONSTRAINT ck_payments_confirmed CHECK (
                (confirmed_at IS NULL) = (confirmed_by_event IS NULL)
                AND (confirmed_at IS NOT NULL) = (status = 'succeeded')
            )
        )
        """,
        "CREATE INDEX ix_payments_subject ON payments (tenant_id, app, subject)",
        "CREATE INDEX ix_payments_payer ON payments (tenant_id, payer_id, created_at)",
        *tenant_table_sql("payments", privileges="SELECT, INSERT"),
        f"GRANT UPDATE (psp_id, status, confirmed_at, confirmed_by_event, updated_at) "
        f"ON payments TO {APP_ROLE}",
        f"""
        CREATE FUNCTION payments_refuse_backwards() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.status IN {_TERMINAL_PAYMENT} AND NEW.status IS DISTINCT FROM OLD.status THEN
                RAISE EXCEPTION 'payment % is %: its status cannot change', OLD.id, OLD.status
                    USING ERRCODE = 'check_violation';
            END IF;
            IF OLD.confirmed_at IS NOT NULL AND (
                NEW.confirmed_at IS DISTINCT FROM OLD.confirmed_at
                OR NEW.confirmed_by_event IS DISTINCT FROM OLD.confirmed_by_event) THEN
                RAISE EXCEPTION 'payment % is confirmed: its confirmation cannot change', OLD.id
                    USING ERRCODE = 'check_violation';
            END IF;
            IF OLD.psp_id IS NOT NULL AND NEW.psp_id IS DISTINCT FROM OLD.psp_id THEN
                RAISE EXCEPTION 'payment % has its PSP object already', OLD.id
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER payments_refuse_backwards BEFORE UPDATE ON payments "
        "FOR EACH ROW EXECUTE FUNCTION payments_refuse_backwards()",
        # A refund or payout the PSP failed or canceled stays so (its ledger entry is
        # reversed once); its PSP object and amount never change.
        """
        CREATE FUNCTION outgoing_refuse_backwards() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF OLD.status IN ('failed', 'canceled') AND NEW.status IS DISTINCT FROM OLD.status
            THEN
                RAISE EXCEPTION '% % is %: its status cannot change', TG_TABLE_NAME, OLD.id,
                    OLD.status USING ERRCODE = 'check_violation';
            END IF;
            IF OLD.psp_id IS NOT NULL AND NEW.psp_id IS DISTINCT FROM OLD.psp_id THEN
                RAISE EXCEPTION '% % has its PSP object already', TG_TABLE_NAME, OLD.id
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$
        """,
        f"""
        CREATE TABLE payment_attempts (
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            payment_id uuid NOT NULL,
            payer_id uuid,
            card_fingerprint text CHECK ({_PSP_ID.format("card_fingerprint")}),
            amount bigint NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
            currency text NOT NULL CHECK (currency ~ '^[a-z]{{3}}$'),
            outcome text NOT NULL DEFAULT 'pending'
                CHECK (outcome IN ('pending', 'succeeded', 'requires_action', 'declined',
                                   'failed')),
            decline_code text CHECK (char_length(decline_code) <= 100),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_payment_attempts PRIMARY KEY (tenant_id, id),
            CONSTRAINT fk_payment_attempts_payment FOREIGN KEY (tenant_id, payment_id)
                REFERENCES payments (tenant_id, id) ON DELETE CASCADE
        )
        """,
        "CREATE INDEX ix_payment_attempts_card ON payment_attempts "
        "(tenant_id, card_fingerprint, created_at)",
        "CREATE INDEX ix_payment_attempts_payer ON payment_attempts "
        "(tenant_id, payer_id, created_at)",
        *tenant_table_sql("payment_attempts", privileges="SELECT, INSERT"),
        f"GRANT UPDATE (outcome, decline_code) ON payment_attempts TO {APP_ROLE}",
        *(
            statement
            for table, statuses in (
                ("payment_refunds", "'pending', 'succeeded', 'failed', 'canceled'"),
                ("payment_disbursements", "'pending', 'in_transit', 'paid', 'failed', 'canceled'"),
            )
            for statement in (
                f"""
                CREATE TABLE {table} (
                    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
                    id uuid NOT NULL DEFAULT gen_random_uuid(),
                    payment_id uuid NOT NULL,
                    psp_id text UNIQUE CHECK ({_PSP_ID.format("psp_id")}),
                    amount bigint NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
                    currency text NOT NULL CHECK (currency ~ '^[a-z]{{3}}$'),
                    status text NOT NULL DEFAULT 'pending' CHECK (status IN ({statuses})),
                    requested_by uuid NOT NULL,
                    approved_by uuid NOT NULL,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    CONSTRAINT pk_{table} PRIMARY KEY (tenant_id, id),
                    CONSTRAINT fk_{table}_payment FOREIGN KEY (tenant_id, payment_id)
                        REFERENCES payments (tenant_id, id) ON DELETE CASCADE,
                    CONSTRAINT ck_{table}_four_eyes CHECK (approved_by <> requested_by)
                )
                """,
                f"CREATE INDEX ix_{table}_payment ON {table} (tenant_id, payment_id)",
                *tenant_table_sql(table, privileges="SELECT, INSERT"),
                f"GRANT UPDATE (psp_id, status, updated_at) ON {table} TO {APP_ROLE}",
                f"CREATE TRIGGER {table}_refuse_backwards BEFORE UPDATE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION outgoing_refuse_backwards()",
            )
        ),
    ]:
        op.execute(statement)


def downgrade() -> None:
    for table in ("payment_disbursements", "payment_refunds", "payment_attempts", "payments"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP FUNCTION payments_refuse_backwards()")
    op.execute("DROP FUNCTION outgoing_refuse_backwards()")
