"""The quotes app's assistant tools: the first user of the gateway's public registry.

Titles, descriptions and line items are written by the other party of a quote (a buyer for
the seller, a seller's proposal for the buyer), so no tool declares them trusted; ids,
statuses and currencies come from the database, and each tool declares exactly those (not
totals: they are computed from line items others wrote).

The money tools (`charge_deposit`, `issue_refund`, `disburse_deposit`) are Finance's: risk
`high` and `always_held`, so a model's call never runs by itself. It becomes an approval
request (when Cedar lets it wait: `context.held`, money roles only) and runs once, as the
Finance user who asked, when a second Finance user approves it. A person's own refund or
disbursement request (`approval_views`) is a request of the same tool.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ramparts.ai.tools import (
    AfterUntrusted,
    Risk,
    Tool,
    ToolError,
    ToolRegistry,
    ToolRun,
    uuid_argument,
)
from ramparts.apps import AppServices
from ramparts.payments import records
from ramparts.payments.connection import PspConnection
from ramparts.policy.engine import PolicyAction, Target
from ramparts.quotes import four_eyes, money
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote, QuoteStatus
from ramparts.quotes.services import LineItem, Party, QuoteService, QuoteWithItems, quote_target

__all__ = ["money_tools", "register_quote_tools"]

UUID = {"type": "string", "format": "uuid", "pattern": "^[0-9a-f-]{36}$"}
ITEM = {
    "type": "object",
    "properties": {
        "description": {"type": "string", "minLength": 1, "maxLength": 500},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "unit_price_minor": {"type": "integer", "minimum": 0, "maximum": 10**12},
    },
    "required": ["description", "quantity", "unit_price_minor"],
    "additionalProperties": False,
}
QUOTE = {
    "type": "object",
    "properties": {
        "id": UUID,
        "title": {"type": "string"},
        "description": {"type": "string"},
        "status": {"enum": [s.value for s in QuoteStatus]},
        "currency": {"type": "string"},
        "items": {"type": "array", "items": ITEM},
        "total_minor": {"type": "integer"},
        # The seller's proposal: a vendor's words, never trusted (QUOTE_SYSTEM_FIELDS).
        "proposal": {"type": ["string", "null"]},
    },
    "required": ["id", "title", "status", "currency", "total_minor"],
    "additionalProperties": False,
}
#: What the database holds of a quote whoever wrote it: neither party's text (title,
#: description, items, the seller's proposal), and not the total: it is computed from the
#: line items, which a buyer, a seller or the model wrote.
QUOTE_SYSTEM_FIELDS = ("id", "status", "currency")
QUOTE_ID_ONLY = {
    "type": "object",
    "properties": {"quote_id": UUID},
    "required": ["quote_id"],
    "additionalProperties": False,
}


async def _quote(run: ToolRun) -> Quote:
    quote = await QuoteService(run.session).get(
        run.principal.tenant_id, uuid_argument(run, "quote_id")
    )
    if quote is None:  # another tenant's quote is invisible under RLS: the same answer
        raise ToolError("no such quote")
    return quote


def _shown(quote: QuoteWithItems, *, with_items: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": str(quote.id),
        "title": quote.title,
        "description": quote.description,
        "status": quote.status.value,
        "currency": quote.currency,
        "total_minor": quote.total_minor,
    }
    if with_items:
        shown["proposal"] = quote.proposal
        shown["items"] = [
            {
                "description": i.description,
                "quantity": i.quantity,
                "unit_price_minor": i.unit_price_minor,
            }
            for i in quote.items
        ]
    return shown


async def _with_items(run: ToolRun, quote_id: uuid.UUID) -> QuoteWithItems:
    quote = await QuoteService(run.session).read(run.principal.tenant_id, quote_id)
    if quote is None:  # another tenant's quote is invisible under RLS: the same answer
        raise ToolError("no such quote")
    return quote


async def _list_target(run: ToolRun) -> Target:
    return Target(QuoteAction.QUOTE_LIST.entity_type, "*", str(run.principal.tenant_id))


async def _list(run: ToolRun) -> dict[str, Any]:
    status = run.arguments.get("status")
    quotes = await QuoteService(run.session).listing(
        run.principal.tenant_id,
        status=QuoteStatus(status) if status else None,
        party=Party.of(run.principal),
        limit=50,
    )
    # Each quote as Cedar judges it (whose it is; a restricted one needs a WebAuthn sign-in),
    # like the API.
    readable = [q for q in quotes if run.may(QuoteAction.QUOTE_READ, quote_target(q))]
    shown = [_shown(q, with_items=False) for q in readable]
    return {"ids": [q["id"] for q in shown], "quotes": shown}


async def _quote_target(run: ToolRun) -> Target:
    return quote_target(await _quote(run))


async def _get(run: ToolRun) -> dict[str, Any]:
    return _shown(await _with_items(run, uuid_argument(run, "quote_id")), with_items=True)


async def _create(run: ToolRun) -> dict[str, Any]:
    assert run.principal.user_id is not None  # noqa: S101 - the gateway serves people only
    quote = await QuoteService(run.session).create(
        tenant_id=run.principal.tenant_id,
        buyer_id=run.principal.user_id,
        title=run.arguments["title"],
        description=run.arguments.get("description", ""),
        currency=run.arguments["currency"],
        items=[LineItem(**item) for item in run.arguments["items"]],
    )
    return _shown(await _with_items(run, quote.id), with_items=True)


async def _draft(run: ToolRun) -> dict[str, Any]:
    """A proposal drafted from the quote's own data: deterministic, so it needs no model."""
    quote = await _with_items(run, uuid_argument(run, "quote_id"))
    shown = _shown(quote, with_items=True)
    lines = [
        f"- {item['quantity']} x {item['description']} at "
        f"{item['unit_price_minor'] / 100:.2f} {quote.currency}"
        for item in shown["items"]
    ]
    proposal = (
        f"Proposal for: {quote.title}\n\nWe are pleased to offer:\n"
        + "\n".join(lines)
        + f"\n\nTotal: {shown['total_minor'] / 100:.2f} {quote.currency}. "
        "Valid for 30 days; a deposit is due on acceptance."
    )
    return {"quote_id": str(quote.id), "total_minor": shown["total_minor"], "proposal": proposal}


def register_quote_tools(registry: ToolRegistry, services: AppServices | None = None) -> None:
    """The app's tools; the money tools reach the PSP through `services` (without them, as
    in a test of the declarations, a money call is refused: payments are not set up)."""
    for tool in money_tools(
        services.psp if services is not None else None,
        services.settings.public_url if services is not None else "",
    ):
        registry.register(tool)
    registry.register(
        Tool(
            name="list_quotes",
            description="List the quotes of your organisation you may read (at most 50), "
            "oldest first.",
            arguments={
                "type": "object",
                "properties": {"status": {"enum": [s.value for s in QuoteStatus]}},
                "additionalProperties": False,
            },
            result={
                "type": "object",
                "properties": {
                    "ids": {"type": "array", "items": UUID},
                    "quotes": {"type": "array", "items": QUOTE},
                },
                "required": ["ids", "quotes"],
                "additionalProperties": False,
            },
            action=QuoteAction.QUOTE_LIST,
            risk=Risk.READ,
            run=_list,
            target=_list_target,
            trusted=frozenset({"/ids/*", *(f"/quotes/*/{name}" for name in QUOTE_SYSTEM_FIELDS)}),
        )
    )
    registry.register(
        Tool(
            name="get_quote",
            description="Read one quote with its line items.",
            arguments=QUOTE_ID_ONLY,
            result=QUOTE,
            action=QuoteAction.QUOTE_READ,
            risk=Risk.READ,
            run=_get,
            target=_quote_target,
            trusted=frozenset(f"/{name}" for name in QUOTE_SYSTEM_FIELDS),
        )
    )
    registry.register(
        Tool(
            name="create_quote",
            description="Ask for a quote: a draft request with a title, currency and items.",
            arguments={
                "type": "object",
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 200},
                    "description": {"type": "string", "maxLength": 10_000},
                    "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "items": {"type": "array", "items": ITEM, "minItems": 1, "maxItems": 100},
                },
                "required": ["title", "currency", "items"],
                "additionalProperties": False,
            },
            result=QUOTE,
            action=QuoteAction.QUOTE_CREATE,
            risk=Risk.WRITE,
            run=_create,
            target=_list_target,
            # The new quote's id and status are the database's; the rest (currency and total
            # too) is what the model wrote, which may come from third-party text it read.
            trusted=frozenset({"/id", "/status"}),
            # A quote asked for after the model read a vendor's text: a colleague confirms it.
            after_untrusted=AfterUntrusted.APPROVAL,
        )
    )
    registry.register(
        Tool(
            name="draft_proposal",
            description="Draft a seller's proposal for a quote from its line items.",
            arguments=QUOTE_ID_ONLY,
            result={
                "type": "object",
                "properties": {
                    "quote_id": UUID,
                    "total_minor": {"type": "integer"},
                    "proposal": {"type": "string"},
                },
                "required": ["quote_id", "total_minor", "proposal"],
                "additionalProperties": False,
            },
            action=QuoteAction.QUOTE_SUBMIT,  # drafting the answer is the seller's part
            risk=Risk.READ,
            run=_draft,
            target=_quote_target,
            trusted=frozenset({"/quote_id"}),
        )
    )


# --- money: Finance's, always held for a second Finance user ---------------------------------

AMOUNT = {"type": "integer", "minimum": 1, "maximum": 99_999_999}
PAYMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": UUID,
        "quote_id": UUID,
        "status": {"type": "string"},
        "amount": {"type": "integer"},
        "currency": {"type": "string"},
        "psp_id": {"type": ["string", "null"]},
        "checkout_url": {"type": "string"},
        "created_at": {"type": "string"},
    },
    "required": [
        "id",
        "quote_id",
        "status",
        "amount",
        "currency",
        "psp_id",
        "checkout_url",
        "created_at",
    ],
    "additionalProperties": False,
}
REFUND: dict[str, Any] = {
    "type": "object",
    "properties": {
        "refund_id": UUID,
        "psp_id": {"type": "string"},
        "payment_id": UUID,
        "amount": {"type": "integer"},
        "currency": {"type": "string"},
        "status": {"type": "string"},
    },
    "required": ["refund_id", "psp_id", "payment_id", "amount", "currency", "status"],
    "additionalProperties": False,
}
DISBURSEMENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "disbursement_id": UUID,
        "psp_id": {"type": "string"},
        "payment_id": UUID,
        "quote_id": UUID,
        "amount": {"type": "integer"},
        "currency": {"type": "string"},
        "status": {"type": "string"},
    },
    "required": [
        "disbursement_id",
        "psp_id",
        "payment_id",
        "quote_id",
        "amount",
        "currency",
        "status",
    ],
    "additionalProperties": False,
}
#: The money tools' arguments, as the routes that request them directly send them too.
CHARGE_ARGUMENTS = {
    "type": "object",
    "properties": {"quote_id": UUID, "amount": AMOUNT},
    "required": ["quote_id"],
    "additionalProperties": False,
}
REFUND_ARGUMENTS = {
    "type": "object",
    "properties": {"payment_id": UUID, "amount": AMOUNT},
    "required": ["payment_id", "amount"],
    "additionalProperties": False,
}
DISBURSE_ARGUMENTS = {
    "type": "object",
    "properties": {"quote_id": UUID, "amount": AMOUNT},
    "required": ["quote_id", "amount"],
    "additionalProperties": False,
}


async def _deposit_target(run: ToolRun) -> Target:
    return four_eyes.deposit_target(await _quote(run))


async def _refund_target(run: ToolRun) -> Target:
    payment = await records.by_id(run.session, uuid_argument(run, "payment_id"))
    quote = None
    if payment is not None:
        quote = await four_eyes.quote_of(run.session, run.principal.tenant_id, payment)
    if payment is None or quote is None:  # another tenant's is invisible under RLS: alike
        raise ToolError("no such payment")
    return four_eyes.refund_target(payment, quote)


async def _disbursement_target(run: ToolRun) -> Target:
    return four_eyes.disbursement_target(await _quote(run))


def _every_field(result: dict[str, Any]) -> frozenset[str]:
    """A money tool's result is the database's and the PSP's own data: every field."""
    return frozenset(f"/{name}" for name in result["properties"])


def _no_payments() -> PspConnection:
    raise ToolError("payments are not set up")


def _money_tool(  # noqa: PLR0917 - a tool's declaration, in its fields' order
    name: str,
    description: str,
    arguments: dict[str, Any],
    result: dict[str, Any],
    action: PolicyAction,
    run: Callable[[ToolRun], Awaitable[dict[str, Any]]],
    target: Callable[[ToolRun], Awaitable[Target]],
) -> Tool:
    """A money tool: high risk, always held for a second person, every argument sensitive
    (an approver sees where each came from), every field of its result the PSP's own."""
    return Tool(
        name=name,
        description=description,
        arguments=arguments,
        result=result,
        action=action,
        risk=Risk.HIGH,
        run=run,
        target=target,
        sensitive=frozenset(arguments["properties"]),
        trusted=_every_field(result),
        always_held=True,
    )


def money_tools(psp: PspConnection | None, public_url: str) -> list[Tool]:
    """`charge_deposit`, `issue_refund` and `disburse_deposit`, moving money through `psp`."""

    def connection() -> PspConnection:
        return psp if psp is not None else _no_payments()

    async def charge(run: ToolRun) -> dict[str, Any]:
        _, _, approval = four_eyes.approved(run)
        # The deposit service the route runs too; a refusal is already a `ToolError` whose
        # message is its detail.
        return await money.charge_deposit(
            run.session,
            four_eyes.adapter(connection()),
            run.principal,
            uuid_argument(run, "quote_id"),
            amount=run.arguments.get("amount"),
            idempotency_key=str(approval),
            public_url=public_url,
        )

    async def refund(run: ToolRun) -> dict[str, Any]:
        return await four_eyes.refund(run, connection())

    async def disburse(run: ToolRun) -> dict[str, Any]:
        return await four_eyes.disburse(run, connection())

    return [
        _money_tool(
            four_eyes.CHARGE_TOOL,
            "Charge the deposit of an accepted quote (Finance): the buyer then pays it on the "
            "PSP's page. Waits for a second Finance user's approval.",
            CHARGE_ARGUMENTS,
            PAYMENT,
            QuoteAction.DEPOSIT_CHARGE,
            charge,
            _deposit_target,
        ),
        _money_tool(
            four_eyes.REFUND_TOOL,
            "Refund part or all of a paid deposit to the buyer's card (Finance). Waits for a "
            "second Finance user's approval.",
            REFUND_ARGUMENTS,
            REFUND,
            QuoteAction.REFUND_ISSUE,
            refund,
            _refund_target,
        ),
        _money_tool(
            four_eyes.DISBURSE_TOOL,
            "Pay a quote's paid deposit out to its seller (Finance). Waits for a second Finance "
            "user's approval.",
            DISBURSE_ARGUMENTS,
            DISBURSEMENT,
            QuoteAction.DISBURSEMENT_APPROVE,
            disburse,
            _disbursement_target,
        ),
    ]
