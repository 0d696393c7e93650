"""HTTP for expense claims: every route declares its Cedar action and asks the Authorizer.

A claim the caller's tenant cannot see (row-level security) answers 404 like one that does
not exist, so ids from elsewhere reveal nothing; an action the caller's role lacks, or a
claim of their tenant that is not theirs to act on (a colleague's, or their own to approve),
answers 403. Every decision, allow or deny, is in the audit trail.

Each route works in the request's one tenant transaction (`request_session`): it commits when
the route answers a success and rolls back otherwise, so a refusal is recorded apart.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures' annotations,
# and the `Caller` and `Session` aliases are local to `build_router`.
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from ramparts.apps import AppServices
from ramparts.db.request import request_session
from ramparts.identity.auth import Principal
from ramparts.policy.engine import PolicyAction, Target
from ramparts.policy.services import RequestContext
from ramparts.problems import Problem, ProblemType
from ramparts.routes import declares
from ramparts.web.pages import WEB_CLIENT_ID
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts_expenses.actions import ExpenseAction
from ramparts_expenses.iban import IBAN_ARGUMENT, InvalidIbanError
from ramparts_expenses.models import ExpenseStatus, Sensitivity
from ramparts_expenses.services import (
    ENTITY,
    Expense,
    ExpenseService,
    NewExpense,
    PayeeMismatchError,
    WrongStatusError,
    expense_target,
    new_expense_target,
    visible_to,
)

__all__ = ["build_router", "expense_json"]


class ExpenseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = Field(min_length=1, max_length=500)
    amount_minor: int = Field(ge=1, le=100_000_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payee_iban: str = Field(pattern=IBAN_ARGUMENT)
    receipt_text: str = Field(default="", max_length=20_000)
    sensitivity: Sensitivity = Field(default=Sensitivity.INTERNAL, strict=False)


class Payee(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    payee_iban: str = Field(pattern=IBAN_ARGUMENT)


def expense_json(expense: Expense) -> dict[str, Any]:
    """The claim as the API shows it (never its account: `GET /api/expenses/{id}` adds it)."""
    return {
        "id": str(expense.id),
        "employee_id": str(expense.employee_id),
        "description": expense.description,
        "receipt_text": expense.receipt_text,
        "amount_minor": expense.amount_minor,
        "currency": expense.currency,
        "status": expense.status.value,
        "sensitivity": expense.sensitivity.value,
        "approved_by": None if expense.approved_by is None else str(expense.approved_by),
    }


def _not_found() -> Problem:
    return Problem(404, ProblemType.NOT_FOUND, "no such expense")


def build_router(services: AppServices) -> APIRouter:  # noqa: PLR0915 - one route table
    """The app's routes; `services.fields` seals and opens payee accounts."""
    fields = services.fields
    router = APIRouter(tags=["expenses"])
    authorizer = services.authorizer
    Caller = Annotated[Principal, Depends(services.bearer)]  # noqa: N806 - a type alias
    Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806 - a type alias

    async def context(session: AsyncSession, principal: Principal) -> RequestContext:
        return await authorizer.context(principal, ui_client=WEB_CLIENT_ID, session=session)

    async def load(
        session: AsyncSession,
        principal: Principal,
        action: PolicyAction,
        expense_id: uuid.UUID,
        *,
        for_update: bool = False,
    ) -> Expense:
        """The claim, when it exists in the caller's tenant and Cedar allows `action` on it;
        a claim to change is locked until the transaction ends."""
        expense = await ExpenseService(session, fields).get(
            principal.tenant_id, expense_id, for_update=for_update
        )
        # Not found in the caller's tenant: it belongs to no tenant we know, so the tenant
        # wall denies it (and the denial is recorded like any other).
        target = (
            expense_target(expense)
            if expense is not None
            else Target(ENTITY, str(expense_id), tenant="", sensitivity="internal")
        )
        decision = await authorizer.authorize(
            principal, action, target, await context(session, principal), session=session
        )
        if expense is None:
            raise _not_found()
        if not decision.allowed:
            raise Problem(403, ProblemType.FORBIDDEN, f"{action} is not allowed here")
        return expense

    @router.get("/api/expenses", openapi_extra=declares(ExpenseAction.EXPENSE_LIST))
    async def list_expenses(
        principal: Caller, session: Session, status: ExpenseStatus | None = None
    ) -> dict[str, Any]:
        """The caller's tenant's claims it may read, oldest first (at most 100)."""
        ctx = await context(session, principal)
        collection = Target(ENTITY, "*", str(principal.tenant_id), "internal")
        await authorizer.require(
            principal, ExpenseAction.EXPENSE_LIST, collection, ctx, session=session
        )
        found = await ExpenseService(session, fields).listing(
            principal.tenant_id, employee_id=visible_to(principal), status=status
        )
        readable = {
            t.id
            for t in await authorizer.permitted(
                principal,
                ExpenseAction.EXPENSE_READ,
                [expense_target(e) for e in found],
                ctx,
                session=session,
            )
        }
        return {"items": [expense_json(e) for e in found if str(e.id) in readable]}

    @router.get("/api/expenses/{expense_id}", openapi_extra=declares(ExpenseAction.EXPENSE_READ))
    async def read_expense(
        principal: Caller, session: Session, expense_id: uuid.UUID
    ) -> dict[str, Any]:
        """One claim, with the account it is paid to."""
        expense = await load(session, principal, ExpenseAction.EXPENSE_READ, expense_id)
        iban = await ExpenseService(session, fields).payee_iban(expense)
        return {**expense_json(expense), "payee_iban": iban}

    @router.post(
        "/api/expenses", status_code=201, openapi_extra=declares(ExpenseAction.EXPENSE_SUBMIT)
    )
    async def submit_expense(principal: Caller, session: Session, new: ExpenseIn) -> dict[str, Any]:
        await authorizer.require(
            principal,
            ExpenseAction.EXPENSE_SUBMIT,
            new_expense_target(principal, new.sensitivity),
            await context(session, principal),
            session=session,
        )
        # The schema gives expense.submit to people only, so a service was refused above.
        if principal.user_id is None:  # pragma: no cover
            raise Problem(403, ProblemType.FORBIDDEN, "expense.submit is for people")
        claim = NewExpense(
            description=new.description,
            amount_minor=new.amount_minor,
            currency=new.currency,
            payee_iban=new.payee_iban,
            receipt_text=new.receipt_text,
            sensitivity=new.sensitivity,
        )
        try:
            expense = await ExpenseService(session, fields).submit(
                principal.tenant_id, principal.user_id, claim
            )
        except InvalidIbanError as exc:
            raise Problem(422, ProblemType.INVALID_REQUEST, str(exc)) from None
        return expense_json(expense)

    @router.post(
        "/api/expenses/{expense_id}/approve",
        openapi_extra=declares(ExpenseAction.EXPENSE_APPROVE),
    )
    async def approve_expense(
        principal: Caller, session: Session, expense_id: uuid.UUID
    ) -> dict[str, Any]:
        action = ExpenseAction.EXPENSE_APPROVE
        expense = await load(session, principal, action, expense_id, for_update=True)
        if principal.user_id is None:  # pragma: no cover - the schema gives it to people
            raise Problem(403, ProblemType.FORBIDDEN, "expense.approve is for people")
        try:
            moved = await ExpenseService(session, fields).approve(expense, principal.user_id)
        except WrongStatusError as exc:
            raise Problem(409, ProblemType.WRONG_STATUS, str(exc)) from None
        return expense_json(moved)

    @router.post(
        "/api/expenses/{expense_id}/reimburse",
        openapi_extra=declares(ExpenseAction.EXPENSE_REIMBURSE),
    )
    async def reimburse_expense(
        principal: Caller, session: Session, expense_id: uuid.UUID, payee: Payee
    ) -> dict[str, Any]:
        action = ExpenseAction.EXPENSE_REIMBURSE
        expense = await load(session, principal, action, expense_id, for_update=True)
        if principal.user_id is None:  # pragma: no cover - the schema gives it to people
            raise Problem(403, ProblemType.FORBIDDEN, "expense.reimburse is for people")
        try:
            moved = await ExpenseService(session, fields).reimburse(
                expense, principal.user_id, payee.payee_iban
            )
        except WrongStatusError as exc:
            raise Problem(409, ProblemType.WRONG_STATUS, str(exc)) from None
        except (PayeeMismatchError, InvalidIbanError) as exc:
            raise Problem(422, ProblemType.INVALID_REQUEST, str(exc)) from None
        return expense_json(moved)

    return router
