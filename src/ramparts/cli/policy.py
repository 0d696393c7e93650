"""`ramparts policy`: validate, diff and snapshot the Cedar policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.policy.engine import POLICY_DIR, PolicyEngine, PolicyError
from ramparts.policy.matrix import (
    SNAPSHOT,
    Change,
    changes,
    decide_all,
    read_snapshot,
    snapshot_text,
)

__all__ = ["PolicyInvalidError", "policy_app"]


class PolicyInvalidError(Exception):
    """The policies do not validate (exit 1)."""


policy_app = typer.Typer(
    help="Authorization policies (Cedar): validate, diff, snapshot.", no_args_is_help=True
)

PolicyDirArgument = Annotated[
    Path, typer.Argument(help="A policy directory (its .cedar files, or its policies/).")
]


def _engine(directory: Path) -> PolicyEngine:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    try:
        return PolicyEngine.load(directory)
    except PolicyError as exc:
        raise PolicyInvalidError(f"{directory}: {exc}") from None


@policy_app.command("validate")
def policy_validate(
    directory: Annotated[
        Path, typer.Argument(help="Policy directory; default: the shipped policies.")
    ] = POLICY_DIR,
    as_json: JsonOption = False,
) -> None:
    """Parse the policies and check them against the schema; exit 1 on any error."""
    _engine(directory)
    if as_json:
        print(json.dumps({"valid": True, "directory": str(directory)}))
    else:
        console.print(f"{directory}: valid")


@policy_app.command("diff")
def policy_diff(
    old: PolicyDirArgument, new: PolicyDirArgument, as_json: JsonOption = False
) -> None:
    """Every decision of the review matrix that changes from OLD to NEW."""
    found = changes(decide_all(_engine(old)), decide_all(_engine(new)))
    if as_json:
        print(json.dumps({"changes": [_change_json(c) for c in found]}))
        return
    _print_changes(found)


@policy_app.command("snapshot")
def policy_snapshot(
    check: Annotated[bool, typer.Option(help="Only compare; exit 1 when it differs.")] = False,
) -> None:
    """Write the reviewed decision snapshot for the shipped policies (or check it)."""
    current = decide_all(_engine(POLICY_DIR))
    found = changes(read_snapshot(), current)
    if check:
        _print_changes(found)
        if found:
            raise typer.Exit(1)
        return
    SNAPSHOT.write_text(snapshot_text(current))
    console.print(f"{SNAPSHOT}: {len(found)} decision(s) changed")


def _change_json(change: Change) -> dict[str, Any]:
    return {**change.cell.__dict__, "old": _word(change.old), "new": _word(change.new)}


def _word(allowed: bool) -> str:
    return "allow" if allowed else "deny"


def _print_changes(found: list[Change]) -> None:
    if not found:
        console.print("no decision changes")
        return
    table = Table(title=f"{len(found)} decision(s) change")
    for column in ("role", "action", "tenant", "sensitivity", "mfa", "channel", "old", "new"):
        table.add_column(column)
    for change in found:
        cell = change.cell
        table.add_row(
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
