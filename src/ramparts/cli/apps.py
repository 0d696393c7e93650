"""`ramparts apps`: the apps installed beside the runtime, and which ones it serves."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from ramparts.apps import installed_apps, selected_apps
from ramparts.cli.common import JsonOption, console
from ramparts.config import load_settings

__all__ = ["apps_app"]

apps_app = typer.Typer(help="Apps plugged into the runtime (ramparts.apps).", no_args_is_help=True)


@apps_app.command("list")
def apps_list(as_json: JsonOption = False) -> None:
    """Every installed app (its `ramparts.apps` entry point), whether RAMPARTS_APPS serves
    it, and whether it is a default one (served when RAMPARTS_APPS is unset)."""
    served = {app.name for app in selected_apps(load_settings().apps)}
    found = installed_apps()
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
        print(json.dumps({"apps": rows}))
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
