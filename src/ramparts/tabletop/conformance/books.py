"""PAY-5 on a running instance: the database keeps the ledger balanced and immutable, the
books verify, and a reconciliation run flags drift planted in them.

Everything written to prove a refusal is written in a transaction that is then rolled back
(or refused at COMMIT), in the books of a drill tenant that no real tenant is: nothing stays.
The drift is real: a deposit for a charge the PSP never made, posted by the runtime role in
a drill tenant's books, makes the day's reconciliation report it; the entry is then reversed
(the only correction a ledger allows), and the next run is clean again."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from ramparts.alerts import Alerter, AlertKind
from ramparts.db.engine import Database
from ramparts.payments.ledger import Ledger
from ramparts.payments.ledger_verify import (
    guard_problems,
    ledger_books,
    unlisted_books,
    verify_book,
)
from ramparts.payments.psp import StripePsp
from ramparts.payments.reconcile import ReconciliationReport, reconcile_day
from ramparts.tabletop.target import DrillError, Operator, Target

__all__ = [
    "Reconciled",
    "Refusal",
    "append_only_refusals",
    "books_verified",
    "reconcile_with_planted_drift",
    "unbalanced_refusal",
]

_ACCOUNTS = (
    "INSERT INTO ledger_accounts (tenant_id, name, currency, kind) VALUES "
    "(%(tenant)s, 'psp_clearing', 'EUR', 'asset'), "
    "(%(tenant)s, %(held)s, 'EUR', 'liability') ON CONFLICT DO NOTHING"
)
_ENTRY = (
    "INSERT INTO ledger_entries (tenant_id, kind, reference, payment) "
    "VALUES (%(tenant)s, 'deposit', %(reference)s, %(payment)s) RETURNING id"
)
_POSTINGS = (
    "INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, amount) "
    "VALUES (%(tenant)s, %(entry)s, 1, 'psp_clearing', 'EUR', %(debit)s), "
    "(%(tenant)s, %(entry)s, 2, %(held)s, 'EUR', %(credit)s)"
)


@dataclass(frozen=True)
class Refusal:
    """What the database answered an attempt on the ledger: `refused` with its SQLSTATE and
    constraint (or message), or accepted."""

    attempt: str
    refused: bool
    sqlstate: str | None = None
    said: str = ""

    def line(self) -> str:
        if not self.refused:
            return f"{self.attempt} → ACCEPTED"
        return f"{self.attempt} → refused {self.sqlstate} {self.said}".rstrip()


def _drill_entry(conn: psycopg.Connection[Any], tenant: uuid.UUID, debit: int, credit: int) -> Any:
    """Accounts, an entry and its two postings in the drill tenant's books, in `conn`'s open
    transaction."""
    marker = secrets.token_hex(6)
    values: dict[str, Any] = {
        "tenant": tenant,
        "held": f"held_funds:drill_{marker}",
        "reference": f"ch_drill{marker}",
        "payment": f"drill_{marker}",
        "debit": debit,
        "credit": credit,
    }
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
    conn.execute(_ACCOUNTS, values)
    entry = conn.execute(_ENTRY, values).fetchone()
    if entry is None:
        raise DrillError("the ledger gave the drill's entry no id")
    conn.execute(_POSTINGS, {**values, "entry": entry[0]})
    return entry[0]


def _refusal(attempt: str, error: psycopg.Error) -> Refusal:
    diag = error.diag
    return Refusal(
        attempt,
        True,
        error.sqlstate,
        diag.constraint_name or (diag.message_primary or "")[:80],
    )


def unbalanced_refusal(target: Target) -> Refusal:
    """An entry whose postings do not sum to zero (100 debited, 99 credited), written by
    the runtime role the API uses, then checked as COMMIT would check it (the balance checks
    are deferred to COMMIT; `SET CONSTRAINTS ALL IMMEDIATE` runs them now). The transaction
    is rolled back whatever the answer, so a broken guard leaves no unbalanced entry."""
    attempt = "runtime role: an entry debiting 100, crediting 99, checked as at COMMIT"
    with target.runtime() as conn, conn.transaction(force_rollback=True):
        _drill_entry(conn, uuid.uuid4(), 100, -99)
        return _attempt(conn, attempt, "SET CONSTRAINTS ALL IMMEDIATE")


def append_only_refusals(target: Target) -> list[Refusal]:
    """UPDATE and DELETE of posted rows, as the owner (whose grants allow them: only the
    ledger's own guards refuse) and as the runtime role, on a balanced drill entry posted in
    the same transaction; and TRUNCATE as the owner. Every transaction is rolled back."""
    found: list[Refusal] = []
    for who, opened in (("owner", target.owner), ("runtime role", target.runtime)):
        with opened() as conn, conn.transaction(force_rollback=True):
            entry = _drill_entry(conn, uuid.uuid4(), 100, -100)
            for attempt, statement in (
                (
                    f"{who}: UPDATE of a posting",
                    "UPDATE ledger_postings SET amount = amount * 2 WHERE entry_id = %s",
                ),
                (f"{who}: DELETE of an entry", "DELETE FROM ledger_entries WHERE id = %s"),
            ):
                found.append(_attempt(conn, attempt, statement, entry))
    # Alone in its transaction: TRUNCATE refuses to run beside pending deferred checks.
    with target.owner() as conn, conn.transaction(force_rollback=True):
        found.append(_attempt(conn, "owner: TRUNCATE of the postings", "TRUNCATE ledger_postings"))
    return found


def _attempt(conn: psycopg.Connection[Any], attempt: str, statement: str, *args: Any) -> Refusal:
    try:
        with conn.transaction():
            conn.execute(statement, args or None)
    except psycopg.Error as error:
        return _refusal(attempt, error)
    return Refusal(attempt, False)


def books_verified(target: Target) -> tuple[list[str], dict[str, int]]:
    """What `ramparts ledger verify` checks, as the owner: the problems found (guards and
    every book), and how many books, entries and postings were checked."""
    with target.owner() as conn:
        problems = [p.message for p in guard_problems(conn)]
        problems += [p.message for p in unlisted_books(conn) or []]
        counts = {"books": 0, "entries": 0, "postings": 0}
        for tenant in ledger_books(conn):
            report = verify_book(conn, tenant)
            counts["books"] += 1
            counts["entries"] += report.entries
            counts["postings"] += report.postings
            problems += [f"book {tenant}: {p.message}" for p in report.problems]
    return problems, counts


class _Noted(Alerter):
    """The alerts a run raises, kept for the evidence (this process is the drill, not the
    instance: its counter and log are nobody's)."""

    def __init__(self) -> None:
        super().__init__()
        self.raised: list[str] = []

    async def raise_alert(
        self, kind: AlertKind, summary: str, details: Mapping[str, Any] | None = None
    ) -> None:
        self.raised.append(f"{kind.value}: {summary}")


@dataclass
class Reconciled:
    """Today's reconciliation runs: before the drift was planted, with it, after its
    reversal."""

    planted: str
    runs: list[ReconciliationReport] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def found_planted(self, report: ReconciliationReport) -> list[str]:
        return [f"{d.type} {d.psp_id}" for d in report.drift if d.psp_id == self.planted]


async def _reconcile(target: Target, operator: Operator) -> Reconciled:
    if target.urls is None or target.urls.owner_url is None:
        raise DrillError("the instance's database owner is not reachable from here")
    owner_url = target.urls.owner_url
    day = datetime.now(UTC).date()
    tenant = uuid.uuid4()
    marker = secrets.token_hex(6)
    planted = Reconciled(f"ch_drill{marker}")
    psp = StripePsp.from_kms(operator.kms, api_base=operator.psp_api_base)
    database = Database(target.urls.app, pool_size=1, max_overflow=0)
    ledger = Ledger()
    alerter = _Noted()
    planted.alerts = alerter.raised
    try:
        planted.runs.append(await reconcile_day(owner_url, psp, day, alerter=alerter))
        async with database.tenant_session(tenant) as session:
            entry = await ledger.record_deposit(
                session,
                payment=f"drill_{marker}",
                amount=100,
                currency="eur",
                reference=planted.planted,
            )
        try:
            planted.runs.append(await reconcile_day(owner_url, psp, day, alerter=alerter))
        finally:
            async with database.tenant_session(tenant) as session:
                await ledger.reverse(session, entry.id, reference=f"drill_{marker}.reversed")
        planted.runs.append(await reconcile_day(owner_url, psp, day, alerter=alerter))
    finally:
        await psp.aclose()
        await database.dispose()
    return planted


def reconcile_with_planted_drift(target: Target, operator: Operator) -> Reconciled:
    """Today's reconciliation, clean; then with a deposit of a charge the PSP never made in a
    drill tenant's books; then with that deposit reversed (see the module docstring)."""
    return asyncio.run(_reconcile(target, operator))
