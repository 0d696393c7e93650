"""The App contract: how an app plugs into the Ramparts runtime.

An app is one declarative `App` object, published under the Python entry-point group
`ramparts.apps` (the entry point's name is the app's name) and chosen with `RAMPARTS_APPS`
(unset: the installed apps that say `default=True`). The runtime composes what the chosen apps
declare: their routes behind the permission gate, their tools in the assistant's registry,
their Cedar (`AppPolicy`) with the runtime's policies into one engine (`policy_engine`), their
roles, their migrations (an Alembic branch each), their encrypted columns and their demo data.
The runtime itself names no app.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from fastapi import APIRouter
from fastapi.routing import APIRoute

from ramparts.ai.tools import ToolRegistry
from ramparts.audit.services import AuditLog
from ramparts.config import APP_NAME, APPS_ENTRY_POINT_GROUP
from ramparts.crypto.sealing import EncryptedColumn, SealedFields
from ramparts.db.engine import Database
from ramparts.db.migrate import MigrationBranch
from ramparts.identity.auth import BearerAuthenticator
from ramparts.identity.models import ADMIN_ROLE
from ramparts.identity.services import TenantRecord
from ramparts.policy.compose import PolicyFragment, compose
from ramparts.policy.engine import PolicyAction, PolicyEngine, read_policies
from ramparts.policy.services import Authorizer

__all__ = [
    "ENTRY_POINT_GROUP",
    "App",
    "AppDemo",
    "AppError",
    "AppPolicy",
    "AppServices",
    "DemoUser",
    "app_roles",
    "app_routers",
    "encrypted_columns_of",
    "installed_apps",
    "migration_branches",
    "policy_engine",
    "policy_fragment",
    "policy_fragments",
    "selected_apps",
]

ENTRY_POINT_GROUP = APPS_ENTRY_POINT_GROUP


class AppError(Exception):
    """An app cannot be loaded, or `RAMPARTS_APPS` names one that is not installed."""


@dataclass(frozen=True)
class AppServices:
    """What the runtime hands an app's route and tool factories: the services its own
    routes use too. `fields` seals and opens encrypted columns under the tenant's data keys
    (the app's `encrypted_columns`, which rotation then covers)."""

    database: Database
    bearer: BearerAuthenticator
    authorizer: Authorizer
    audit: AuditLog
    fields: SealedFields


@dataclass(frozen=True)
class AppPolicy:
    """An app's Cedar: `folder` holds `schema.cedarschema` (one `namespace <namespace>
    { ... }` block), `policies/*.cedar` and the reviewed `decisions.json`.

    `actions` are every action its routes and tools ask for (all of `namespace`);
    `money_actions` those that move money: the runtime lets only `money_roles` take them, and
    never from the assistant. `parties` are the decision matrix's dimensions, per resource type
    (unqualified): relation name → {party attribute: `ME` | `SOMEONE` | None} (from
    `ramparts.policy.matrix`; None: the resource has no such party); the relation called
    `other` is a resource of another tenant, every other one of the caller's. A resource type
    without relations is decided as `same` and `other` tenant. Their attribute names are
    what the runtime knows of a resource's parties (its attributes of type User): the
    assistant offers a tool on a resource where the caller is every party, and hands a
    requester's place to the approver."""

    namespace: str
    folder: Path
    actions: tuple[PolicyAction, ...]
    money_actions: tuple[PolicyAction, ...] = ()
    money_roles: tuple[str, ...] = ()
    parties: Mapping[str, Mapping[str, Mapping[str, str | None]]] = field(default_factory=dict)


def _no_routers(_: AppServices) -> Sequence[APIRouter]:
    return ()


def _no_tools(_: ToolRegistry, __: AppServices) -> None:
    return None


#: Who a demo user is: the local part of `<local>@<tenant>.test`, a display name, roles.
DemoUser = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class AppDemo:
    """An app's demo data (`ramparts seed-demo`, dev only). The runtime creates each user in
    every demo tenant (with the roles of every app that names the same local part), then
    calls `seed` with the owner's database, the tenant and the runtime's sealed fields (to
    write the app's encrypted columns); a seed must be safe to re-run."""

    users: tuple[DemoUser, ...] = ()
    seed: Callable[[Database, TenantRecord, SealedFields], Awaitable[None]] | None = None


@dataclass(frozen=True)
class App:
    """One app, as its package declares it.

    `routers` builds the app's API routers from the runtime's services; every route must
    declare its Cedar action (`ramparts.routes.declares`), and the permission gate stands in
    front of it like any other. `tools` registers the app's assistant tools (given the same
    services), which the
    assistant offers to whoever Cedar allows. `roles` are the roles the app's people hold
    (besides the runtime's own, `admin`). `policy` is its Cedar (`AppPolicy`); an app without
    one may declare no action of its own. `default`: served when RAMPARTS_APPS is unset.
    `migrations` is the app's Alembic versions folder: a branch labelled with the app's name,
    its first revision depending on a runtime revision. `encrypted_columns` are the app's
    sealed columns, which key rotation and tenant shredding then cover. `demo`: its demo
    users and data.
    """

    name: str
    title: str
    roles: tuple[str, ...] = ()
    routers: Callable[[AppServices], Sequence[APIRouter]] = _no_routers
    tools: Callable[[ToolRegistry, AppServices], None] = _no_tools
    policy: AppPolicy | None = None
    default: bool = False
    migrations: Path | None = None
    encrypted_columns: tuple[EncryptedColumn, ...] = ()
    demo: AppDemo | None = None

    def __post_init__(self) -> None:
        if not APP_NAME.fullmatch(self.name):
            raise AppError(f"app name {self.name!r}: lowercase letters, digits and _, at most 32")
        if not self.title.strip():
            raise AppError(f"app {self.name}: a title is required")
        for role in self.roles:
            if not APP_NAME.fullmatch(role) or role == ADMIN_ROLE:
                raise AppError(
                    f"app {self.name}: role {role!r} must be lowercase letters, digits and _ "
                    f"(at most 32), and not the runtime's own {ADMIN_ROLE!r}"
                )
        if self.demo is not None:
            for local, _, roles in self.demo.users:
                unknown = sorted(set(roles) - {*self.roles, ADMIN_ROLE})
                if unknown:
                    raise AppError(
                        f"app {self.name}: demo user {local!r} holds {', '.join(unknown)}, "
                        "not a role of the app"
                    )


def _load(entry: EntryPoint) -> App:
    try:
        app = entry.load()
    except Exception as exc:
        # Named by its kind only: an app's own message may hold what it was configured with
        # (a URL with its password); the traceback stays with the exception.
        raise AppError(f"app {entry.name}: cannot be loaded ({type(exc).__name__})") from exc
    if not isinstance(app, App):
        raise AppError(f"app {entry.name}: {entry.value} is not a ramparts.apps.App")
    if app.name != entry.name:
        raise AppError(f"app {entry.name}: its entry point names an App called {app.name!r}")
    return app


def _entries(found: Iterable[EntryPoint] | None) -> dict[str, EntryPoint]:
    entries: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP) if found is None else found:
        if entry.name in entries:
            raise AppError(f"two installed packages publish an app called {entry.name!r}")
        entries[entry.name] = entry
    return dict(sorted(entries.items()))


def installed_apps(found: Iterable[EntryPoint] | None = None) -> dict[str, App]:
    """Every app installed in this environment, by name (each one imported)."""
    return {name: _load(entry) for name, entry in _entries(found).items()}


def selected_apps(
    names: Sequence[str] | None, found: Iterable[EntryPoint] | None = None
) -> list[App]:
    """The apps `RAMPARTS_APPS` names, in its order; only those are imported. `None` (the
    variable unset): every installed app that says `default=True`, by name."""
    if names is None:
        return [app for app in installed_apps(found).values() if app.default]
    available = _entries(found)
    missing = [name for name in names if name not in available]
    if missing:
        have = ", ".join(available) or "none"
        raise AppError(
            f"RAMPARTS_APPS names {', '.join(missing)}, which is not installed (installed: {have})"
        )
    if len(set(names)) != len(names):
        raise AppError("RAMPARTS_APPS names an app twice")
    return [_load(available[name]) for name in names]


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
