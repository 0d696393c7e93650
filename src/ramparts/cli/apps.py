"""`ramparts apps`: the apps installed beside the runtime, and which ones it serves."""

from __future__ import annotations

import json
from collections.abc import Iterable

import typer
from rich.table import Table

from ramparts.apps import App, installed_apps, selected_apps
from ramparts.cli.common import JsonOption, console
from ramparts.config import load_settings

__all__ = ["apps_app", "shared_roles"]

apps_app = typer.Typer(help="Apps plugged into the runtime (ramparts.apps).", no_args_is_help=True)


@apps_app.command("list")
def apps_list(as_json: JsonOption = False) -> None:
    """Every installed app (its `ramparts.apps` entry point), whether RAMPARTS_APPS serves
    it, and whether it is a default one (served when RAMPARTS_APPS is unset)."""
    served = {app.name for app in selected_apps(load_settings().apps)}
    found = installed_apps()
    shared = shared_roles(a for a in found.values() if a.name in served)
    if as_json:
        rows = [
            {
                "name": a.name,
                "title": a.title,
                "roles": list(a.roles),
                "served": a.name in served,
                "default": a.default,
            }
            for a in found.values()
        ]
        print(json.dumps({"apps": rows, "shared_roles": shared}))
        return
    table = Table("app", "served", "default", "roles", "title")
    for a in found.values():
        table.add_row(
            a.name,
            "yes" if a.name in served else "no",
            "yes" if a.default else "no",
            ", ".join(a.roles),
            a.title,
        )
    console.print(table)
    for role, apps in shared.items():
        # Roles are the tenant's: whoever holds one holds it in every app that declares it.
        console.print(f"role {role} is shared by {', '.join(apps)}: it carries both apps' rights")


def shared_roles(apps: Iterable[App]) -> dict[str, list[str]]:
    """Each role that two or more of `apps` declare, with those apps."""
    declaring: dict[str, list[str]] = {}
    for app in apps:
        for role in app.roles:
            declaring.setdefault(role, []).append(app.name)
    return {role: names for role, names in sorted(declaring.items()) if len(names) > 1}
