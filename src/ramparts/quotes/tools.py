"""The quotes app's assistant tools: the first user of the gateway's public registry.

Titles, descriptions and line items are written by the other party of a quote (a buyer for
the seller, a seller's proposal for the buyer), so no tool declares them trusted; ids,
statuses and currencies come from the database, and each tool declares exactly those (not
totals: they are computed from line items others wrote).
"""

from __future__ import annotations

import uuid
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
from ramparts.policy.engine import Target
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote, QuoteStatus
from ramparts.quotes.services import LineItem, Party, QuoteService, QuoteWithItems, quote_target

__all__ = ["register_quote_tools"]

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
    },
    "required": ["id", "title", "status", "currency", "total_minor"],
    "additionalProperties": False,
}
#: What the database holds of a quote and the user may read: neither party's text.
#: What the database holds of a quote whoever wrote it. Not the total: it is computed from the
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


def register_quote_tools(registry: ToolRegistry) -> None:
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
