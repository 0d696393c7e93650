"""`ramparts audit`: verify, checkpoint and export the audit chains, and chain what is queued."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from contextlib import nullcontext, suppress
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ramparts.audit.events import SYSTEM_TENANT
from ramparts.audit.sequencer import Sequencer
from ramparts.audit.services import Checkpoint, Checkpointer
from ramparts.audit.verify import (
    ChainReport,
    chain_length,
    chain_tenants,
    export_events,
    load_checkpoints,
    queue_lag,
    verify_chain,
)
from ramparts.cli.common import JsonOption, UsageError, console, with_owner
from ramparts.config import Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls, libpq, open_database

__all__ = ["audit_app"]

audit_app = typer.Typer(
    help="The audit trail: verify, checkpoint, export, and the queue of events not yet chained.",
    no_args_is_help=True,
)

TenantOption = Annotated[
    str | None,
    typer.Option(help="Tenant slug or id, or `system`; default: every chain."),
]


class ExportFormat(StrEnum):
    JSONL = "jsonl"


def _chains(conn: psycopg.Connection, tenant: str | None) -> list[uuid.UUID]:
    """The chains a command covers: one tenant (by slug or id, or `system`), or every chain."""
    if tenant is None:
        return chain_tenants(conn)
    if tenant == "system":
        return [SYSTEM_TENANT]
    with suppress(ValueError):
        return [uuid.UUID(tenant)]
    row = conn.execute("SELECT id FROM tenants WHERE slug = %s", (tenant,)).fetchone()
    if row is None:
        raise UsageError(f"no tenant {tenant!r}")
    return [row[0]]


def _sequence(settings: Settings, urls: DatabaseUrls) -> int:
    """Chain every committed queued event now, as the owner; how many were chained."""

    async def drain(owner: Database) -> int:
        return await Sequencer(owner, max_lag_seconds=settings.audit_max_lag_seconds).drain()

    return asyncio.run(with_owner(urls, drain))


@audit_app.command("verify")
def audit_verify(
    tenant: TenantOption = None,
    checkpoints: Annotated[
        Path | None,
        typer.Option(help="Checkpoints kept elsewhere (`audit checkpoint --json` output)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every hash and link; exit 1 and locate the first break when there is one.

    Events still queued (not yet chained) are counted per chain, with the oldest one's age."""
    external = (
        load_checkpoints(checkpoints.read_text().splitlines(), str(checkpoints))
        if checkpoints
        else []
    )
    settings = load_settings()
    with open_database(settings) as urls, psycopg.connect(libpq(urls.owner)) as conn:
        chains = _chains(conn, tenant)
        lengths = {chain: chain_length(conn, chain) for chain in chains}
        with Progress(console=Console(stderr=True), transient=True, disable=as_json) as bar:
            task = bar.add_task("Verifying audit chains", total=sum(lengths.values()))
            reports = [
                verify_chain(
                    conn,
                    chain,
                    external=external,
                    progress=lambda n: bar.advance(task, n),
                )
                for chain in chains
            ]
    intact = all(report.intact for report in reports)
    if as_json:
        print(json.dumps({"intact": intact, "chains": [r.as_json() for r in reports]}))
    else:
        _print_verification(reports)
    if not intact:
        raise typer.Exit(1)


def _print_verification(reports: list[ChainReport]) -> None:
    table = Table(title="Audit chains")
    for column in ("chain", "events", "head", "checkpoints", "queued", "oldest queued", "result"):
        table.add_column(column)
    for report in reports:
        oldest = report.oldest_queued_seconds
        table.add_row(
            report.tenant,
            str(report.events),
            str(report.head_seq),
            str(report.checkpoints),
            str(report.queued),
            "" if oldest is None else f"{oldest:.1f} s",
            "[green]intact[/]" if report.intact else f"[red]{len(report.problems)} problem(s)[/]",
        )
    console.print(table)
    for report in reports:
        for problem in sorted(report.problems, key=lambda p: p.seq):
            line = f"[red]{report.tenant} seq {problem.seq}[/] {problem.kind}: {problem.message}"
            if problem.expected or problem.found:
                line += f" (expected {problem.expected}, found {problem.found})"
            console.print(line)


@audit_app.command("checkpoint")
def audit_checkpoint(tenant: TenantOption = None, as_json: JsonOption = False) -> None:
    """Sign a checkpoint of every chain that moved since its last one; keep the output.

    What is queued is chained first, so the checkpoint covers every event committed so far."""
    settings = load_settings()
    with open_database(settings) as urls:
        _sequence(settings, urls)
        with psycopg.connect(libpq(urls.owner)) as conn:
            chains = None if tenant is None else _chains(conn, tenant)

        async def sign(owner: Database) -> list[Checkpoint]:
            checkpointer = Checkpointer(owner, open_kms(settings))
            if chains is None:
                return await checkpointer.sign_all()
            return [c for chain in chains for c in await checkpointer.sign_all(chain)]

        signed = asyncio.run(with_owner(urls, sign))
    if as_json:
        for checkpoint in signed:
            print(json.dumps(checkpoint.as_json()))
    else:
        for checkpoint in signed:
            console.print(f"{checkpoint.tenant} at {checkpoint.seq}: {checkpoint.head_hash.hex()}")
        console.print(f"{len(signed)} checkpoint(s) signed")


@audit_app.command("export")
def audit_export(
    tenant: TenantOption = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only events at or after (ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Only events before (ISO 8601, UTC).")
    ] = None,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="Output format.")
    ] = ExportFormat.JSONL,
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Events as JSON lines, in chain order per chain, each with its hash, for a SIEM.

    What is queued is chained first, so the export holds every event committed so far."""
    if export_format is not ExportFormat.JSONL:  # pragma: no cover - one format today
        raise UsageError(f"unknown format {export_format}")
    bounds = {
        "since": since.replace(tzinfo=since.tzinfo or UTC) if since else None,
        "until": until.replace(tzinfo=until.tzinfo or UTC) if until else None,
    }
    settings = load_settings()
    with (
        open_database(settings) as urls,
        psycopg.connect(libpq(urls.owner)) as conn,
        output.open("w") if output else nullcontext(sys.stdout) as sink,
    ):
        _sequence(settings, urls)
        for chain in _chains(conn, tenant):
            for event in export_events(conn, chain, **bounds):
                sink.write(json.dumps(event) + "\n")


@audit_app.command("sequence")
def audit_sequence(as_json: JsonOption = False) -> None:
    """Chain every queued event now.

    Running servers do it on their own, within RAMPARTS_AUDIT_MAX_LAG_SECONDS."""
    settings = load_settings()
    with open_database(settings) as urls:
        sequenced = _sequence(settings, urls)
    if as_json:
        print(json.dumps({"sequenced": sequenced}))
    else:
        console.print(f"{sequenced} event(s) chained")


@audit_app.command("status")
def audit_status(as_json: JsonOption = False) -> None:
    """Events waiting to be chained, and the oldest one's age; exit 1 beyond the lag bound.

    Per chain; the bound is RAMPARTS_AUDIT_MAX_LAG_SECONDS."""
    settings = load_settings()
    bound = settings.audit_max_lag_seconds
    with open_database(settings) as urls, psycopg.connect(libpq(urls.owner)) as conn:
        lags = queue_lag(conn)
    oldest = max((lag.oldest_seconds for lag in lags), default=None)
    within = oldest is None or oldest <= bound
    if as_json:
        status = {
            "queued": sum(lag.queued for lag in lags),
            "oldest_queued_seconds": oldest,
            "max_lag_seconds": bound,
            "within_bound": within,
            "chains": [
                {
                    "tenant": str(lag.tenant),
                    "queued": lag.queued,
                    "oldest_seconds": lag.oldest_seconds,
                }
                for lag in lags
            ],
        }
        print(json.dumps(status))
    else:
        for lag in lags:
            console.print(f"{lag.tenant}: {lag.queued} queued, oldest {lag.oldest_seconds:.1f} s")
        verdict = "[green]within[/]" if within else "[red]beyond[/]"
        age = "nothing queued" if oldest is None else f"oldest {oldest:.1f} s"
        console.print(f"{age}, {verdict} the {bound:g} s bound")
    if not within:
        raise typer.Exit(1)
