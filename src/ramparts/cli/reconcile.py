"""`ramparts reconcile`: one UTC day of the ledger matched with the PSP's balance transactions.

Exit 0 clean, 1 drift (or the PSP could not be read), 2 a bad date or no PSP key (one line on
stderr). The run is stored (`reconciliation_runs`) and drift raises an alert, as the daily job
does.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.status import Status
from rich.table import Table

from ramparts.alerts import Alerter
from ramparts.cli.common import JsonOption, UsageError, console
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import open_database
from ramparts.payments.psp import API_KEY_SECRET, StripePsp
from ramparts.payments.reconcile import ReconciliationReport, reconcile_day

__all__ = ["reconcile"]

#: Progress goes to stderr, and only to a terminal: stdout stays the report.
_progress_console = Console(stderr=True)


def _day(value: str | None) -> date:
    today = datetime.now(UTC).date()
    if value is None:
        return today - timedelta(days=1)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--date must be a day as YYYY-MM-DD, not {value!r}") from None
    if len(value) != len("YYYY-MM-DD"):
        raise UsageError(f"--date must be a day as YYYY-MM-DD, not {value!r}")
    if day > today:
        raise UsageError(f"{day.isoformat()} has not begun (UTC): nothing to reconcile yet")
    return day


def reconcile(
    day: Annotated[
        str | None,
        typer.Option(
            "--date",
            help="The UTC day to reconcile, YYYY-MM-DD (default: yesterday; today compares "
            "what there is so far).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Match one day of the ledger with the PSP's balance transactions by PSP id and flag
    every drift (missing_in_ledger, missing_at_psp, amount_mismatch, currency_mismatch,
    fee_mismatch, status_mismatch, duplicate, tenant_mismatch); store the run and alert on
    drift. Exit 0 when clean, 1 on drift."""
    wanted = _day(day)
    settings = load_settings()
    kms = open_kms(settings)
    if kms.read_secret(API_KEY_SECRET) is None:
        raise UsageError(
            f"the KMS holds no PSP API key ({API_KEY_SECRET}): payments are not set up"
        )
    psp = StripePsp.from_kms(kms, api_base=settings.psp_api_base)
    alerter = Alerter(settings.alert_webhook_url)
    status: Status | None = None
    if _progress_console.is_terminal:
        status = _progress_console.status(f"Reconciling {wanted.isoformat()}")

    def progress(what: str, count: int) -> None:
        if status is not None:
            status.update(f"Reconciling {wanted.isoformat()}: {count} {what} read")

    async def run() -> ReconciliationReport:
        try:
            return await reconcile_day(urls.owner, psp, wanted, alerter=alerter, progress=progress)
        finally:
            await psp.aclose()

    with open_database(settings) as urls:
        if status is not None:
            with status:
                report = asyncio.run(run())
        else:
            report = asyncio.run(run())
    if as_json:
        print(json.dumps(report.as_json()))
    else:
        _print(report)
    if not report.clean:
        raise typer.Exit(1)


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None and currency is None:
        return ""
    return f"{amount if amount is not None else '?'} {currency or ''}".strip()


def _print(report: ReconciliationReport) -> None:
    if report.drift:
        table = Table(title=f"Reconciliation drift, {report.day.isoformat()}")
        for column in ("type", "kind", "PSP id", "PSP", "ledger", "tenants", "detail"):
            table.add_column(column)
        for item in report.drift:
            psp = _money(item.psp_amount, item.psp_currency)
            if item.psp_status:
                psp = f"{psp} {item.psp_status}".strip()
            table.add_row(
                f"[red]{item.type.value}[/]",
                item.kind,
                item.psp_id,
                psp,
                _money(item.ledger_amount, item.ledger_currency),
                "\n".join(item.tenants),
                item.detail,
            )
        console.print(table)
    verdict = "[green]clean[/]" if report.clean else f"[red]{len(report.drift)} drift item(s)[/]"
    console.print(
        f"{report.day.isoformat()}: {report.psp_transactions} PSP balance transaction(s), "
        f"{report.ledger_entries} ledger entries, {report.matched} of {report.psp_objects} "
        f"PSP object(s) matched: {verdict} (run {report.run_id})"
    )
