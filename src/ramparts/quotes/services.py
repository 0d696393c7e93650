"""Quote operations. Callers pass a tenant session; RLS confines every statement to it, and
every query also names the tenant, so a forgotten filter and a missing policy are each caught
by the other."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.quotes.models import Quote, QuoteItem, QuoteStatus, Sensitivity

__all__ = ["LineItem", "QuoteService", "WrongStatusError"]


class WrongStatusError(Exception):
    """The quote is not in a status that allows this."""


@dataclass(frozen=True)
class LineItem:
    description: str
    quantity: int
    unit_price_minor: int


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
    ) -> Quote:
        quote = Quote(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            buyer_id=buyer_id,
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

    async def find(
        self,
        tenant_id: uuid.UUID,
        *,
        status: QuoteStatus | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        limit: int = 100,
    ) -> list[Quote]:
        query = select(Quote).where(Quote.tenant_id == tenant_id)
        if status is not None:
            query = query.where(Quote.status == status)
        if ids is not None:
            query = query.where(Quote.id.in_(ids))
        return list(await self._session.scalars(query.order_by(Quote.created_at).limit(limit)))

    async def items(self, quote: Quote) -> list[QuoteItem]:
        return list(
            await self._session.scalars(
                select(QuoteItem)
                .where(QuoteItem.tenant_id == quote.tenant_id, QuoteItem.quote_id == quote.id)
                .order_by(QuoteItem.position)
            )
        )

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

    async def submit(self, quote: Quote, seller_id: uuid.UUID) -> Quote:
        """A seller answers a buyer's request: the quote now carries the seller's offer."""
        _require(quote, QuoteStatus.DRAFT)
        quote.seller_id, quote.status = seller_id, QuoteStatus.SUBMITTED
        await self._session.flush()
        return quote

    async def accept(self, quote: Quote) -> Quote:
        _require(quote, QuoteStatus.SUBMITTED)
        quote.status = QuoteStatus.ACCEPTED
        await self._session.flush()
        return quote


def _require(quote: Quote, status: QuoteStatus) -> None:
    if quote.status != status:
        raise WrongStatusError(f"the quote is {quote.status}, not {status}")
