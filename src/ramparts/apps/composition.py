"""What the runtime composes from the served apps: routes, Cedar, roles, migration branches
and encrypted columns."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute

from ramparts.apps.contract import App, AppError, AppServices
from ramparts.crypto.sealing import EncryptedColumn
from ramparts.db.migrate import MigrationBranch
from ramparts.identity.models import ADMIN_ROLE
from ramparts.policy.compose import PolicyFragment, compose
from ramparts.policy.engine import PolicyEngine, read_policies

__all__ = [
    "app_roles",
    "app_routers",
    "encrypted_columns_of",
    "migration_branches",
    "policy_engine",
    "policy_fragment",
    "policy_fragments",
]


def app_routers(app: App, services: AppServices) -> list[APIRouter]:
    """`app`'s routers, refused unless each route is an API route: the permission gate is a
    dependency of API routes, so any other kind (a plain or websocket route, a mount, a
    nested router) would be served without it."""
    routers = list(app.routers(services))
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                where = getattr(route, "path", type(route).__name__)
                raise AppError(
                    f"app {app.name}: {where} is not an API route (APIRouter.get, .post, ...): "
                    "the permission gate guards API routes only"
                )
    return routers


def policy_fragment(app: App) -> PolicyFragment | None:
    """`app`'s Cedar as the runtime composes it (None: it brings none)."""
    policy = app.policy
    if policy is None:
        return None
    schema = policy.folder / "schema.cedarschema"
    if not schema.is_file():
        raise AppError(f"app {app.name}: no Cedar schema at {schema}")
    return PolicyFragment(
        name=app.name,
        namespace=policy.namespace,
        schema=schema.read_text(),
        policies=read_policies(policy.folder),
        actions=policy.actions,
        money_actions=policy.money_actions,
        money_roles=policy.money_roles,
        roles=app.roles,
        parties=policy.parties,
        snapshot=policy.folder / "decisions.json",
    )


def policy_fragments(apps: Iterable[App]) -> list[PolicyFragment]:
    return [f for f in (policy_fragment(app) for app in apps) if f is not None]


def policy_engine(apps: Iterable[App]) -> PolicyEngine:
    """The engine for the runtime's policies and `apps`' Cedar, checked as a whole
    (`ramparts.policy.compose`: a `PolicyError` says what is refused)."""
    return compose(policy_fragments(apps))


def app_roles(apps: Iterable[App]) -> frozenset[str]:
    """The roles a membership may hold when `apps` are served: `admin` and theirs."""
    return frozenset({ADMIN_ROLE, *(role for app in apps for role in app.roles)})


def migration_branches(apps: Iterable[App]) -> list[MigrationBranch]:
    """The Alembic branches of those of `apps` that bring migrations."""
    return [MigrationBranch(app.name, app.migrations) for app in apps if app.migrations]


def encrypted_columns_of(apps: Iterable[App]) -> tuple[EncryptedColumn, ...]:
    """The encrypted columns `apps` declare."""
    return tuple(column for app in apps for column in app.encrypted_columns)
