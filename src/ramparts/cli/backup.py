"""`ramparts backup`, `ramparts restore` and `ramparts drill` (control PLT-4)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ramparts.apps import migration_branches, selected_apps
from ramparts.backup.drill import (
    DrillReport,
    PitrLag,
    achieved_rpo,
    elapsed_since,
    parse_duration,
    pitr_lag,
    require_same_database,
    scratch_database,
    verify_restored,
)
from ramparts.backup.manifest import read_manifest
from ramparts.backup.services import Meter, RestoreReport, restore_backup, take_backup
from ramparts.cli.common import JsonOption, UsageError, console, print_result
from ramparts.config import Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import open_database
from ramparts.db.migrate import ExpectedSchema

__all__ = ["backup", "drill", "restore"]

OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        help="Directory to write the backup to (default: RAMPARTS_HOME/backups). Keep it on "
        "other storage than the database.",
    ),
]
RpoTargetOption = Annotated[
    str,
    typer.Option(
        "--rpo-target",
        help="Recovery point objective: the most data, in time, a loss may cost (15m, 90s).",
    ),
]


@contextmanager
def _meter(label: str, *, shown: bool) -> Iterator[Meter]:
    """A byte progress bar on stderr (a terminal only: a log or a pipe gets no bar lines),
    re-aimed each time a stage announces its total."""
    stderr = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not (shown and stderr.is_terminal),
    ) as bar:
        task = bar.add_task(label, total=None)

        def meter(total: int | None, step: int) -> None:
            if total is not None:
                bar.reset(task, total=total or None)
            bar.advance(task, step)

        yield meter


def _expected(settings: Settings) -> ExpectedSchema:
    return ExpectedSchema(migration_branches(selected_apps(settings.apps)))


def backup(output: OutputOption = None, as_json: JsonOption = False) -> None:
    """Back up the database: a pg_dump archive encrypted under the KMS's `backup` key, and a
    signed manifest with its SHA-256, row counts, the time and the WAL position."""
    settings = load_settings()
    kms = open_kms(settings)
    directory = output or settings.home / "backups"
    with open_database(settings) as urls, _meter("Backing up", shown=not as_json) as meter:
        path = take_backup(urls.owner, kms, directory, meter=meter)
    manifest = read_manifest(path)
    print_result(
        {
            "backup_id": manifest.backup_id,
            "manifest": str(path),
            "archive": str(path.parent / manifest.data_file),
            "bytes": manifest.data_bytes,
            "sha256": manifest.data_sha256,
            "snapshot_at": manifest.snapshot_at,
            "wal_lsn": manifest.wal_lsn,
            "tables": len(manifest.tables),
            "rows": sum(manifest.tables.values()),
        },
        as_json,
        f"[green]backed up[/] {sum(manifest.tables.values())} rows of "
        f"{len(manifest.tables)} tables at {manifest.snapshot_at} (WAL {manifest.wal_lsn}): "
        f"{path}",
    )


def _target_url(text: str) -> URL:
    try:
        url = make_url(text)
    except ArgumentError:
        raise UsageError("--database-url is not a database URL") from None
    if not url.drivername.startswith("postgresql") or not url.database:
        raise UsageError("--database-url must be a postgresql:// URL naming a database")
    return url


def restore(
    backup_manifest: Annotated[
        Path, typer.Argument(metavar="BACKUP", help="The backup's manifest (.manifest.json).")
    ],
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="The fresh, empty database to restore into, as its owner. Leave the password "
            "out and give it in PGPASSWORD or ~/.pgpass: a command line is visible to others.",
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Restore a backup into a fresh database, once its signature and SHA-256 verify; exit 1
    when the restored rows or schema differ from what the backup recorded."""
    settings = load_settings()
    target = _target_url(database_url)
    with _meter("Restoring", shown=not as_json) as meter:
        report = restore_backup(
            backup_manifest, target, open_kms(settings), expected=_expected(settings), meter=meter
        )
    if as_json:
        print_result({"restored": report.intact, **report.as_json()}, as_json=True, line="")
    else:
        _print_restore(report)
    if not report.intact:
        raise typer.Exit(1)


def _print_restore(report: RestoreReport) -> None:
    for name, (expected, found) in sorted(report.count_mismatches.items()):
        console.print(f"[red]{name}[/]: {found} rows, the backup holds {expected}")
    if not report.heads_match:
        console.print(
            f"[red]schema[/] stamped at {sorted(report.schema_heads)}, the backup holds "
            f"{sorted(report.manifest.schema_heads)}"
        )
    if report.schema_missing:
        console.print(
            "[yellow]note[/] the schema is older than this version: run `ramparts migrate`"
        )
    verdict = "[green]restored[/]" if report.intact else "[red]restored with differences[/]"
    console.print(
        f"{verdict} backup {report.manifest.backup_id} into {report.database}: "
        f"{sum(report.tables.values())} rows in {len(report.tables)} tables"
    )


def drill(
    rpo_target: RpoTargetOption = "15m",
    rto_target: Annotated[
        str,
        typer.Option(
            "--rto-target", help="Recovery time objective: the longest a restore may take."
        ),
    ] = "15m",
    existing: Annotated[
        Path | None,
        typer.Option(
            "--backup", help="Drill this backup (a manifest) instead of taking a new one."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Back up, restore into a scratch database, verify row counts, every audit chain and the
    ledger, and report the RPO (the restored snapshot's age) and RTO achieved; exit 0 only when
    all holds and both targets are met. The WAL archive's lag is reported apart, not drilled.
    The scratch database is dropped."""
    rpo_seconds, rto_seconds = parse_duration(rpo_target), parse_duration(rto_target)
    settings = load_settings()
    kms = open_kms(settings)
    with (
        open_database(settings) as urls,
        TemporaryDirectory(prefix="ramparts-drill-") as workspace,
        _meter("Drill", shown=not as_json) as meter,
    ):
        path = existing or take_backup(urls.owner, kms, Path(workspace), meter=meter)
        require_same_database(urls.owner, read_manifest(path))
        with scratch_database(urls.owner) as scratch:
            started = time.monotonic()
            restored = restore_backup(path, scratch, kms, expected=_expected(settings), meter=meter)
            chains, guards, books = verify_restored(scratch)
            rto = elapsed_since(started, rto_seconds)
        snapshot_at = datetime.fromisoformat(restored.manifest.snapshot_at)
        rpo = achieved_rpo(urls.owner, snapshot_at, rpo_seconds)
        pitr = pitr_lag(urls.owner)
    report = DrillReport(restored, chains, books, guards, rpo, rto, pitr)
    if as_json:
        print_result(report.as_json(), as_json=True, line="")
    else:
        _print_drill(report)
    if not report.passed:
        raise typer.Exit(1)


def _check(ok: bool) -> str:
    return "[green]PASS[/]" if ok else "[red]FAIL[/]"


def _print_drill(report: DrillReport) -> None:
    restored = report.restore
    broken = [chain for chain in report.chains if not chain.intact]
    ledger_ok = not report.ledger_guards and all(book.intact for book in report.books)
    table = Table(title=f"Restore drill of backup {restored.manifest.backup_id}")
    for column in ("check", "result", "detail"):
        table.add_column(column)
    table.add_row(
        "rows per table",
        _check(not restored.count_mismatches),
        f"{sum(restored.tables.values())} rows in {len(restored.tables)} tables"
        + "".join(
            f"; {name}: {found} of {expected}"
            for name, (expected, found) in sorted(restored.count_mismatches.items())
        ),
    )
    table.add_row("schema", _check(restored.heads_match), ", ".join(sorted(restored.schema_heads)))
    table.add_row(
        "audit chains",
        _check(not broken),
        f"{len(report.chains)} chains"
        + "".join(
            f"; {chain.tenant} seq {problem.seq}: {problem.kind}"
            for chain in broken
            for problem in chain.problems[:1]
        ),
    )
    table.add_row(
        "ledger",
        _check(ledger_ok),
        f"{len(report.books)} books"
        + "".join(f"; {problem.kind}" for problem in report.ledger_guards)
        + "".join(
            f"; {book.tenant}: {len(book.problems)} problem(s)"
            for book in report.books
            if not book.intact
        ),
    )
    for name, objective in (("RPO", report.rpo), ("RTO", report.rto)):
        table.add_row(
            name,
            _check(objective.met),
            f"{objective.achieved:.1f} s of {objective.target:g} s ({objective.source})",
        )
    table.add_row("PITR lag", "[yellow]not drilled[/]", _pitr_detail(report.pitr))
    console.print(table)
    console.print("drill " + ("[green]passed[/]" if report.passed else "[red]failed[/]"))


def _pitr_detail(pitr: PitrLag) -> str:
    if not pitr.archiving:
        return "WAL archiving off: no point-in-time recovery"
    archived = (
        "no segment archived yet"
        if pitr.last_archived_age is None
        else f"last segment {pitr.last_archived_wal} archived {pitr.last_archived_age:.1f} s ago"
    )
    failed = (
        "no failure"
        if pitr.last_failed_age is None
        else f"last failure {pitr.last_failed_wal} {pitr.last_failed_age:.1f} s ago"
    )
    return f"WAL archive: {archived}; {failed}; informational, the drill replays no WAL"
