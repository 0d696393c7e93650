"""What an app declares: one `App` object, and the services the runtime hands it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter

from ramparts.ai.tools import ToolRegistry
from ramparts.audit.services import AuditLog
from ramparts.config import APP_NAME, Settings
from ramparts.crypto.sealing import EncryptedColumn, SealedFields
from ramparts.db.engine import Database
from ramparts.identity.auth import BearerAuthenticator
from ramparts.identity.models import ADMIN_ROLE
from ramparts.identity.services import TenantRecord
from ramparts.payments.connection import PspConnection
from ramparts.policy.engine import PolicyAction
from ramparts.policy.services import Authorizer

__all__ = ["App", "AppDemo", "AppError", "AppPolicy", "AppServices", "DemoUser", "NavLink"]


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
    #: The PSP adapter, made on first use (`psp()`; 503 problem when payments are not set up).
    psp: PspConnection
    #: The process's settings (its public URL, the PSP's keys, the payment velocity limits).
    settings: Settings
    #: A small pool for short transactions that must outlive the request's own, which rolls
    #: back on an error answer (a declined payment attempt, which still counts).
    apart: Database


@dataclass(frozen=True)
class AppPolicy:
    """An app's Cedar: `folder` holds `schema.cedarschema` (one `namespace <namespace>
    { ... }` block), `policies/*.cedar` and the reviewed `decisions.json`.

    `actions` are every action its routes and tools ask for (all of `namespace`);
    `money_actions` those that move money: the runtime lets only `money_roles` take them, and
    on the assistant's word only as a request held for a second person's approval. `parties`
    are the decision matrix's dimensions, per resource type
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


@dataclass(frozen=True)
class NavLink:
    """A link of the web app's navigation, shown to people holding any of `roles` (none:
    everyone). It only shows the way: the page, and the API it calls, decide."""

    label: str
    path: str
    roles: tuple[str, ...] = ()

    def shown_to(self, roles: Sequence[str]) -> bool:
        return not self.roles or bool(set(self.roles) & set(roles))


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
    users and data. `drills`: where its part of the tabletop, red team and conformance drills
    lives, as `module:attribute` naming a `ramparts.tabletop.drills.AppDrills` (imported only
    by the drills, which play it against a running instance).
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
    pages: Callable[[AppServices], Sequence[APIRouter]] = _no_routers
    templates: Path | None = None
    nav: tuple[NavLink, ...] = ()
    drills: str | None = None

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
