"""Finding apps: the installed ones (entry-point group `ramparts.apps`) and the ones
`RAMPARTS_APPS` serves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib.metadata import EntryPoint, entry_points

from ramparts.apps.contract import App, AppError
from ramparts.config import APPS_ENTRY_POINT_GROUP

__all__ = ["ENTRY_POINT_GROUP", "installed_apps", "selected_apps"]

ENTRY_POINT_GROUP = APPS_ENTRY_POINT_GROUP


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
