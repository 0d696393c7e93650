"""Quote operations. Callers pass a tenant session; RLS confines every statement to it, and
every query also names the tenant, so a forgotten filter and a missing policy are each caught
by the other.

Inside a tenant a quote has parties: the buyer who asked for it, and the seller who answers it
(named by the buyer when asking, or the first seller to answer; none: open to every seller).
Cedar decides what each may do with it (`policy/policies/10-roles.cedar`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, false, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.identity.auth import Principal
from ramparts.identity.models import ADMIN_ROLE, Membership
from ramparts.policy.engine import Target
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote, QuoteItem, QuoteStatus, Sensitivity
from ramparts.quotes.roles import BUYER, FINANCE, SELLER

__all__ = [
    "LineItem",
    "Party",
    "QuoteService",
    "QuoteWithItems",
    "WrongStatusError",
    "quote_target",
]

# The tables, for the reads that need no ORM entities (SQLAlchemy Core).
QUOTES = Quote.__table__
ITEMS = QuoteItem.__table__
#: Roles whose permits in 10-roles.cedar read every quote of their tenant.
READS_EVERY_QUOTE = frozenset({FINANCE, ADMIN_ROLE})


class WrongStatusError(Exception):
    """The quote is not in a status that allows this."""


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_price_minor: int


@dataclass(frozen=True, slots=True)
class QuoteWithItems:
    """A quote as read, with its line items in order: plain data, no ORM identity."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    buyer_id: uuid.UUID
    seller_id: uuid.UUID | None
    title: str
    description: str
    status: QuoteStatus
    currency: str
    sensitivity: Sensitivity
    items: tuple[LineItem, ...]
    #: The seller's proposal text, once sent (a vendor's words: untrusted to the assistant).
    proposal: str | None = None

    @property
    def total_minor(self) -> int:
        return sum(i.quantity * i.unit_price_minor for i in self.items)


@dataclass(frozen=True)
class Party:
    """The quotes a person takes part in: as a buyer those they asked for, as a seller those
    open to every seller or assigned to them. A listing looks only at these (indexed), so a
    page is filled with quotes the person may read; Cedar still judges each one."""

    user_id: uuid.UUID | None
    buyer: bool
    seller: bool

    @classmethod
    def of(cls, principal: Principal) -> Party | None:
        """The caller's share of the tenant's quotes; None when a role reads them all."""
        roles = set(principal.roles)
        if roles & READS_EVERY_QUOTE:
            return None
        return cls(principal.user_id, BUYER in roles, SELLER in roles)

    def condition(self) -> ColumnElement[bool]:
        if self.user_id is None:  # a service is never a party to a quote
            return false()
        shares = []
        if self.buyer:
            shares.append(QUOTES.c.buyer_id == self.user_id)
        if self.seller:
            shares.append(or_(QUOTES.c.seller_id.is_(None), QUOTES.c.seller_id == self.user_id))
        return or_(*shares) if shares else false()


def quote_target(quote: Quote | QuoteWithItems) -> Target:
    """The quote as Cedar sees it: its tenant, sensitivity and parties."""
    parties = [("buyer", str(quote.buyer_id))]
    if quote.seller_id is not None:  # none: open to every seller
        parties.append(("seller", str(quote.seller_id)))
    return Target(
        QuoteAction.QUOTE_READ.entity_type,
        str(quote.id),
        str(quote.tenant_id),
        quote.sensitivity.value,
        parties=tuple(parties),
    )


class QuoteService:
    """Creates quotes within the tenant of the session it is given."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        *,
        tenant_id: uuid.UUID,
        buyer_id: uuid.UUID,
        title: str,
        currency: str,
        items: Sequence[LineItem],
        description: str = "",
        sensitivity: Sensitivity = Sensitivity.INTERNAL,
        seller_id: uuid.UUID | None = None,
    ) -> Quote:
        """A draft request; with `seller_id` (check it with `is_seller`) only that seller
        may answer it, otherwise every seller of the tenant may."""
        quote = Quote(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            buyer_id=buyer_id,
            seller_id=seller_id,
            title=title,
            description=description,
            currency=currency,
            sensitivity=sensitivity,
        )
        self._session.add(quote)
        await self._session.flush()
        self._session.add_all(
            QuoteItem(
                id=uuid.uuid4(),
                tenant_id=tenant_id,
                quote_id=quote.id,
                position=n,
                description=item.description,
                quantity=item.quantity,
                unit_price_minor=item.unit_price_minor,
            )
            for n, item in enumerate(items, start=1)
        )
        await self._session.flush()
        return quote

    async def get(
        self, tenant_id: uuid.UUID, quote_id: uuid.UUID, *, for_update: bool = False
    ) -> Quote | None:
        """The quote; `for_update` locks it until the transaction ends, so a status check
        and the change that depends on it cannot interleave with another request's."""
        query = select(Quote).where(Quote.tenant_id == tenant_id, Quote.id == quote_id)
        return await self._session.scalar(query.with_for_update() if for_update else query)

    async def listing(
        self,
        tenant_id: uuid.UUID,
        *,
        status: QuoteStatus | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        party: Party | None = None,
        limit: int = 100,
    ) -> list[QuoteWithItems]:
        """The tenant's quotes with their items, oldest first, in one statement; with `party`,
        only those it takes part in."""
        query = _WITH_ITEMS.where(QUOTES.c.tenant_id == tenant_id)
        if party is not None:
            query = query.where(party.condition())
        if status is not None:
            query = query.where(QUOTES.c.status == status)
        if ids is not None:
            query = query.where(QUOTES.c.id.in_(ids))
        rows = await self._session.execute(query.order_by(QUOTES.c.created_at).limit(limit))
        return [_with_items(row) for row in rows]

    async def read(self, tenant_id: uuid.UUID, quote_id: uuid.UUID) -> QuoteWithItems | None:
        """One quote with its items, in one statement."""
        found = await self.listing(tenant_id, ids=[quote_id], limit=1)
        return found[0] if found else None

    async def is_seller(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether the user is a seller of the tenant (a quote may be assigned to them)."""
        found = await self._session.scalar(
            select(Membership.user_id).where(
                Membership.tenant_id == tenant_id,
                Membership.user_id == user_id,
                Membership.role == SELLER,
            )
        )
        return found is not None

    async def update(
        self, quote: Quote, *, title: str | None = None, description: str | None = None
    ) -> Quote:
        _require(quote, QuoteStatus.DRAFT)
        if title is not None:
            quote.title = title
        if description is not None:
            quote.description = description
        await self._session.flush()
        return quote

    async def delete(self, quote: Quote) -> None:
        _require(quote, QuoteStatus.DRAFT)
        tenant = quote.tenant_id
        await self._session.execute(
            delete(QuoteItem).where(QuoteItem.tenant_id == tenant, QuoteItem.quote_id == quote.id)
        )
        await self._session.execute(
            delete(Quote).where(Quote.tenant_id == tenant, Quote.id == quote.id)
        )

    async def submit(
        self, quote: Quote, seller_id: uuid.UUID, proposal: str | None = None
    ) -> Quote:
        """A seller answers a buyer's request: the quote now carries the seller's offer (and
        its proposal text, when one is sent) and is assigned to that seller."""
        _require(quote, QuoteStatus.DRAFT)
        quote.seller_id, quote.status = seller_id, QuoteStatus.SUBMITTED
        quote.proposal = proposal
        await self._session.flush()
        return quote

    async def accept(self, quote: Quote) -> Quote:
        _require(quote, QuoteStatus.SUBMITTED)
        quote.status = QuoteStatus.ACCEPTED
        await self._session.flush()
        return quote


#: A quote's items as a JSON array of [description, quantity, unit_price_minor], in order.
_ITEMS = (
    select(
        func.coalesce(
            func.json_agg(
                aggregate_order_by(
                    func.json_build_array(
                        ITEMS.c.description, ITEMS.c.quantity, ITEMS.c.unit_price_minor
                    ),
                    ITEMS.c.position,
                )
            ),
            literal_column("'[]'::json"),
        )
    )
    .where(ITEMS.c.tenant_id == QUOTES.c.tenant_id, ITEMS.c.quote_id == QUOTES.c.id)
    .scalar_subquery()
)
_WITH_ITEMS = select(
    QUOTES.c.id,
    QUOTES.c.tenant_id,
    QUOTES.c.buyer_id,
    QUOTES.c.seller_id,
    QUOTES.c.title,
    QUOTES.c.description,
    QUOTES.c.status,
    QUOTES.c.currency,
    QUOTES.c.sensitivity,
    QUOTES.c.proposal,
    _ITEMS.label("items"),
)


def _with_items(row: Row[*tuple[Any, ...]]) -> QuoteWithItems:
    return QuoteWithItems(
        id=row.id,
        tenant_id=row.tenant_id,
        buyer_id=row.buyer_id,
        seller_id=row.seller_id,
        title=row.title,
        description=row.description,
        status=row.status,
        currency=row.currency,
        sensitivity=row.sensitivity,
        items=tuple(LineItem(*item) for item in row.items),
        proposal=row.proposal,
    )


def _require(quote: Quote, status: QuoteStatus) -> None:
    if quote.status != status:
        raise WrongStatusError(f"the quote is {quote.status}, not {status}")
