"""Tenant walls and the four-eyes rule below Cedar: row-level security hides another tenant's
claims from the runtime role whatever the query, the sealed column refuses plaintext, and the
table refuses an approval of one's own claim."""

from __future__ import annotations

import pytest
from ramparts.crypto.sealing import Sealed
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError

from ramparts_expenses.models import EXPENSES
from ramparts_expenses.services import ExpenseService
from world import Script, World, call

pytestmark = pytest.mark.anyio


async def test_another_tenants_claim_is_invisible(world: World) -> None:
    ours, theirs = await world.tenant(), await world.tenant()
    their_claim = await world.claim(theirs, "employee")
    async with world.database.tenant_session(ours.id) as session:
        # The service names the tenant; RLS hides the row even from a query that does not.
        assert await ExpenseService(session, world.fields).get(theirs.id, their_claim.id) is None
        unfiltered = select(func.count()).select_from(EXPENSES)
        assert await session.scalar(unfiltered) == 0
        moved = await session.execute(
            text("UPDATE expenses SET status = 'approved' WHERE id = :id"), {"id": their_claim.id}
        )
        assert moved.rowcount == 0  # type: ignore[attr-defined]
    # Through the assistant: Finance of our tenant reads and pays nothing of theirs.
    model = Script(
        call("read_receipt", expense_id=str(their_claim.id)),
        call("approve_expense", expense_id=str(their_claim.id)),
    )
    answer = await world.gateway(model).converse(
        ours.people["manager"], f"Read and approve claim {their_claim.id}", None
    )
    assert [(a.status.value, a.reason) for a in answer.actions] == [
        ("refused", "no such expense"),
        ("refused", "no such expense"),
    ]
    stored, _ = await world.read(theirs, their_claim.id)
    assert stored.status.value == "submitted"


async def test_the_table_refuses_plaintext_accounts_and_ones_own_approval(world: World) -> None:
    tenant = await world.tenant()
    claim = await world.claim(tenant, "manager")
    async with world.database.tenant_session(tenant.id) as session:
        plain = b"DE89370400440532013000".ljust(40, b" ")
        with pytest.raises(DBAPIError, match="sealed_field"):
            async with session.begin_nested():
                await session.execute(
                    text(
                        "INSERT INTO expenses (tenant_id, employee_id, description, "
                        "amount_minor, currency, sealed_payee_iban) "
                        "VALUES (:tenant, :employee, 'x', 1, 'EUR', :plain)"
                    ),
                    {"tenant": tenant.id, "employee": claim.employee_id, "plain": plain},
                )
        # And the column's type refuses it in Python, before it is sent.
        with pytest.raises(StatementError, match="only values sealed by SealedFields"):
            await session.execute(
                EXPENSES.update()
                .where(EXPENSES.c.id == claim.id)
                .values(sealed_payee_iban=b"DE89370400440532013000")
            )
        assert isinstance(await session.scalar(select(EXPENSES.c.sealed_payee_iban)), Sealed)
        manager = tenant.people["manager"].user_id
        assert manager is not None
        with pytest.raises(IntegrityError, match="ck_expenses_four_eyes"):
            async with session.begin_nested():
                await ExpenseService(session, world.fields).approve(claim, manager)


@pytest.mark.parametrize(
    "change",
    [
        "sealed_payee_iban = sealed_payee_iban",  # the account stays as the employee gave it
        "employee_id = employee_id",  # so does whose claim it is
        "amount_minor = amount_minor + 1",  # and how much
    ],
)
async def test_the_runtime_role_changes_only_a_claims_progress(world: World, change: str) -> None:
    tenant = await world.tenant()
    claim = await world.claim(tenant, "employee")
    async with world.database.tenant_session(tenant.id) as session:
        with pytest.raises(DBAPIError, match="permission denied"):
            async with session.begin_nested():
                await session.execute(
                    text(f"UPDATE expenses SET {change} WHERE id = :id"), {"id": claim.id}
                )


async def test_a_claim_only_moves_forward(world: World) -> None:
    tenant = await world.tenant()
    claim = await world.claim(tenant, "employee")
    manager = tenant.people["manager"].user_id
    async with world.database.tenant_session(tenant.id) as session:
        with pytest.raises(DBAPIError, match="cannot go from submitted to reimbursed"):
            async with session.begin_nested():
                await session.execute(
                    text(
                        "UPDATE expenses SET status = 'reimbursed', approved_by = :who, "
                        "reimbursed_by = :who WHERE id = :id"
                    ),
                    {"who": manager, "id": claim.id},
                )
        approved = await ExpenseService(session, world.fields).approve(claim, manager)
        assert approved.status.value == "approved"
        with pytest.raises(DBAPIError, match="cannot go from approved to submitted"):
            async with session.begin_nested():
                await session.execute(
                    text(
                        "UPDATE expenses SET status = 'submitted', approved_by = NULL, "
                        "approved_at = NULL WHERE id = :id"
                    ),
                    {"id": claim.id},
                )
