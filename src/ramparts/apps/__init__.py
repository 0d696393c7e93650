"""The App contract: how an app plugs into the Ramparts runtime.

An app is one declarative `App` object, published under the Python entry-point group
`ramparts.apps` (the entry point's name is the app's name) and chosen with `RAMPARTS_APPS`
(default: the quote app). The runtime composes what the chosen apps declare: their routes
behind the permission gate, and their tools in the assistant's registry. The runtime itself
names no app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from fastapi import APIRouter
from fastapi.routing import APIRoute

from ramparts.ai.tools import ToolRegistry
from ramparts.audit.services import AuditLog
from ramparts.config import APP_NAME
from ramparts.db.engine import Database
from ramparts.identity.auth import BearerAuthenticator
from ramparts.policy.services import Authorizer

__all__ = [
    "ENTRY_POINT_GROUP",
    "App",
    "AppError",
    "AppServices",
    "app_routers",
    "installed_apps",
    "selected_apps",
]

ENTRY_POINT_GROUP = "ramparts.apps"


class AppError(Exception):
    """An app cannot be loaded, or `RAMPARTS_APPS` names one that is not installed."""


@dataclass(frozen=True)
class AppServices:
    """What the runtime hands an app's route factory: the services every route of the
    runtime uses too."""

    database: Database
    bearer: BearerAuthenticator
    authorizer: Authorizer
    audit: AuditLog


def _no_routers(_: AppServices) -> Sequence[APIRouter]:
    return ()


def _no_tools(_: ToolRegistry) -> None:
    return None


@dataclass(frozen=True)
class App:
    """One app, as its package declares it.

    `routers` builds the app's API routers from the runtime's services; every route must
    declare its Cedar action (`ramparts.routes.declares`), and the permission gate stands in
    front of it like any other. `tools` registers the app's assistant tools, which the
    assistant offers to whoever Cedar allows. `roles` are the roles the app's people hold.
    """

    name: str
    title: str
    roles: tuple[str, ...] = ()
    routers: Callable[[AppServices], Sequence[APIRouter]] = _no_routers
    tools: Callable[[ToolRegistry], None] = _no_tools

    def __post_init__(self) -> None:
        if not APP_NAME.fullmatch(self.name):
            raise AppError(f"app name {self.name!r}: lowercase letters, digits and _, at most 32")
        if not self.title.strip():
            raise AppError(f"app {self.name}: a title is required")


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


def selected_apps(names: Sequence[str], found: Iterable[EntryPoint] | None = None) -> list[App]:
    """The apps `RAMPARTS_APPS` names, in its order; only those are imported."""
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
