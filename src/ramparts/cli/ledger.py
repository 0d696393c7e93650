"""`ramparts ledger verify`: the ledger's guards, then every entry and balance of every book."""

from __future__ import annotations

import json

import psycopg
import typer
from rich.table import Table

from ramparts.cli.common import JsonOption, console
from ramparts.config import load_settings
from ramparts.db.engine import libpq, open_database
from ramparts.payments.ledger_verify import (
    BookReport,
    LedgerProblem,
    guard_problems,
    ledger_books,
    unlisted_books,
    verify_book,
)

__all__ = ["ledger_app"]

ledger_app = typer.Typer(help="The double-entry ledger of money movements.", no_args_is_help=True)


@ledger_app.command("verify")
def ledger_verify(as_json: JsonOption = False) -> None:
    """Check that every entry balances per currency, every reversal mirrors its entry, no
    never-negative account is below zero, and the database's guards are in place; exit 1
    and name each problem when there is one."""
    settings = load_settings()
    with (
        open_database(settings) as urls,
        psycopg.connect(libpq(urls.owner), autocommit=True) as conn,
    ):
        guards = guard_problems(conn)
        unlisted = unlisted_books(conn)
        reports = [verify_book(conn, tenant) for tenant in ledger_books(conn)]
    # Books written with the triggers off leave no `ledger_books` row: only a role that sees
    # every row can find them (None: this one cannot, and says so).
    guards += unlisted or []
    intact = not guards and all(report.intact for report in reports)
    if as_json:
        print(
            json.dumps(
                {
                    "intact": intact,
                    "guards": [problem.as_json() for problem in guards],
                    "books": [report.as_json() for report in reports],
                    "every_book_found": unlisted is not None,
                }
            )
        )
    else:
        _print(guards, reports)
        if unlisted is None:
            console.print(
                "[yellow]note[/] this role is held to row-level security: books written "
                "with the triggers off cannot be looked for (run as a superuser or BYPASSRLS)"
            )
    if not intact:
        raise typer.Exit(1)


def _print(guards: list[LedgerProblem], reports: list[BookReport]) -> None:
    table = Table(title="Ledger books")
    for column in ("tenant", "entries", "postings", "accounts", "result"):
        table.add_column(column)
    for report in reports:
        table.add_row(
            report.tenant,
            str(report.entries),
            str(report.postings),
            str(report.accounts),
            "[green]intact[/]" if report.intact else f"[red]{len(report.problems)} problem(s)[/]",
        )
    console.print(table)
    for problem in guards:
        console.print(f"[red]guard[/] {problem.kind}: {problem.message}")
    for report in reports:
        for problem in report.problems:
            where = problem.entry or problem.account or "book"
            console.print(f"[red]{report.tenant} {where}[/] {problem.kind}: {problem.message}")
    verdict = (
        "[green]intact[/]"
        if not guards and all(r.intact for r in reports)
        else "[red]not intact[/]"
    )
    console.print(
        f"{len(reports)} book(s), guards {'in place' if not guards else 'missing'}: {verdict}"
    )
