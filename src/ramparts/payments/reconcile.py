"""Daily reconciliation of the ledger with the PSP (control PAY-5).

For one UTC day, the PSP's balance transactions created that day (with their sources) and its
payouts created that day are matched with the ledger's entries by PSP id, and the payments
the records hold as paid with their PaymentIntents; every disagreement is a drift item:

| PSP side | ledger entry (kind, reference) |
|---|---|
| a charge (`ch_…`, `py_…`) | `deposit`, the charge id |
| a balance transaction's fee, when not 0 | `psp_fee`, the balance transaction id (`txn_…`) |
| a refund (`re_…`) | `refund`, the refund id |
| a payout (`po_…`) | `disbursement`, the payout id |

An entry that a reversal cancels counts as not there. Drift types:

- `missing_in_ledger`: the PSP moved money (a charge succeeded, a refund or payout was made)
  and no live ledger entry records it (none, or only reversed ones); also a balance
  transaction whose source is none of the above (money moved that the ledger has no kind for).
- `missing_at_psp`: a live ledger entry names a PSP object the PSP does not have (or one of
  another type than its kind, or a reference that is no PSP id at all).
- `amount_mismatch`, `currency_mismatch`: both have it, with another amount or currency. The
  ledger is compared with the object (a charge's amount and currency, as the PaymentIntent had
  them), a fee with its balance transaction's fee and currency.
- `fee_mismatch`: the PSP kept another fee on a balance transaction than the ledger's
  `psp_fee` entries for it say (no entry is a fee of 0).
- `status_mismatch`: the ledger holds as done what the PSP says did not happen: a charge that
  is not `succeeded` (failed, or still pending), a refund `failed` or `canceled`, a payout
  `failed` or `canceled`, or any of them with a `refund_failure`, `payout_failure`,
  `payout_cancel` or `payment_failure_refund` balance transaction (reversed after it was
  made); and a payment the records hold as paid (`payments.status = 'succeeded'`) whose
  PaymentIntent at the PSP is not `succeeded` (or not found). A refund that is still `pending`
  or `requires_action`, and a payout still `pending` or `in_transit`, are done: the ledger
  records them when the PSP accepts them.
- `duplicate`: two balance transactions of one type for one source at the PSP, or two live
  ledger entries for one PSP object (which the ledger's own unique key allows only across
  tenants: two tenants' books claiming one charge).

The day's window. The PSP side is what the PSP created in [D 00:00, D+1 00:00) UTC; the
ledger side is what was posted in the same window (and the entries reversed in it). Matching
is by PSP id across every day: each PSP object of day D is compared with its ledger entries
whenever they were posted, and each ledger entry of day D with its PSP object whenever it was
created (fetched by id when it is not in the day's list). So a charge made at 23:59 and posted
at 00:01 is matched on both days' runs, and an entry of day D is reported `missing_at_psp` only
once the PSP, asked for that very id, has none. The PSP-side checks of a day belong to that
day's run: a fee on a charge of day D-1 is checked by D-1's run. Run a day once it is over and
the worker has caught up (the daily job runs for yesterday); a run for today compares what
there is so far, and a day not yet begun is refused.

Reconciliation runs as the database owner (like `ramparts ledger verify`): it reads every
tenant's book, one tenant at a time under that tenant's row-level security, and stores the run
in `reconciliation_runs` (owner-only, migration 0026). Drift raises an alert
(`AlertKind.RECONCILIATION_DRIFT`). The report holds PSP ids, amounts, statuses, entry ids and
tenant ids, never personal data.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from ramparts.alerts import Alerter, AlertKind
from ramparts.db.engine import libpq
from ramparts.payments.psp import BalanceTransaction, PspMovement, PspNotFoundError, StripePsp

__all__ = [
    "DONE_STATUSES",
    "UNDONE_TRANSACTION_TYPES",
    "Drift",
    "DriftType",
    "Evidence",
    "LedgerRecord",
    "PaidPayment",
    "Progress",
    "ReconciliationReport",
    "compare",
    "day_window",
    "read_evidence",
    "reconcile_day",
    "stored_runs",
]

#: Told what is being read and how many so far (the CLI shows it).
Progress = Callable[[str, int], None]


class DriftType(StrEnum):
    MISSING_IN_LEDGER = "missing_in_ledger"
    MISSING_AT_PSP = "missing_at_psp"
    AMOUNT_MISMATCH = "amount_mismatch"
    CURRENCY_MISMATCH = "currency_mismatch"
    FEE_MISMATCH = "fee_mismatch"
    STATUS_MISMATCH = "status_mismatch"
    DUPLICATE = "duplicate"
    #: The entry is in another tenant's books than the one the PSP object is tagged with.
    TENANT_MISMATCH = "tenant_mismatch"


#: The ledger kind that records each PSP object type, and back.
KIND_OF_OBJECT = {"charge": "deposit", "refund": "refund", "payout": "disbursement"}
OBJECT_OF_KIND = {kind: kind_object for kind_object, kind in KIND_OF_OBJECT.items()}
#: The statuses in which the PSP object moved money (or is accepted and moving it).
DONE_STATUSES = {
    "charge": frozenset({"succeeded"}),
    "refund": frozenset({"succeeded", "pending", "requires_action"}),
    "payout": frozenset({"paid", "pending", "in_transit"}),
}
#: Balance transactions that give back what their source moved: it did not happen after all.
UNDONE_TRANSACTION_TYPES = frozenset(
    {"refund_failure", "payout_failure", "payout_cancel", "payment_failure_refund"}
)
_PREFIXES = {"ch_": "charge", "py_": "charge", "re_": "refund", "po_": "payout"}


def _object_of_id(psp_id: str) -> str | None:
    return next((kind for prefix, kind in _PREFIXES.items() if psp_id.startswith(prefix)), None)


@dataclass(frozen=True)
class Drift:
    """One disagreement between the ledger and the PSP."""

    type: DriftType
    #: deposit, psp_fee, refund, disbursement, payment, or other (a source of no known kind).
    kind: str
    #: The PSP object (or, for `missing_at_psp`, the ledger's reference).
    psp_id: str
    detail: str
    tenants: tuple[str, ...] = ()
    psp_amount: int | None = None
    psp_currency: str | None = None
    psp_status: str | None = None
    ledger_amount: int | None = None
    ledger_currency: str | None = None
    #: The ledger entries concerned.
    entries: tuple[str, ...] = ()
    #: The payment (the records' id) for a payment's status.
    payment: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "kind": self.kind,
            "psp_id": self.psp_id,
            "detail": self.detail,
            "tenants": list(self.tenants),
            "psp": {
                "amount": self.psp_amount,
                "currency": self.psp_currency,
                "status": self.psp_status,
            },
            "ledger": {"amount": self.ledger_amount, "currency": self.ledger_currency},
            "entries": list(self.entries),
            "payment": self.payment,
        }


@dataclass(frozen=True)
class LedgerRecord:
    """One ledger entry as reconciliation reads it (never a reversal: those mark `reversed`)."""

    tenant: uuid.UUID
    id: uuid.UUID
    kind: str
    reference: str
    amount: int  # what the entry moved: the sum of its debits
    currency: str  # upper case; "mixed" when its postings have several
    posted_at: datetime
    reversed: bool = False
    payment: str | None = None


@dataclass(frozen=True)
class PaidPayment:
    """A payment the records hold as paid, and its PaymentIntent's status at the PSP."""

    tenant: uuid.UUID
    id: uuid.UUID
    psp_id: str
    intent_status: str | None  # None: the PSP has no such intent for this tenant


@dataclass
class Evidence:
    """What reconciliation read: the input of `compare`."""

    start: datetime
    end: datetime
    #: The PSP's balance transactions created in the window.
    transactions: list[BalanceTransaction] = field(default_factory=list)
    #: PSP ids (sources, payouts) created in the window.
    window_ids: set[str] = field(default_factory=set)
    #: Charges, refunds and payouts by id: the window's, and those fetched for ledger entries.
    movements: dict[str, PspMovement] = field(default_factory=dict)
    #: Balance transactions by id: the window's, and those fetched for fee entries.
    fee_transactions: dict[str, BalanceTransaction] = field(default_factory=dict)
    #: Ledger entries posted in the window, reversed in it, or naming the window's PSP ids.
    ledger: list[LedgerRecord] = field(default_factory=list)
    #: The ids of the entries that belong to the window (posted or reversed in it).
    ledger_of_window: set[uuid.UUID] = field(default_factory=set)
    payments: list[PaidPayment] = field(default_factory=list)


@dataclass
class ReconciliationReport:
    day: date
    started_at: datetime
    finished_at: datetime
    psp_transactions: int
    psp_objects: int
    ledger_entries: int
    matched: int
    drift: list[Drift]
    run_id: uuid.UUID | None = None

    @property
    def clean(self) -> bool:
        return not self.drift

    @property
    def status(self) -> str:
        return "clean" if self.clean else "drift"

    def drift_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(item.type.value for item in self.drift).items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": str(self.run_id) if self.run_id else None,
            "day": self.day.isoformat(),
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "psp_transactions": self.psp_transactions,
            "psp_objects": self.psp_objects,
            "ledger_entries": self.ledger_entries,
            "matched": self.matched,
            "drift_counts": self.drift_counts(),
            "drift": [item.as_json() for item in self.drift],
        }


def day_window(day: date) -> tuple[datetime, datetime]:
    """[D 00:00, D+1 00:00) in UTC."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


# ---- comparing (pure) -------------------------------------------------------------------


@dataclass
class _Tally:
    checked: int = 0
    matched: int = 0
    drift: list[Drift] = field(default_factory=list)

    def check(self, found: list[Drift]) -> None:
        self.checked += 1
        if found:
            self.drift.extend(found)
        else:
            self.matched += 1


def compare(evidence: Evidence) -> tuple[list[Drift], int, int]:
    """The drift in `evidence`, and how many PSP objects were checked and matched."""
    by_reference: dict[tuple[str, str], list[LedgerRecord]] = defaultdict(list)
    for record in evidence.ledger:
        by_reference[record.kind, record.reference].append(record)
    by_source: dict[str, list[BalanceTransaction]] = defaultdict(list)
    for transaction in evidence.transactions:
        by_source[transaction.source or transaction.id].append(transaction)

    # The (kind, PSP id) pairs to check: the window's PSP objects, and the window's entries.
    pairs: dict[tuple[str, str], None] = {}
    for psp_id in sorted(evidence.window_ids):
        pairs[_kind_of(psp_id, evidence.movements.get(psp_id)), psp_id] = None
    of_window = {t.id for t in evidence.transactions}
    fees: dict[str, None] = {
        t.id: None for t in sorted(evidence.transactions, key=lambda t: t.id) if t.fee
    }
    for record in sorted(evidence.ledger, key=lambda r: (r.kind, r.reference)):
        if record.kind == "psp_fee":
            if record.id in evidence.ledger_of_window or record.reference in of_window:
                fees[record.reference] = None
        elif record.id in evidence.ledger_of_window:
            pairs[record.kind, record.reference] = None

    tally = _Tally()
    for kind, psp_id in pairs:
        tally.check(
            _movement_drift(
                kind,
                psp_id,
                evidence.movements.get(psp_id),
                by_source.get(psp_id, []),
                by_reference.get((kind, psp_id), []),
            )
        )
    for transaction_id in fees:
        tally.check(
            _fee_drift(
                transaction_id,
                evidence.fee_transactions.get(transaction_id),
                by_reference.get(("psp_fee", transaction_id), []),
            )
        )
    for payment in evidence.payments:
        tally.check(_payment_drift(payment))
    drift = sorted(tally.drift, key=lambda d: (d.type.value, d.kind, d.psp_id, d.entries))
    return drift, tally.checked, tally.matched


def _kind_of(psp_id: str, movement: PspMovement | None) -> str:
    """The ledger kind that records `psp_id` ("other" for a source the ledger has none for)."""
    found = movement.object if movement is not None else _object_of_id(psp_id)
    return KIND_OF_OBJECT.get(found or "", "other")


@dataclass(frozen=True)
class _Seen:
    """What the PSP says of an object."""

    amount: int | None = None
    currency: str | None = None
    status: str | None = None
    tenant: uuid.UUID | None = None


def _drift(
    type_: DriftType,
    kind: str,
    psp_id: str,
    detail: str,
    records: list[LedgerRecord],
    *,
    seen: _Seen | None = None,
    ledger_amount: int | None = None,
) -> Drift:
    seen = seen or _Seen()
    tenants = {str(r.tenant) for r in records} | ({str(seen.tenant)} if seen.tenant else set())
    return Drift(
        type=type_,
        kind=kind,
        psp_id=psp_id,
        detail=detail,
        tenants=tuple(sorted(tenants)),
        psp_amount=seen.amount,
        psp_currency=seen.currency,
        psp_status=seen.status,
        ledger_amount=ledger_amount if ledger_amount is not None else _first_amount(records),
        ledger_currency=records[0].currency if records else None,
        entries=tuple(str(r.id) for r in records),
    )


def _first_amount(records: list[LedgerRecord]) -> int | None:
    return records[0].amount if records else None


def _duplicates(
    kind: str, psp_id: str, transactions: list[BalanceTransaction], live: list[LedgerRecord]
) -> list[Drift]:
    found = []
    for type_, count in sorted(Counter(t.type for t in transactions).items()):
        if count > 1:
            ids = ", ".join(sorted(t.id for t in transactions if t.type == type_))
            detail = f"the PSP has {count} {type_} balance transactions for it: {ids}"
            found.append(_drift(DriftType.DUPLICATE, kind, psp_id, detail, []))
    if len(live) > 1:
        detail = f"{len(live)} live ledger entries record it"
        found.append(_drift(DriftType.DUPLICATE, kind, psp_id, detail, live))
    return found


def _not_at_psp(kind: str, psp_id: str, live: list[LedgerRecord]) -> list[Drift]:
    expected = OBJECT_OF_KIND.get(kind)
    if expected is not None and _object_of_id(psp_id) == expected:
        detail = f"the PSP has no {expected} {psp_id}"
    else:
        detail = f"{psp_id} is not the id of a PSP {expected or 'object'}"
    return [_drift(DriftType.MISSING_AT_PSP, kind, psp_id, detail, [r]) for r in live]


def _seen(movement: PspMovement | None, transactions: list[BalanceTransaction]) -> _Seen:
    if movement is not None:
        return _Seen(
            movement.amount, movement.currency.upper(), movement.status, movement.tenant_id
        )
    moved = [t for t in transactions if t.type not in UNDONE_TRANSACTION_TYPES]
    first = moved[0] if moved else transactions[0]
    return _Seen(abs(first.amount), first.currency.upper(), first.status)


def _movement_drift(
    kind: str,
    psp_id: str,
    movement: PspMovement | None,
    transactions: list[BalanceTransaction],
    records: list[LedgerRecord],
) -> list[Drift]:
    live = [r for r in records if not r.reversed]
    found = _duplicates(kind, psp_id, transactions, live)
    expected = OBJECT_OF_KIND.get(kind)
    if movement is None and not transactions:
        return found + _not_at_psp(kind, psp_id, live)
    seen = _seen(movement, transactions)
    if movement is not None and expected is not None and movement.object != expected:
        detail = f"the PSP's {psp_id} is a {movement.object or 'another object'}, not a {expected}"
        return found + [_drift(DriftType.MISSING_AT_PSP, kind, psp_id, detail, live)] * bool(live)
    if expected is None:  # money moved by a source the ledger has no kind for
        what = (movement.object if movement else "") or "source"
        detail = f"the PSP moved money by a {what} the ledger does not record"
        return [*found, _drift(DriftType.MISSING_IN_LEDGER, kind, psp_id, detail, [], seen=seen)]
    undone = sorted({t.type for t in transactions} & UNDONE_TRANSACTION_TYPES)
    if undone or (movement is not None and seen.status not in DONE_STATUSES[expected]):
        if live:
            said = f"{seen.status}, reversed by {', '.join(undone)}" if undone else seen.status
            detail = f"the PSP says the {expected} is {said}; the ledger holds it as done"
            found.append(_drift(DriftType.STATUS_MISMATCH, kind, psp_id, detail, live, seen=seen))
        return found
    if not live:
        why = "its ledger entry is reversed" if records else "no ledger entry records it"
        detail = f"the {expected} is {seen.status} at the PSP; {why}"
        return [
            *found,
            _drift(DriftType.MISSING_IN_LEDGER, kind, psp_id, detail, records, seen=seen),
        ]
    owner = movement.tenant_id if movement is not None else None
    for record in live:
        if owner is not None and record.tenant != owner:
            detail = "the entry is in another tenant's books than the PSP object's tag"
            found.append(
                _drift(DriftType.TENANT_MISMATCH, kind, psp_id, detail, [record], seen=seen)
            )
        elif record.currency != seen.currency:
            found.append(
                _drift(
                    DriftType.CURRENCY_MISMATCH,
                    kind,
                    psp_id,
                    "the currencies differ",
                    [record],
                    seen=seen,
                )
            )
        elif record.amount != seen.amount:
            found.append(
                _drift(
                    DriftType.AMOUNT_MISMATCH,
                    kind,
                    psp_id,
                    "the amounts differ",
                    [record],
                    seen=seen,
                )
            )
    return found


def _fee_drift(
    transaction_id: str, transaction: BalanceTransaction | None, records: list[LedgerRecord]
) -> list[Drift]:
    live = [r for r in records if not r.reversed]
    found = _duplicates("psp_fee", transaction_id, [], live)
    if transaction is None:
        detail = f"the PSP has no balance transaction {transaction_id}"
        return found + [
            _drift(DriftType.MISSING_AT_PSP, "psp_fee", transaction_id, detail, [r]) for r in live
        ]
    seen = _Seen(transaction.fee, transaction.currency.upper(), transaction.status)
    other = [r for r in live if r.currency != seen.currency]
    ledger_fee = sum(r.amount for r in live)
    if other:
        detail = "the fee's currencies differ"
        found.append(
            _drift(DriftType.CURRENCY_MISMATCH, "psp_fee", transaction_id, detail, other, seen=seen)
        )
    elif ledger_fee != transaction.fee:
        detail = f"the PSP kept a fee of {transaction.fee}; the ledger records {ledger_fee}"
        found.append(
            _drift(
                DriftType.FEE_MISMATCH,
                "psp_fee",
                transaction_id,
                detail,
                live,
                seen=seen,
                ledger_amount=ledger_fee,
            )
        )
    return found


def _payment_drift(payment: PaidPayment) -> list[Drift]:
    if payment.intent_status == "succeeded":
        return []
    status = payment.intent_status or "not found"
    return [
        Drift(
            type=DriftType.STATUS_MISMATCH,
            kind="payment",
            psp_id=payment.psp_id,
            detail=f"the records hold the payment as paid; its PaymentIntent is {status}",
            tenants=(str(payment.tenant),),
            psp_status=payment.intent_status,
            payment=str(payment.id),
        )
    ]


# ---- reading ----------------------------------------------------------------------------

_TENANTS = "SELECT tenant FROM ledger_books UNION SELECT id FROM tenants ORDER BY 1"
# Every entry that belongs to the window or names one of its PSP objects, with what it moved
# and whether a reversal cancels it. The tenant is named in every clause: a superuser owner
# sees every row whatever row-level security says.
_ENTRIES = """
WITH wanted AS (
    SELECT e.id FROM ledger_entries e
    WHERE e.tenant_id = %(tenant)s AND e.posted_at >= %(start)s AND e.posted_at < %(end)s
    UNION
    SELECT e.reverses FROM ledger_entries e
    WHERE e.tenant_id = %(tenant)s AND e.posted_at >= %(start)s AND e.posted_at < %(end)s
      AND e.reverses IS NOT NULL
    UNION
    SELECT e.id FROM ledger_entries e
    JOIN unnest(%(kinds)s::text[], %(references)s::text[]) AS w(kind, reference)
        ON e.kind = w.kind AND e.reference = w.reference
    WHERE e.tenant_id = %(tenant)s
)
SELECT e.id, e.kind, e.reference, e.payment, e.posted_at,
       (e.posted_at >= %(start)s AND e.posted_at < %(end)s
        OR r.posted_at >= %(start)s AND r.posted_at < %(end)s) AS of_window,
       r.id IS NOT NULL AS reversed,
       coalesce((SELECT sum(p.amount) FROM ledger_postings p
                 WHERE p.tenant_id = e.tenant_id AND p.entry_id = e.id AND p.amount > 0), 0),
       (SELECT array_agg(DISTINCT p.currency) FROM ledger_postings p
        WHERE p.tenant_id = e.tenant_id AND p.entry_id = e.id)
FROM ledger_entries e
LEFT JOIN ledger_entries r ON r.tenant_id = e.tenant_id AND r.reverses = e.id
WHERE e.tenant_id = %(tenant)s AND e.kind <> 'reversal' AND e.id IN (SELECT id FROM wanted)
ORDER BY e.seq
"""
# The tenant's payments of the window's PaymentIntents (whose tenant they tell), and those it
# holds as paid that are in play: confirmed in the window, or of the window's intents.
_PAYMENTS = """
SELECT id, psp_id,
       status = 'succeeded'
           AND (psp_id = ANY(%(intents)s::text[])
                OR confirmed_at >= %(start)s AND confirmed_at < %(end)s) AS paid
FROM payments
WHERE tenant_id = %(tenant)s AND psp_id IS NOT NULL
  AND (psp_id = ANY(%(intents)s::text[])
       OR status = 'succeeded' AND confirmed_at >= %(start)s AND confirmed_at < %(end)s)
ORDER BY id
"""

#: A payment of the records: (tenant, id, its PaymentIntent, held as paid and in play).
_Payment = tuple[uuid.UUID, uuid.UUID, str, bool]


async def _read_tenant(
    conn: psycopg.AsyncConnection[Any],
    tenant: uuid.UUID,
    arguments: dict[str, Any],
    evidence: Evidence,
) -> list[_Payment]:
    """The tenant's entries into `evidence`, and its payments of interest (`_PAYMENTS`)."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
        values = {**arguments, "tenant": tenant}
        cursor = await conn.execute(_ENTRIES, values)
        for row in await cursor.fetchall():
            entry, kind, reference, payment, posted_at, of_window, reversed_, amount, kinds = row
            currencies = sorted(kinds or [])
            record = LedgerRecord(
                tenant=tenant,
                id=entry,
                kind=kind,
                reference=reference,
                amount=int(amount),
                currency=currencies[0] if len(currencies) == 1 else "mixed",
                posted_at=posted_at,
                reversed=bool(reversed_),
                payment=payment,
            )
            evidence.ledger.append(record)
            if of_window:
                evidence.ledger_of_window.add(entry)
        cursor = await conn.execute(_PAYMENTS, values)
        return [(tenant, *row) for row in await cursor.fetchall()]


async def _read_ledger(
    conn: psycopg.AsyncConnection[Any],
    evidence: Evidence,
    references: list[tuple[str, str]],
    intents: list[str],
    progress: Progress | None,
) -> list[_Payment]:
    cursor = await conn.execute(_TENANTS)
    tenants = [row[0] for row in await cursor.fetchall()]
    arguments = {
        "start": evidence.start,
        "end": evidence.end,
        "kinds": [kind for kind, _ in references],
        "references": [reference for _, reference in references],
        "intents": intents,
    }
    payments = []
    for done, tenant in enumerate(tenants, start=1):
        payments.extend(await _read_tenant(conn, tenant, arguments, evidence))
        if progress is not None:
            progress("ledger books", done)
    return payments


def _window_references(evidence: Evidence) -> list[tuple[str, str]]:
    """The (kind, reference) pairs the ledger would record the window's PSP side under."""
    pairs: set[tuple[str, str]] = set()
    for psp_id in evidence.window_ids:
        movement = evidence.movements.get(psp_id)
        found = movement.object if movement is not None else _object_of_id(psp_id)
        if found in KIND_OF_OBJECT:
            pairs.add((KIND_OF_OBJECT[found], psp_id))
    for transaction in evidence.transactions:
        pairs.add(("psp_fee", transaction.id))
    return sorted(pairs)


async def read_evidence(
    owner: psycopg.AsyncConnection[Any],
    psp: StripePsp,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> Evidence:
    """Read both sides for the window [`start`, `end`): the PSP's list, every book (through
    `owner`, an autocommit connection as the database owner), then the PSP objects of the
    window's entries the list did not have, and the paid payments' intents."""
    evidence = Evidence(start=start, end=end)
    created = {"created_from": int(start.timestamp()), "created_until": int(end.timestamp())}
    evidence.transactions = await psp.balance_transactions(
        **created, sources=True, progress=_told(progress, "PSP balance transactions")
    )
    for transaction in evidence.transactions:
        evidence.fee_transactions[transaction.id] = transaction
        source = transaction.source or transaction.id
        evidence.window_ids.add(source)
        if transaction.source_object is not None:
            evidence.movements[source] = transaction.source_object
    for payout in await psp.payouts(**created, progress=_told(progress, "PSP payouts")):
        evidence.window_ids.add(payout.id)
        evidence.movements[payout.id] = payout
    intents = sorted({m.payment_intent for m in evidence.movements.values() if m.payment_intent})
    payments = await _read_ledger(owner, evidence, _window_references(evidence), intents, progress)
    # A charge names its tenant through its PaymentIntent's payment in the records.
    tenants = {intent: tenant for tenant, _, intent, _ in payments}
    for psp_id, movement in list(evidence.movements.items()):
        if movement.tenant_id is None and movement.payment_intent in tenants:
            evidence.movements[psp_id] = replace(
                movement, tenant_id=tenants[movement.payment_intent]
            )

    await _fetch_missing(psp, evidence)
    await _paid_payments(psp, evidence, [p for p in payments if p[3]])
    return evidence


async def _fetch_missing(psp: StripePsp, evidence: Evidence) -> None:
    """The PSP objects of the window's entries that the window's list did not have (created
    on another day, or not at all), asked for by id."""
    for record in evidence.ledger:
        if record.id not in evidence.ledger_of_window:
            continue
        if record.kind == "psp_fee":
            wanted = record.reference
            if wanted not in evidence.fee_transactions and wanted.startswith("txn_"):
                fetched = await psp.retrieve_balance_transaction(wanted)
                if fetched is not None:
                    evidence.fee_transactions[fetched.id] = fetched
        elif record.reference not in evidence.movements:
            movement = await psp.retrieve_movement(record.reference)
            if movement is not None:
                evidence.movements[movement.id] = movement


async def _paid_payments(psp: StripePsp, evidence: Evidence, paid: list[_Payment]) -> None:
    """Each paid payment in play with its PaymentIntent's status, asked of the PSP as its
    tenant's (an intent tagged with another tenant is not found): one call per payment."""
    for tenant, payment_id, intent, _ in paid:
        try:
            status: str | None = (await psp.retrieve_payment_intent(tenant, intent)).status
        except PspNotFoundError:
            status = None
        evidence.payments.append(PaidPayment(tenant, payment_id, intent, status))


def _told(progress: Progress | None, what: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda count: progress(what, count)


# ---- the daily run ----------------------------------------------------------------------

_STORE = """
INSERT INTO reconciliation_runs (day, started_at, finished_at, status, psp_transactions,
    psp_objects, ledger_entries, matched, drift_count, drift)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
RETURNING id
"""


async def reconcile_day(
    owner_url: URL,
    psp: StripePsp,
    day: date,
    *,
    alerter: Alerter | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> ReconciliationReport:
    """Reconcile the UTC `day`: read both sides, compare, store the run, and raise a
    `reconciliation_drift` alert when there is drift (through `alerter`; the counter and the
    log line only when None). `owner_url`: the database owner's URL. A day that has not begun
    is a ValueError."""
    started = now or datetime.now(UTC)
    if day > started.date():
        raise ValueError(f"{day.isoformat()} has not begun (UTC): nothing to reconcile yet")
    start, end = day_window(day)
    async with await psycopg.AsyncConnection.connect(libpq(owner_url), autocommit=True) as conn:
        evidence = await read_evidence(conn, psp, start, end, progress=progress)
        drift, checked, matched = compare(evidence)
        report = ReconciliationReport(
            day=day,
            started_at=started,
            finished_at=max(datetime.now(UTC), started),
            psp_transactions=len(evidence.transactions),
            psp_objects=checked,
            ledger_entries=len(evidence.ledger),
            matched=matched,
            drift=drift,
        )
        cursor = await conn.execute(
            _STORE,
            (
                day,
                report.started_at,
                report.finished_at,
                report.status,
                report.psp_transactions,
                report.psp_objects,
                report.ledger_entries,
                report.matched,
                len(drift),
                json.dumps([d.as_json() for d in drift]),
            ),
        )
        row = await cursor.fetchone()
        report.run_id = row[0] if row else None
    if drift:
        await (alerter or Alerter()).raise_alert(
            AlertKind.RECONCILIATION_DRIFT,
            f"reconciliation of {day.isoformat()}: {len(drift)} drift item(s)",
            {
                "day": day.isoformat(),
                "run_id": str(report.run_id),
                "drift": report.drift_counts(),
                "psp_ids": sorted({d.psp_id for d in drift})[:20],
            },
        )
    return report


async def stored_runs(
    owner: psycopg.AsyncConnection[Any], day: date | None = None
) -> list[dict[str, Any]]:
    """The stored runs (of `day`, when given), oldest first."""
    cursor = await owner.execute(
        "SELECT id, day, started_at, finished_at, status, psp_transactions, psp_objects, "
        "ledger_entries, matched, drift_count, drift FROM reconciliation_runs "
        "WHERE %(day)s::date IS NULL OR day = %(day)s ORDER BY started_at, id",
        {"day": day},
    )
    names = [column.name for column in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]
