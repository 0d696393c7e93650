"""HTTP for quotes: every route declares its Cedar action and asks the Authorizer.

A quote the caller's tenant cannot see (row-level security) and a quote it may not act on
answer alike with 404 when it is another tenant's, so ids from elsewhere reveal nothing; an
action the caller's role lacks on its own tenant's quote, or a quote of the tenant that is not
theirs (another buyer's request, another seller's answer), answers 403. Listings hold only the
quotes the caller may read: a buyer's own requests, a seller's open and assigned ones, every
quote for Finance and admins. Every decision, allow or deny, is in the audit trail.

Each route works in the request's one tenant transaction (`request_session`, opened when the
caller's token was checked): it commits when the route answers a success, and rolls back
otherwise, so a refusal is recorded apart (`Authorizer.authorize`) to survive it.
"""

import uuid
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.request import request_session
from ramparts.identity.auth import BearerAuthenticator, Principal
from ramparts.policy.engine import PolicyAction, Target
from ramparts.policy.services import Authorizer, RequestContext
from ramparts.problems import Problem, ProblemType
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote, QuoteStatus, Sensitivity
from ramparts.quotes.services import (
    LineItem,
    Party,
    QuoteService,
    QuoteWithItems,
    WrongStatusError,
    quote_target,
)
from ramparts.routes import declares
from ramparts.web.pages import WEB_CLIENT_ID

__all__ = ["MAX_PROPOSAL", "build_router", "quote_json"]

MAX_IDS = 100
#: The longest proposal a seller may send (as the column's check in 0028_quote_proposal).
MAX_PROPOSAL = 10_000

Found = TypeVar("Found", Quote, QuoteWithItems)

QUOTE = QuoteAction.QUOTE_READ.entity_type  # what every quote target is, to Cedar


class ItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    description: str = Field(min_length=1, max_length=500)
    quantity: int = Field(ge=1, le=1_000_000)
    unit_price_minor: int = Field(ge=0, le=10**12)


class QuoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    sensitivity: Sensitivity = Field(default=Sensitivity.INTERNAL, strict=False)
    items: list[ItemIn] = Field(min_length=1, max_length=100)
    # The one seller who may answer; without it every seller of the tenant may.
    seller_id: Annotated[uuid.UUID, Field(strict=False)] | None = None


class QuoteChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)


class ProposalIn(BaseModel):
    """A seller's answer: optionally the proposal's text (the body may be left out)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    proposal: str | None = Field(default=None, min_length=1, max_length=MAX_PROPOSAL)


class QuoteIds(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    ids: list[Annotated[uuid.UUID, Field(strict=False)]] = Field(min_length=1, max_length=MAX_IDS)


def _target(quote: Quote | QuoteWithItems | None, quote_id: uuid.UUID | str) -> Target:
    """The Cedar resource; a quote not found in the caller's tenant belongs to no tenant we
    know, so the tenant wall denies it."""
    if quote is None:
        return Target(QUOTE, str(quote_id), tenant="", sensitivity="internal")
    return quote_target(quote)


def _not_found() -> Problem:
    return Problem(404, ProblemType.NOT_FOUND, "no such quote")


def quote_json(quote: QuoteWithItems) -> dict[str, Any]:
    """The quote as the API shows it."""
    return {
        "id": str(quote.id),
        "title": quote.title,
        "description": quote.description,
        "status": quote.status.value,
        "currency": quote.currency,
        "sensitivity": quote.sensitivity.value,
        "buyer_id": str(quote.buyer_id),
        "seller_id": str(quote.seller_id) if quote.seller_id else None,
        "items": [
            {
                "description": i.description,
                "quantity": i.quantity,
                "unit_price_minor": i.unit_price_minor,
            }
            for i in quote.items
        ],
        "total_minor": quote.total_minor,
        "proposal": quote.proposal,
    }


def build_router(  # noqa: PLR0915 - one route table
    bearer: BearerAuthenticator, authorizer: Authorizer
) -> APIRouter:
    router = APIRouter(tags=["quotes"])
    Caller = Annotated[Principal, Depends(bearer)]  # noqa: N806 - a type alias
    Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806 - a type alias

    async def context(session: AsyncSession, principal: Principal) -> RequestContext:
        return await authorizer.context(principal, ui_client=WEB_CLIENT_ID, session=session)

    async def require(
        session: AsyncSession,
        principal: Principal,
        action: PolicyAction,
        quote: Found | None,
        quote_id: uuid.UUID,
    ) -> Found:
        """The quote, when it exists in the caller's tenant and Cedar allows `action` on it."""
        decision = await authorizer.authorize(
            principal,
            action,
            _target(quote, quote_id),
            await context(session, principal),
            session=session,
        )
        if quote is None:
            raise _not_found()
        if not decision.allowed:
            raise Problem(403, ProblemType.FORBIDDEN, f"{action} is not allowed here")
        return quote

    async def load(
        session: AsyncSession, principal: Principal, action: PolicyAction, quote_id: uuid.UUID
    ) -> Quote:
        """The quote to change, locked until the transaction ends."""
        quote = await QuoteService(session).get(principal.tenant_id, quote_id, for_update=True)
        return await require(session, principal, action, quote, quote_id)

    async def shown(session: AsyncSession, quote: Quote) -> dict[str, Any]:
        """The quote's body as it now stands in this transaction."""
        current = await QuoteService(session).read(quote.tenant_id, quote.id)
        if current is None:  # pragma: no cover - written in this same transaction
            raise _not_found()
        return quote_json(current)

    @router.get("/api/quotes", openapi_extra=declares(QuoteAction.QUOTE_LIST))
    async def list_quotes(
        principal: Caller,
        session: Session,
        status: QuoteStatus | None = None,
        ids: Annotated[str | None, Query(max_length=MAX_IDS * 37)] = None,
    ) -> dict[str, Any]:
        """The caller's tenant's quotes it may read, oldest first (at most 100)."""
        wanted = _parse_ids(ids) if ids is not None else None
        collection = Target(QUOTE, "*", str(principal.tenant_id), "internal")
        ctx = await context(session, principal)
        await authorizer.require(
            principal, QuoteAction.QUOTE_LIST, collection, ctx, session=session
        )
        quotes = await QuoteService(session).listing(
            principal.tenant_id, status=status, ids=wanted, party=Party.of(principal)
        )
        readable = {
            t.id
            for t in await authorizer.permitted(
                principal,
                QuoteAction.QUOTE_READ,
                [quote_target(q) for q in quotes],
                ctx,
                session=session,
            )
        }
        return {"items": [quote_json(q) for q in quotes if str(q.id) in readable]}

    @router.get("/api/quotes/{quote_id}", openapi_extra=declares(QuoteAction.QUOTE_READ))
    async def read_quote(
        principal: Caller, session: Session, quote_id: uuid.UUID
    ) -> dict[str, Any]:
        quote = await QuoteService(session).read(principal.tenant_id, quote_id)
        return quote_json(
            await require(session, principal, QuoteAction.QUOTE_READ, quote, quote_id)
        )

    @router.post("/api/quotes", status_code=201, openapi_extra=declares(QuoteAction.QUOTE_CREATE))
    async def create_quote(principal: Caller, session: Session, new: QuoteIn) -> dict[str, Any]:
        target = Target(QUOTE, "new", str(principal.tenant_id), new.sensitivity.value)
        await authorizer.require(
            principal,
            QuoteAction.QUOTE_CREATE,
            target,
            await context(session, principal),
            session=session,
        )
        # The schema gives quote.create to people only, so a service was refused above.
        if principal.user_id is None:  # pragma: no cover
            raise Problem(403, ProblemType.FORBIDDEN, "quote.create is for people")
        quotes = QuoteService(session)
        if new.seller_id is not None and not await quotes.is_seller(
            principal.tenant_id, new.seller_id
        ):
            raise Problem(
                422,
                ProblemType.INVALID_REQUEST,
                "seller_id is not a seller of your organisation",
            )
        quote = await quotes.create(
            tenant_id=principal.tenant_id,
            buyer_id=principal.user_id,
            title=new.title,
            description=new.description,
            currency=new.currency,
            sensitivity=new.sensitivity,
            items=[LineItem(i.description, i.quantity, i.unit_price_minor) for i in new.items],
            seller_id=new.seller_id,
        )
        return await shown(session, quote)

    @router.patch("/api/quotes/{quote_id}", openapi_extra=declares(QuoteAction.QUOTE_UPDATE))
    async def update_quote(
        principal: Caller, session: Session, quote_id: uuid.UUID, change: QuoteChange
    ) -> dict[str, Any]:
        quote = await load(session, principal, QuoteAction.QUOTE_UPDATE, quote_id)
        await _in_status(
            QuoteService(session).update(quote, title=change.title, description=change.description)
        )
        return await shown(session, quote)

    @router.delete(
        "/api/quotes/{quote_id}",
        status_code=204,
        openapi_extra=declares(QuoteAction.QUOTE_DELETE),
    )
    async def delete_quote(principal: Caller, session: Session, quote_id: uuid.UUID) -> Response:
        quote = await load(session, principal, QuoteAction.QUOTE_DELETE, quote_id)
        await _in_status(QuoteService(session).delete(quote))
        return Response(status_code=204)

    @router.post("/api/quotes/bulk-delete", openapi_extra=declares(QuoteAction.QUOTE_DELETE))
    async def bulk_delete(principal: Caller, session: Session, request: QuoteIds) -> dict[str, Any]:
        """Delete several drafts; each id is authorized on its own, and refusals are listed."""
        deleted, refused = [], []
        quotes = QuoteService(session)
        ctx = await context(session, principal)
        for quote_id in dict.fromkeys(request.ids):
            quote = await quotes.get(principal.tenant_id, quote_id, for_update=True)
            decision = await authorizer.authorize(
                principal,
                QuoteAction.QUOTE_DELETE,
                _target(quote, quote_id),
                ctx,
                session=session,
                deny_apart=False,  # the request goes on: its transaction commits
            )
            if quote is None or not decision.allowed or quote.status != QuoteStatus.DRAFT:
                refused.append(str(quote_id))
                continue
            await quotes.delete(quote)
            deleted.append(str(quote_id))
        return {"deleted": deleted, "refused": refused}

    @router.post("/api/quotes/{quote_id}/submit", openapi_extra=declares(QuoteAction.QUOTE_SUBMIT))
    async def submit_quote(
        principal: Caller, session: Session, quote_id: uuid.UUID, answer: ProposalIn | None = None
    ) -> dict[str, Any]:
        """The seller's answer; the body, `{"proposal": "..."}`, is optional."""
        quote = await load(session, principal, QuoteAction.QUOTE_SUBMIT, quote_id)
        seller = principal.user_id
        if seller is None:  # pragma: no cover - the schema gives quote.submit to people
            raise Problem(403, ProblemType.FORBIDDEN, "quote.submit is for people")
        proposal = answer.proposal if answer is not None else None
        await _in_status(QuoteService(session).submit(quote, seller, proposal))
        return await shown(session, quote)

    @router.post("/api/quotes/{quote_id}/accept", openapi_extra=declares(QuoteAction.QUOTE_ACCEPT))
    async def accept_quote(
        principal: Caller, session: Session, quote_id: uuid.UUID
    ) -> dict[str, Any]:
        quote = await load(session, principal, QuoteAction.QUOTE_ACCEPT, quote_id)
        await _in_status(QuoteService(session).accept(quote))
        return await shown(session, quote)

    return router


async def _in_status(work: Any) -> Any:
    try:
        return await work
    except WrongStatusError as exc:
        raise Problem(409, ProblemType.WRONG_STATUS, str(exc)) from None


def _parse_ids(raw: str) -> list[uuid.UUID]:
    parts = [p for p in raw.split(",") if p]
    if not parts or len(parts) > MAX_IDS:
        raise Problem(422, ProblemType.INVALID_REQUEST, f"give 1 to {MAX_IDS} ids")
    try:
        return [uuid.UUID(p) for p in parts]
    except ValueError:
        raise Problem(422, ProblemType.INVALID_REQUEST, "ids must be UUIDs") from None
