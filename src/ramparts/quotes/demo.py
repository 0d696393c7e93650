"""The quote app's demo data (`QUOTES.demo`): its people and a few sample quotes per tenant,
so the app is never empty: drafts waiting for a seller, and one quote the seller answered and
the buyer accepted, whose deposit Finance can charge and the buyer pay (DESIGN: "each tenant
has at least one quote in status `accepted` with its deposit due and unpaid")."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.apps import AppDemo
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.models import User
from ramparts.identity.services import TenantRecord
from ramparts.quotes.models import Quote, Sensitivity
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.quotes.services import LineItem, QuoteService

__all__ = ["QUOTES_DEMO", "SAMPLE_QUOTES"]

# Who asks (a demo user's local part), the title, sensitivity and line items; and, for a
# quote a seller answered and the buyer accepted, that seller. The accepted one totals
# 8,010.00: its deposit is a sum a test card pays, in the sandbox and at Stripe.
SAMPLE_QUOTES: tuple[tuple[str, str, Sensitivity, tuple[LineItem, ...], str | None], ...] = (
    (
        "buyer",
        "Office chairs for the new floor",
        Sensitivity.INTERNAL,
        (LineItem("Ergonomic chair", 40, 18_900), LineItem("Delivery and assembly", 1, 45_000)),
        "seller",
    ),
    (
        "buyer",
        "Annual laptop refresh",
        Sensitivity.CONFIDENTIAL,
        (LineItem("14-inch laptop", 25, 129_900), LineItem("Three-year warranty", 25, 14_900)),
        None,
    ),
    (
        "buyer2",
        "Catering for the partner summit",
        Sensitivity.PUBLIC,
        (LineItem("Lunch per guest", 120, 2_450),),
        None,
    ),
)


async def _user_id(session: AsyncSession, tenant: TenantRecord, local: str) -> uuid.UUID:
    username = f"{local}@{tenant.slug}.test"
    found = await session.scalar(
        select(User.id).where(User.tenant_id == tenant.id, User.username == username)
    )
    if found is None:
        raise LookupError(f"demo user {username} missing")
    return found


async def seed_sample_quotes(owner_db: Database, tenant: TenantRecord, _: SealedFields) -> None:
    """The sample quotes, once: a tenant that has quotes already is left alone."""
    currency = "EUR" if tenant.region == "eu" else "USD"
    async with owner_db.tenant_session(tenant.id) as session:
        # Explicit tenant filters: the owner may be a superuser, which RLS does not confine.
        if await session.scalar(
            select(func.count()).select_from(Quote).where(Quote.tenant_id == tenant.id)
        ):
            return
        quotes = QuoteService(session)
        for buyer, title, sensitivity, items, seller in SAMPLE_QUOTES:
            quote = await quotes.create(
                tenant_id=tenant.id,
                buyer_id=await _user_id(session, tenant, buyer),
                title=title,
                currency=currency,
                items=items,
                sensitivity=sensitivity,
            )
            if seller is not None:  # the way the app's routes take it: answered, accepted
                await quotes.submit(quote, await _user_id(session, tenant, seller))
                await quotes.accept(quote)


QUOTES_DEMO = AppDemo(
    users=(
        ("buyer", "Buyer", (BUYER,)),
        # A second buyer shows ownership: neither buyer sees or changes the other's requests.
        ("buyer2", "Buyer (another team)", (BUYER,)),
        ("seller", "Seller", (SELLER,)),
        ("finance", "Finance", (FINANCE,)),
        # A second person of finance: an assistant's money call needs someone else's approval.
        ("finance2", "Finance (second approver)", (FINANCE,)),
    ),
    seed=seed_sample_quotes,
)
