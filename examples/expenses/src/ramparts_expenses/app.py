"""The expenses app, as it plugs into the runtime (`ramparts.apps`): everything it brings is
declared here, and the runtime composes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import APIRouter
from ramparts.ai.tools import ToolRegistry
from ramparts.apps import App, AppDemo, AppPolicy, AppServices, NavLink
from ramparts.policy.matrix import ME, SOMEONE

from ramparts_expenses import pages, views
from ramparts_expenses.actions import NAMESPACE, ExpenseAction
from ramparts_expenses.demo import DEMO_USERS, seed_expenses
from ramparts_expenses.models import PAYEE_IBAN
from ramparts_expenses.roles import FINANCE, ROLES
from ramparts_expenses.tools import expense_tools

__all__ = ["EXPENSES", "HERE"]

HERE = Path(__file__).resolve().parent


def _routers(services: AppServices) -> Sequence[APIRouter]:
    return (views.build_router(services),)


def _pages(_: AppServices) -> Sequence[APIRouter]:
    return (pages.router,)


def _tools(registry: ToolRegistry, services: AppServices) -> None:
    expense_tools(services.fields)(registry)


POLICY = AppPolicy(
    namespace=NAMESPACE,
    folder=HERE / "policy",
    actions=ExpenseAction.ALL,
    money_actions=ExpenseAction.MONEY,
    money_roles=(FINANCE,),
    # The decision matrix's claims: someone else's of our tenant, the caller's own, and one
    # of another tenant.
    parties={
        "Expense": {
            "same": {"employee": SOMEONE},
            "own": {"employee": ME},
            "other": {"employee": SOMEONE},
        }
    },
)

EXPENSES = App(
    name="expenses",
    title="Expenses: claims, approvals, reimbursements",
    roles=ROLES,
    routers=_routers,
    tools=_tools,
    policy=POLICY,
    migrations=HERE / "migrations",
    encrypted_columns=(PAYEE_IBAN,),
    demo=AppDemo(users=DEMO_USERS, seed=seed_expenses),
    pages=_pages,
    templates=HERE / "templates",
    nav=(NavLink("Expenses", "/app/expenses", ROLES),),
    drills="ramparts_expenses.drills:DRILLS",
)
