"""`ramparts secrets`: scanning files for credentials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.crypto.scanner import scan_paths, tracked_files

__all__ = ["secrets_app"]

secrets_app = typer.Typer(help="Secret scanning.", no_args_is_help=True)


@secrets_app.command("scan")
def secrets_scan(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Files to scan; default: the git checkout here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Find credentials (keys, tokens, literal passwords, high-entropy strings); exit 1 on any.

    Findings name the file, line and kind, never the value. A line holding a deliberate fake
    says `pragma: allowlist secret`."""
    root = Path.cwd()
    files = [p.resolve() for p in paths] if paths else tracked_files(root)
    for path in files:
        if not path.exists():
            raise UsageError(f"no such file: {path}")
    leaks = list(scan_paths(files, root))
    if as_json:
        print(json.dumps({"leaks": [leak.__dict__ for leak in leaks], "files": len(files)}))
    else:
        for leak in leaks:
            console.print(str(leak), markup=False)
        console.print(f"{len(files)} file(s) scanned, {len(leaks)} finding(s)")
    if leaks:
        raise typer.Exit(1)
