"""Quote operations. Callers pass a tenant session; RLS confines every statement to it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.quotes.models import Quote, QuoteItem, Sensitivity

__all__ = ["LineItem", "QuoteService"]


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
