"""The expenses app's assistant tools.

What a claim says (its description) is its employee's words, and its receipt is what a vendor
wrote: no tool declares either trusted, so reading them taints the conversation, and nothing
in them backs an amount, an account or a claim id. Ids, statuses, employees, amounts and
currencies of stored claims are the database's, checked on the way in (an amount is a
bounded integer: it can carry no instruction), and each tool declares exactly those trusted,
so listing claims leaves the conversation clean and its ids back the next call.

No result holds the account a claim is paid to: the model has no use for it, and the one
that pays is typed by a person (`reimburse` repeats it; the service refuses any other). The
accounts a receipt names are shown apart, untrusted, so a call that uses one is traced to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ramparts.ai.tools import Risk, Tool, ToolError, ToolRegistry, ToolRun, uuid_argument
from ramparts.crypto.sealing import SealedFields
from ramparts.detectors import Kind, find_sensitive
from ramparts.policy.engine import Target

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

__all__ = ["LISTED", "expense_tools"]

LISTED = 50
UUID = {"type": "string", "format": "uuid", "pattern": "^[0-9a-f-]{36}$"}
STATUS = {"enum": [s.value for s in ExpenseStatus]}
#: An amount as people write it ("42.50"): what the user typed then backs it as it is.
AMOUNT = {"type": "string", "pattern": r"^[0-9]{1,6}(\.[0-9]{2})?$"}
CURRENCY = {"type": "string", "pattern": "^[A-Z]{3}$"}
IBAN = {"type": "string", "pattern": IBAN_ARGUMENT}
SUMMARY = {
    "type": "object",
    "properties": {
        "id": UUID,
        "employee_id": UUID,
        "status": STATUS,
        "amount_minor": {"type": "integer"},
        "currency": {"type": "string"},
    },
    "required": ["id", "employee_id", "status", "amount_minor", "currency"],
    "additionalProperties": False,
}
#: The fields of a stored claim that are the database's, whoever reads them.
SYSTEM_FIELDS = ("id", "employee_id", "status", "amount_minor", "currency")
MOVED = {
    "type": "object",
    "properties": {"id": UUID, "status": STATUS},
    "required": ["id", "status"],
    "additionalProperties": False,
}
EXPENSE_ID_ONLY = {
    "type": "object",
    "properties": {"expense_id": UUID},
    "required": ["expense_id"],
    "additionalProperties": False,
}


def _summary(expense: Expense) -> dict[str, Any]:
    return {
        "id": str(expense.id),
        "employee_id": str(expense.employee_id),
        "status": expense.status.value,
        "amount_minor": expense.amount_minor,
        "currency": expense.currency,
    }


def _minor_units(amount: str) -> int:
    """ "42.50" or "42" as 4250 (the schema checked the shape; the service checks the bounds)."""
    whole, _, cents = amount.partition(".")
    minor = int(whole) * 100 + int(cents or 0)
    if minor < 1:
        raise ToolError("an amount is more than 0")
    return minor


def expense_tools(fields: SealedFields) -> Callable[[ToolRegistry], None]:
    """The app's tools, sealing and opening payee accounts with `fields` (the runtime's)."""

    def service(run: ToolRun) -> ExpenseService:
        return ExpenseService(run.session, fields)

    async def claim(run: ToolRun, *, for_update: bool = False) -> Expense:
        found = await service(run).get(
            run.principal.tenant_id, uuid_argument(run, "expense_id"), for_update=for_update
        )
        if found is None:  # another tenant's claim is invisible under RLS: the same answer
            raise ToolError("no such expense")
        return found

    async def claim_target(run: ToolRun) -> Target:
        return expense_target(await claim(run))

    async def collection(run: ToolRun) -> Target:
        return Target(ENTITY, "*", str(run.principal.tenant_id))

    async def new_claim(run: ToolRun) -> Target:
        return new_expense_target(run.principal, Sensitivity.INTERNAL)

    async def list_expenses(run: ToolRun) -> dict[str, Any]:
        status = run.arguments.get("status")
        found = await service(run).listing(
            run.principal.tenant_id,
            employee_id=visible_to(run.principal),
            status=ExpenseStatus(status) if status else None,
            limit=LISTED,
        )
        # Each claim as Cedar judges it (whose it is; a restricted one needs a WebAuthn
        # sign-in), like the API.
        readable = [e for e in found if run.may(ExpenseAction.EXPENSE_READ, expense_target(e))]
        return {"expenses": [_summary(e) for e in readable]}

    async def read_receipt(run: ToolRun) -> dict[str, Any]:
        expense = await claim(run)
        return {
            "expense_id": str(expense.id),
            "status": expense.status.value,
            "description": expense.description,
            "receipt_text": expense.receipt_text,
            # Each account the receipt names, on its own: a value the model then puts in a
            # call is traced to this field (an approver sees "the receipt's"), where inside
            # the whole text it would be traced nowhere.
            "payment_accounts": [
                found.value
                for found in find_sensitive(expense.receipt_text)
                if found.kind is Kind.IBAN
            ],
        }

    async def submit_expense(run: ToolRun) -> dict[str, Any]:
        assert run.principal.user_id is not None  # noqa: S101 - the gateway serves people only
        new = NewExpense(
            description=run.arguments["description"],
            amount_minor=_minor_units(run.arguments["amount"]),
            currency=run.arguments["currency"],
            payee_iban=run.arguments["payee_iban"],
            receipt_text=run.arguments.get("receipt_text", ""),
        )
        try:
            expense = await service(run).submit(run.principal.tenant_id, run.principal.user_id, new)
        except InvalidIbanError as exc:
            raise ToolError(str(exc)) from None
        return _summary(expense)

    async def approve_expense(run: ToolRun) -> dict[str, Any]:
        assert run.principal.user_id is not None  # noqa: S101 - the gateway serves people only
        try:
            moved = await service(run).approve(
                await claim(run, for_update=True), run.principal.user_id
            )
        except WrongStatusError as exc:
            raise ToolError(str(exc)) from None
        return {"id": str(moved.id), "status": moved.status.value}

    async def reimburse(run: ToolRun) -> dict[str, Any]:
        assert run.principal.user_id is not None  # noqa: S101 - the gateway serves people only
        try:
            moved = await service(run).reimburse(
                await claim(run, for_update=True),
                run.principal.user_id,
                run.arguments["payee_iban"],
            )
        except (WrongStatusError, PayeeMismatchError, InvalidIbanError) as exc:
            raise ToolError(str(exc)) from None
        return _summary(moved)

    def register(registry: ToolRegistry) -> None:
        registry.register(
            Tool(
                name="list_expenses",
                description=f"List the expense claims you may read (at most {LISTED}), oldest "
                "first: ids, employees, statuses and amounts (minor units).",
                arguments={
                    "type": "object",
                    "properties": {"status": STATUS},
                    "additionalProperties": False,
                },
                result={
                    "type": "object",
                    "properties": {"expenses": {"type": "array", "items": SUMMARY}},
                    "required": ["expenses"],
                    "additionalProperties": False,
                },
                action=ExpenseAction.EXPENSE_LIST,
                risk=Risk.READ,
                run=list_expenses,
                target=collection,
                trusted=frozenset(f"/expenses/*/{name}" for name in SYSTEM_FIELDS),
            )
        )
        registry.register(
            Tool(
                name="read_receipt",
                description="Read what a claim says and its receipt, as its employee and the "
                "vendor wrote them.",
                arguments=EXPENSE_ID_ONLY,
                result={
                    "type": "object",
                    "properties": {
                        "expense_id": UUID,
                        "status": STATUS,
                        "description": {"type": "string"},
                        "receipt_text": {"type": "string"},
                        "payment_accounts": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": [
                        "expense_id",
                        "status",
                        "description",
                        "receipt_text",
                        "payment_accounts",
                    ],
                    "additionalProperties": False,
                },
                action=ExpenseAction.EXPENSE_READ,
                risk=Risk.READ,
                run=read_receipt,
                target=claim_target,
                trusted=frozenset({"/expense_id", "/status"}),
            )
        )
        registry.register(
            Tool(
                name="submit_expense",
                description="Claim an expense of your own: what it was, the amount as written "
                "(42.50), its currency, and the IBAN to pay it back to.",
                arguments={
                    "type": "object",
                    "properties": {
                        "description": {"type": "string", "minLength": 1, "maxLength": 500},
                        "amount": AMOUNT,
                        "currency": CURRENCY,
                        "payee_iban": IBAN,
                        "receipt_text": {"type": "string", "maxLength": 20_000},
                    },
                    "required": ["description", "amount", "currency", "payee_iban"],
                    "additionalProperties": False,
                },
                result=SUMMARY,
                action=ExpenseAction.EXPENSE_SUBMIT,
                risk=Risk.WRITE,
                run=submit_expense,
                target=new_claim,
                # Where the money goes and how much: the user's own words, or a colleague
                # confirms it (a receipt's "pay to" line is the vendor's, never the user's).
                sensitive=frozenset({"amount", "payee_iban"}),
                # The new claim's id, employee and status are the database's; its amount and
                # currency are what the model wrote.
                trusted=frozenset({"/id", "/employee_id", "/status"}),
            )
        )
        registry.register(
            Tool(
                name="approve_expense",
                description="Approve another person's submitted claim.",
                arguments=EXPENSE_ID_ONLY,
                result=MOVED,
                action=ExpenseAction.EXPENSE_APPROVE,
                risk=Risk.WRITE,
                run=approve_expense,
                target=claim_target,
                # Which claim: one the user named or a listing showed, never one a receipt did.
                sensitive=frozenset({"expense_id"}),
                trusted=frozenset({"/id", "/status"}),
            )
        )
        registry.register(
            Tool(
                name="reimburse",
                description="Pay an approved claim back to its employee: repeat the IBAN "
                "they gave (any other is refused). Always confirmed by a second Finance user.",
                arguments={
                    "type": "object",
                    "properties": {"expense_id": UUID, "payee_iban": IBAN},
                    "required": ["expense_id", "payee_iban"],
                    "additionalProperties": False,
                },
                result=SUMMARY,
                action=ExpenseAction.EXPENSE_REIMBURSE,
                risk=Risk.HIGH,
                run=reimburse,
                target=claim_target,
                sensitive=frozenset({"expense_id", "payee_iban"}),
                trusted=frozenset(f"/{name}" for name in SYSTEM_FIELDS),
            )
        )

    return register
