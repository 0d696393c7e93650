"""The vendor-quote app, as it plugs into the runtime (`ramparts.apps`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter

from ramparts.apps import App, AppPolicy, AppServices, NavLink
from ramparts.policy.matrix import ME, SOMEONE
from ramparts.quotes import approval_views, books_views, finance_pages, payment_views, views
from ramparts.quotes.actions import NAMESPACE, QuoteAction
from ramparts.quotes.demo import QUOTES_DEMO
from ramparts.quotes.pages import build_pages
from ramparts.quotes.roles import BUYER, FINANCE, ROLES, SELLER
from ramparts.quotes.tools import register_quote_tools

__all__ = ["QUOTES"]

# The decision matrix's quotes of our tenant, by the caller's place in them: `same` is
# someone else's (another buyer asked, another seller answers), `requested` we asked for,
# `assigned` we answer, `open` awaits any seller; `other` is another tenant's. Their
# attributes (buyer, seller) are the quote's parties.
QUOTE_PARTIES: dict[str, dict[str, str | None]] = {
    "same": {"buyer": SOMEONE, "seller": SOMEONE},
    "requested": {"buyer": ME, "seller": SOMEONE},
    "assigned": {"buyer": SOMEONE, "seller": ME},
    "open": {"buyer": SOMEONE, "seller": None},
    "other": {"buyer": SOMEONE, "seller": SOMEONE},
}

# A payment of our tenant is `paying` (we are its payer) or `same` (someone else's); `other`
# is another tenant's.
PAYMENT_PARTIES: dict[str, dict[str, str | None]] = {
    "same": {"payer": SOMEONE},
    "paying": {"payer": ME},
    "other": {"payer": SOMEONE},
}


def _routers(services: AppServices) -> Sequence[APIRouter]:
    return (
        views.build_router(services.bearer, services.authorizer),
        approval_views.build_router(services),
        payment_views.build_router(services),
        books_views.build_router(services),
    )


QUOTES = App(
    name="quotes",
    title="Vendor quotes: requests, AI-drafted proposals, deposits",
    roles=ROLES,
    routers=_routers,
    tools=register_quote_tools,
    policy=AppPolicy(
        namespace=NAMESPACE,
        folder=Path(__file__).resolve().parent / "policy",
        actions=QuoteAction.ALL,
        money_actions=QuoteAction.MONEY,
        money_roles=(FINANCE,),
        parties={"Quote": QUOTE_PARTIES, "Payment": PAYMENT_PARTIES},
    ),
    # Served when RAMPARTS_APPS is unset: the runtime's own demo and docs show it.
    default=True,
    migrations=Path(__file__).resolve().parent / "migrations",
    demo=QUOTES_DEMO,
    drills="ramparts.quotes.drills:DRILLS",
    pages=lambda services: (*build_pages(services), finance_pages.router),
    templates=Path(__file__).resolve().parent / "templates",
    nav=(
        NavLink("Quotes", "/app/quotes", (BUYER, SELLER, FINANCE)),
        NavLink("Request a quote", "/app/quotes/new", (BUYER,)),
        *finance_pages.NAV,
    ),
)
