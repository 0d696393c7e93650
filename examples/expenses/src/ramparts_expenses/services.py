"""Expense claims. Callers pass a tenant session; RLS confines every statement to it, and every
query also names the tenant, so a forgotten filter and a missing policy are each caught by
the other.

A claim has one party, its `employee`: who spent the money and is paid back. Cedar decides
who may do what with it (`policy/policies/10-roles.cedar`); the service keeps the order of
things (submitted, then approved, then reimbursed) and the payee's account sealed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ramparts.crypto.sealing import SealedFields
from ramparts.identity.auth import Principal
from ramparts.policy.engine import Target
from sqlalchemy import ColumnElement, func, insert, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts_expenses.actions import ExpenseAction
from ramparts_expenses.iban import normal_iban
from ramparts_expenses.models import EXPENSES, PAYEE_IBAN, ExpenseStatus, Sensitivity
from ramparts_expenses.roles import READS_EVERY_EXPENSE

__all__ = [
    "Expense",
    "ExpenseService",
    "NewExpense",
    "PayeeMismatchError",
    "WrongStatusError",
    "expense_target",
    "new_expense_target",
    "visible_to",
]

ENTITY = ExpenseAction.EXPENSE_READ.entity_type
#: Everything of a claim but its sealed account, which only `payee_iban` opens.
_SHOWN = [c for c in EXPENSES.c if c.name != "sealed_payee_iban"]


class WrongStatusError(Exception):
    """The claim is not in a status that allows this."""


class PayeeMismatchError(Exception):
    """A reimbursement named an account that is not the one the employee gave."""


@dataclass(frozen=True, slots=True)
class Expense:
    """A claim as read: plain data, its account still sealed."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    employee_id: uuid.UUID
    description: str
    receipt_text: str
    amount_minor: int
    currency: str
    status: ExpenseStatus
    sensitivity: Sensitivity
    approved_by: uuid.UUID | None


@dataclass(frozen=True)
class NewExpense:
    description: str
    amount_minor: int
    currency: str
    payee_iban: str  # as written; checked and sealed by `submit`
    receipt_text: str = ""
    sensitivity: Sensitivity = Sensitivity.INTERNAL


def expense_target(expense: Expense) -> Target:
    """The claim as Cedar sees it: its tenant, sensitivity and employee."""
    return Target(
        ENTITY,
        str(expense.id),
        str(expense.tenant_id),
        expense.sensitivity.value,
        parties=(("employee", str(expense.employee_id)),),
    )


def new_expense_target(principal: Principal, sensitivity: Sensitivity) -> Target:
    """A claim about to be submitted: the caller's own (only a person claims)."""
    parties = () if principal.user_id is None else (("employee", str(principal.user_id)),)
    return Target(ENTITY, "new", str(principal.tenant_id), sensitivity.value, parties=parties)


def visible_to(principal: Principal) -> uuid.UUID | None:
    """Whose claims a listing looks at: the caller's own (an index range), or None when a
    role of theirs reads every claim of the tenant. Cedar still judges each one."""
    if READS_EVERY_EXPENSE & set(principal.roles):
        return None
    # A service is nobody's employee (Cedar refuses it the listing first): the nil id, which
    # no user has, matches no claim.
    return principal.user_id or uuid.UUID(int=0)


class ExpenseService:
    """Claims of the session's tenant; `fields` seals and opens their payee accounts."""

    def __init__(self, session: AsyncSession, fields: SealedFields) -> None:
        self._session = session
        self._fields = fields

    async def submit(
        self, tenant_id: uuid.UUID, employee_id: uuid.UUID, new: NewExpense
    ) -> Expense:
        """A new claim, submitted for approval, its account checked and sealed."""
        expense_id = uuid.uuid4()
        iban = normal_iban(new.payee_iban)
        sealed = await self._fields.seal(
            self._session, tenant_id, PAYEE_IBAN, expense_id, iban.encode()
        )
        await self._session.execute(
            insert(EXPENSES).values(
                id=expense_id,
                tenant_id=tenant_id,
                employee_id=employee_id,
                description=new.description,
                receipt_text=new.receipt_text,
                amount_minor=new.amount_minor,
                currency=new.currency,
                sealed_payee_iban=sealed,
                status=ExpenseStatus.SUBMITTED.value,
                sensitivity=new.sensitivity.value,
            )
        )
        found = await self.get(tenant_id, expense_id)
        if found is None:  # pragma: no cover - written in this same transaction
            raise LookupError("the new claim is not there")
        return found

    async def get(
        self, tenant_id: uuid.UUID, expense_id: uuid.UUID, *, for_update: bool = False
    ) -> Expense | None:
        """The claim; `for_update` locks it until the transaction ends, so a status check
        and the change that depends on it cannot interleave with another request's."""
        query = select(*_SHOWN).where(
            EXPENSES.c.tenant_id == tenant_id, EXPENSES.c.id == expense_id
        )
        row = (
            await self._session.execute(query.with_for_update() if for_update else query)
        ).first()
        return None if row is None else _expense(row._mapping)

    async def listing(
        self,
        tenant_id: uuid.UUID,
        *,
        employee_id: uuid.UUID | None = None,
        status: ExpenseStatus | None = None,
        limit: int = 100,
    ) -> list[Expense]:
        """The tenant's claims, oldest first; with `employee_id`, only theirs."""
        conditions: list[ColumnElement[bool]] = [EXPENSES.c.tenant_id == tenant_id]
        conditions.append(true() if employee_id is None else EXPENSES.c.employee_id == employee_id)
        if status is not None:
            conditions.append(EXPENSES.c.status == status.value)
        rows = await self._session.execute(
            select(*_SHOWN).where(*conditions).order_by(EXPENSES.c.created_at).limit(limit)
        )
        return [_expense(row._mapping) for row in rows]

    async def payee_iban(self, expense: Expense) -> str:
        """The account the claim is paid to, opened."""
        sealed = await self._session.scalar(
            select(EXPENSES.c.sealed_payee_iban).where(
                EXPENSES.c.tenant_id == expense.tenant_id, EXPENSES.c.id == expense.id
            )
        )
        if sealed is None:
            raise LookupError("no such claim")
        opened = await self._fields.open(
            self._session, expense.tenant_id, PAYEE_IBAN, expense.id, sealed
        )
        return opened.decode()

    async def approve(self, expense: Expense, approver_id: uuid.UUID) -> Expense:
        _require(expense, ExpenseStatus.SUBMITTED)
        return await self._move(
            expense,
            ExpenseStatus.APPROVED,
            approved_by=approver_id,
            approved_at=func.now(),
        )

    async def reimburse(self, expense: Expense, payer_id: uuid.UUID, payee_iban: str) -> Expense:
        """Pay an approved claim to the account its employee gave, and only to that one:
        `payee_iban` must repeat it (an account named anywhere else is refused)."""
        _require(expense, ExpenseStatus.APPROVED)
        if normal_iban(payee_iban) != await self.payee_iban(expense):
            raise PayeeMismatchError("that is not the account the employee gave for this claim")
        return await self._move(
            expense,
            ExpenseStatus.REIMBURSED,
            reimbursed_by=payer_id,
            reimbursed_at=func.now(),
        )

    async def _move(self, expense: Expense, status: ExpenseStatus, **change: Any) -> Expense:
        await self._session.execute(
            update(EXPENSES)
            .where(EXPENSES.c.tenant_id == expense.tenant_id, EXPENSES.c.id == expense.id)
            .values(status=status.value, **change)
        )
        moved = await self.get(expense.tenant_id, expense.id)
        if moved is None:  # pragma: no cover - locked by the caller in this transaction
            raise LookupError("the claim is gone")
        return moved


def _expense(row: Any) -> Expense:
    return Expense(
        id=row["id"],
        tenant_id=row["tenant_id"],
        employee_id=row["employee_id"],
        description=row["description"],
        receipt_text=row["receipt_text"],
        amount_minor=row["amount_minor"],
        currency=row["currency"],
        status=ExpenseStatus(row["status"]),
        sensitivity=Sensitivity(row["sensitivity"]),
        approved_by=row["approved_by"],
    )


def _require(expense: Expense, status: ExpenseStatus) -> None:
    if expense.status != status:
        raise WrongStatusError(f"the claim is {expense.status}, not {status}")
