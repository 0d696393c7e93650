"""Expense claims, each with its payee's IBAN sealed under the tenant's data key.

The expenses app's branch starts here (label `expenses`), on the runtime's tenants, users and
the `sealed_field` domain (0009), which refuses anything that is not a sealed field: an IBAN
written in plaintext, by a bug or by hand, never reaches the table.

Revision ID: expenses_0001_claims
Revises:
Depends on: 0009_sealed_fields
"""

from alembic import op
from ramparts.db.rls import tenant_table_sql

revision = "expenses_0001_claims"
down_revision = None
branch_labels = ("expenses",)
depends_on = "0009_sealed_fields"


def upgrade() -> None:
    for statement in [
        """
        CREATE TABLE expenses (
            id uuid NOT NULL DEFAULT gen_random_uuid(),
            tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
            employee_id uuid NOT NULL,
            description text NOT NULL CHECK (char_length(description) BETWEEN 1 AND 500),
            receipt_text text NOT NULL DEFAULT '' CHECK (char_length(receipt_text) <= 20000),
            amount_minor bigint NOT NULL CHECK (amount_minor BETWEEN 1 AND 100000000),
            currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
            sealed_payee_iban sealed_field NOT NULL,
            status text NOT NULL DEFAULT 'submitted'
                CHECK (status IN ('submitted', 'approved', 'reimbursed')),
            sensitivity text NOT NULL DEFAULT 'internal'
                CHECK (sensitivity IN ('public', 'internal', 'confidential', 'restricted')),
            approved_by uuid,
            approved_at timestamptz,
            reimbursed_by uuid,
            reimbursed_at timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_expenses PRIMARY KEY (id),
            CONSTRAINT uq_expenses_tenant_id_id UNIQUE (tenant_id, id),
            CONSTRAINT fk_expenses_employee FOREIGN KEY (tenant_id, employee_id)
                REFERENCES users (tenant_id, id),
            CONSTRAINT fk_expenses_approver FOREIGN KEY (tenant_id, approved_by)
                REFERENCES users (tenant_id, id),
            CONSTRAINT fk_expenses_reimburser FOREIGN KEY (tenant_id, reimbursed_by)
                REFERENCES users (tenant_id, id),
            -- Cedar refuses one's own claim; the table refuses it too, whatever the code does.
            CONSTRAINT ck_expenses_four_eyes CHECK (
                approved_by IS DISTINCT FROM employee_id
                AND reimbursed_by IS DISTINCT FROM employee_id),
            -- Each status says who moved it there: approved has an approver, reimbursed both.
            CONSTRAINT ck_expenses_status_trail CHECK (
                (status = 'submitted' AND approved_by IS NULL AND reimbursed_by IS NULL)
                OR (status = 'approved' AND approved_by IS NOT NULL AND reimbursed_by IS NULL)
                OR (status = 'reimbursed' AND approved_by IS NOT NULL
                    AND reimbursed_by IS NOT NULL))
        )
        """,
        # The runtime role never deletes a claim (the record a reimbursement rests on), and
        # updates only what moves it along: what was claimed, by whom, for how much and to
        # which account stays as written (key rotation runs as the owner).
        *tenant_table_sql(
            "expenses",
            privileges="SELECT, INSERT, "
            "UPDATE (status, approved_by, approved_at, reimbursed_by, reimbursed_at)",
        ),
        # A claim only moves forward, each step once: submitted → approved → reimbursed.
        """
        CREATE FUNCTION expenses_move_forward() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NOT ((OLD.status = 'submitted' AND NEW.status = 'approved')
                    OR (OLD.status = 'approved' AND NEW.status = 'reimbursed'))
               OR NEW.approved_by IS DISTINCT FROM COALESCE(OLD.approved_by, NEW.approved_by)
            THEN
                RAISE EXCEPTION 'expense % cannot go from % to %', OLD.id, OLD.status,
                    NEW.status USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$
        """,
        """
        CREATE TRIGGER expenses_move_forward BEFORE UPDATE OF status, approved_by,
            approved_at, reimbursed_by, reimbursed_at ON expenses
            FOR EACH ROW EXECUTE FUNCTION expenses_move_forward()
        """,
        # An employee lists their own claims, approvers and Finance by status: index ranges.
        "CREATE INDEX ix_expenses_employee ON expenses (tenant_id, employee_id, created_at)",
        "CREATE INDEX ix_expenses_status ON expenses (tenant_id, status, created_at)",
    ]:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE expenses")
    op.execute("DROP FUNCTION expenses_move_forward()")
