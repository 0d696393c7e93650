"""`ramparts policy`: validate, diff and snapshot the Cedar policies of the runtime and of the
apps `RAMPARTS_APPS` selects.

Each command composes the runtime's Cedar with every selected app's (`ramparts.apps`). A
proposed change to one part is a folder holding its new version: the runtime's policy folder
by default, or with `--app NAME` that app's policy folder (its `policies/*.cedar`, and its
`schema.cedarschema` when the change touches the schema; otherwise the current one is used).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ramparts.apps import policy_fragments, selected_apps
from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.config import load_settings
from ramparts.policy.compose import PolicyFragment, compose
from ramparts.policy.engine import POLICY_DIR, PolicyEngine, PolicyError, read_policies
from ramparts.policy.matrix import (
    Change,
    Scope,
    app_scope,
    changes,
    decide_all,
    read_snapshot,
    runtime_scope,
    snapshot_text,
)

__all__ = ["PolicyInvalidError", "policy_app"]


class PolicyInvalidError(Exception):
    """The policies do not validate, or do not compose (exit 1)."""


policy_app = typer.Typer(
    help="Authorization policies (Cedar): validate, diff, snapshot.", no_args_is_help=True
)

PolicyDirArgument = Annotated[
    Path, typer.Argument(help="A policy folder (its .cedar files, or its policies/).")
]
AppOption = Annotated[
    str | None,
    typer.Option("--app", help="The folder is this selected app's, not the runtime's."),
]


class _Parts:
    """The runtime's policy folder and the selected apps' fragments, one part replaced by a
    proposed folder."""

    def __init__(self, folder: Path | None = None, app: str | None = None) -> None:
        if folder is not None and not folder.is_dir():
            raise UsageError(f"{folder} is not a directory")
        try:
            fragments = policy_fragments(selected_apps(load_settings().apps))
        except PolicyError as exc:
            raise PolicyInvalidError(str(exc)) from None
        names = [f.name for f in fragments]
        if app is not None and app not in names:
            raise UsageError(
                f"--app {app}: not a selected app with policies "
                f"(selected: {', '.join(names) or 'none'})"
            )
        self.runtime = folder if folder is not None and app is None else POLICY_DIR
        self.fragments = [
            _proposed(f, folder) if folder is not None and f.name == app else f for f in fragments
        ]
        self.where = str(folder) if folder is not None else "the shipped policies"

    def engine(self, fragments: list[PolicyFragment] | None = None) -> PolicyEngine:
        try:
            return compose(self.fragments if fragments is None else fragments, self.runtime)
        except PolicyError as exc:
            raise PolicyInvalidError(f"{self.where}: {exc}") from None

    def decisions(self) -> dict[str, dict[str, bool]]:
        """Every snapshot's matrix: the runtime's with its policies alone, each app's with the
        runtime and that app alone."""
        self.engine()  # the whole first: a conflict between apps is an error too
        found = {"runtime": decide_all(self.engine([]), runtime_scope())}
        for fragment in self.fragments:
            found[fragment.name] = decide_all(self.engine([fragment]), app_scope(fragment))
        return found

    def scopes(self) -> dict[str, Scope]:
        return {"runtime": runtime_scope(), **{f.name: app_scope(f) for f in self.fragments}}


def _proposed(fragment: PolicyFragment, folder: Path) -> PolicyFragment:
    schema = folder / "schema.cedarschema"
    try:
        policies = read_policies(folder)
    except PolicyError as exc:
        raise PolicyInvalidError(f"{folder}: {exc}") from None
    return replace(
        fragment,
        policies=policies,
        schema=schema.read_text() if schema.is_file() else fragment.schema,
    )


@policy_app.command("validate")
def policy_validate(
    folder: Annotated[
        Path | None,
        typer.Argument(help="A proposed policy folder; default: the shipped policies."),
    ] = None,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compose the runtime's policies with the selected apps' and check the whole against the
    schema; exit 1 on any error."""
    parts = _Parts(folder, app)
    parts.engine()
    apps = [f.name for f in parts.fragments]
    if as_json:
        print(json.dumps({"valid": True, "directory": parts.where, "apps": apps}))
    else:
        console.print(f"{parts.where}: valid (apps: {', '.join(apps) or 'none'})")


@policy_app.command("diff")
def policy_diff(
    old: PolicyDirArgument,
    new: PolicyDirArgument,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every decision of the review matrices that changes from OLD to NEW (two versions of the
    runtime's policy folder, or with --app of that app's)."""
    before, after = _Parts(old, app), _Parts(new, app)
    scopes = after.scopes()
    old_decisions, new_decisions = before.decisions(), after.decisions()
    found = [
        (name, change)
        for name, scope in scopes.items()
        for change in changes(old_decisions[name], new_decisions[name], scope)
    ]
    if as_json:
        print(json.dumps({"changes": [_change_json(name, c) for name, c in found]}))
        return
    _print_changes(found)


@policy_app.command("snapshot")
def policy_snapshot(
    check: Annotated[bool, typer.Option(help="Only compare; exit 1 when it differs.")] = False,
) -> None:
    """Write the reviewed decision snapshots (the runtime's and each selected app's), or
    check them."""
    parts = _Parts()
    scopes = parts.scopes()
    current = parts.decisions()
    found = {
        name: changes(read_snapshot(scopes[name]), current[name], scopes[name]) for name in scopes
    }
    if check:
        _print_changes([(name, c) for name, moved in found.items() for c in moved])
        if any(found.values()):
            raise typer.Exit(1)
        return
    for name, scope in scopes.items():
        scope.snapshot.write_text(snapshot_text(current[name]))
        console.print(f"{scope.snapshot}: {len(found[name])} decision(s) changed")


def _change_json(snapshot: str, change: Change) -> dict[str, Any]:
    return {
        "snapshot": snapshot,
        **change.cell.__dict__,
        "old": _word(change.old),
        "new": _word(change.new),
    }


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def _print_changes(found: list[tuple[str, Change]]) -> None:
    if not found:
        console.print("no decision changes")
        return
    table = Table(title=f"{len(found)} decision(s) change")
    columns = ("snapshot", "role", "action", "relation", "sensitivity", "mfa", "channel")
    for column in (*columns, "old", "new"):
        table.add_column(column)
    for snapshot, change in found:
        cell = change.cell
        table.add_row(
            snapshot,
            cell.role,
            cell.action,
            cell.relation,
            cell.sensitivity,
            cell.amr,
            cell.channel,
            _word(change.old),
            _word(change.new),
        )
    console.print(table)
