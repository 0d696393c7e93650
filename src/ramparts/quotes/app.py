"""The vendor-quote app, as it plugs into the runtime (`ramparts.apps`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter

from ramparts.apps import App, AppServices
from ramparts.quotes import views
from ramparts.quotes.demo import QUOTES_DEMO
from ramparts.quotes.roles import ROLES
from ramparts.quotes.tools import register_quote_tools

__all__ = ["QUOTES"]


def _routers(services: AppServices) -> Sequence[APIRouter]:
    return (views.build_router(services.bearer, services.authorizer),)


QUOTES = App(
    name="quotes",
    title="Vendor quotes: requests, AI-drafted proposals, deposits",
    roles=ROLES,
    routers=_routers,
    tools=register_quote_tools,
    # Served when RAMPARTS_APPS is unset: the runtime's own demo and docs show it.
    default=True,
    migrations=Path(__file__).resolve().parent / "migrations",
    demo=QUOTES_DEMO,
)
