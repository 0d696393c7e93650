"""The quote app's demo data (`QUOTES.demo`): its people and a few sample quotes per tenant,
so the app is never empty: requests waiting for a seller, a proposal waiting for its buyer,
and one quote the seller answered and the buyer accepted, whose deposit Finance can charge
and the buyer pay (DESIGN: "each tenant has at least one quote in status `accepted` with its
deposit due and unpaid")."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.apps import AppDemo
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.models import User
from ramparts.identity.services import TenantRecord
from ramparts.quotes.models import Quote, Sensitivity
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.quotes.services import LineItem, QuoteService

__all__ = ["QUOTES_DEMO", "SAMPLE_QUOTES", "SampleQuote"]


@dataclass(frozen=True)
class SampleQuote:
    """A demo quote: who asks (a demo user's local part), what, and how far it got: with a
    `seller`, that seller answered it (with `proposal`), and `accepted` the buyer took it."""

    buyer: str
    title: str
    sensitivity: Sensitivity
    items: tuple[LineItem, ...]
    seller: str | None = None
    proposal: str | None = None
    accepted: bool = False


# Requests open to the seller, a proposal waiting for the buyer, and an accepted quote. The
# accepted one totals 8,010.00: its deposit is a sum a test card pays, in the sandbox and at
# Stripe.
SAMPLE_QUOTES: tuple[SampleQuote, ...] = (
    SampleQuote(
        "buyer",
        "Office chairs for the new floor",
        Sensitivity.INTERNAL,
        (LineItem("Ergonomic chair", 40, 18_900), LineItem("Delivery and assembly", 1, 45_000)),
        seller="seller",
        accepted=True,
    ),
    SampleQuote(
        "buyer",
        "Annual laptop refresh",
        Sensitivity.CONFIDENTIAL,
        (LineItem("14-inch laptop", 25, 129_900), LineItem("Three-year warranty", 25, 14_900)),
    ),
    SampleQuote(
        "buyer2",
        "Catering for the partner summit",
        Sensitivity.PUBLIC,
        (LineItem("Lunch per guest", 120, 2_450),),
    ),
    SampleQuote(
        "buyer",
        "Standing desks for the design team",
        Sensitivity.INTERNAL,
        (LineItem("Electric standing desk", 8, 54_000),),
        seller="seller",
        proposal="We are pleased to offer 8 electric standing desks at 540.00 each, "
        "delivered and assembled within three weeks.\n\nValid for 30 days; a deposit is due "
        "on acceptance.",
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
    """Each sample quote once: one whose title the tenant has already is left alone (so a
    re-run adds only samples added since, and keeps what people did with the others)."""
    currency = "EUR" if tenant.region == "eu" else "USD"
    async with owner_db.tenant_session(tenant.id) as session:
        # Explicit tenant filters: the owner may be a superuser, which RLS does not confine.
        there = set(await session.scalars(select(Quote.title).where(Quote.tenant_id == tenant.id)))
        quotes = QuoteService(session)
        for sample in SAMPLE_QUOTES:
            if sample.title in there:
                continue
            quote = await quotes.create(
                tenant_id=tenant.id,
                buyer_id=await _user_id(session, tenant, sample.buyer),
                title=sample.title,
                currency=currency,
                items=sample.items,
                sensitivity=sample.sensitivity,
            )
            if sample.seller is not None:  # the way the app's routes take it
                seller = await _user_id(session, tenant, sample.seller)
                await quotes.submit(quote, seller, sample.proposal)
                if sample.accepted:
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
