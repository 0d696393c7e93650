"""What an app gives the drills (its `App.drills`): its tabletop scenario, its red-team surface
and its own conformance checks. The runtime's drills know no app: they play what each installed
app declares here, against the instance over HTTP like any client."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ramparts.apps import App, AppError, selected_apps
from ramparts.config import load_settings

if TYPE_CHECKING:
    from ramparts.tabletop.conformance.checks import Outcome
    from ramparts.tabletop.target import Target

__all__ = ["AppDrills", "app_drills", "served_drills"]


@dataclass(frozen=True)
class AppDrills:
    """`tabletop` plays the app's scenario (`ramparts.tabletop.scenario`); `redteam` is where
    its attacks land (`ramparts.tabletop.redteam`); `checks` are its own live conformance
    checks by control id (a check of a control the runtime also checks adds its evidence to
    the same row, and both must pass)."""

    tabletop: Callable[..., Any] | None = None
    redteam: Any = None
    checks: Mapping[str, Callable[[Target], Outcome]] = field(default_factory=dict)


def app_drills(app: App) -> AppDrills | None:
    """The app's drills, or None when it declares none."""
    if app.drills is None:
        return None
    module, _, attribute = app.drills.partition(":")
    try:
        drills = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise AppError(f"app {app.name}: drills {app.drills!r} cannot be loaded: {exc}") from None
    if not isinstance(drills, AppDrills):
        raise AppError(f"app {app.name}: drills {app.drills!r} is not an AppDrills")
    return drills


def served_drills(target: Target) -> list[tuple[str, AppDrills]]:
    """The drills of the apps the instance serves (those its description names, else the
    apps RAMPARTS_APPS selects here), by app name."""
    served = target.description.get("apps")
    names = (
        tuple(name.strip() for name in served.split(","))
        if served
        else load_settings().apps  # an instance reached by URL: as RAMPARTS_APPS says here
    )
    found = []
    for app in selected_apps(names):
        drills = app_drills(app)
        if drills is not None:
            found.append((app.name, drills))
    return found
