"""The double-entry ledger (PAY-5): what the money flows post, and the balances they read.

Amounts are integers in minor units; a posting's positive amount is a debit, a negative one a
credit; an account is a name in one currency. Every method works inside the caller's tenant
session (`Database.tenant_session`), so a posting commits or rolls back with the state change
it records, and the tenant is always the session's (row-level security), never an argument.

The service checks an entry before sending it, for a precise error; the database checks it
again (migration 0020_ledger), whoever writes: at COMMIT, every entry must balance per
currency, and nothing posted can change. An entry is identified by its kind and `reference`
(the PSP object the movement is): posting it again returns the first one (`replayed`), and
posting other postings under the same reference is a conflict, so a retried webhook or job
never moves money twice.

The chart of accounts, per currency:
- `psp_clearing` (asset): money at the PSP.
- `held_funds:<payment>` (liability, never negative): what a payment brought in and is still
  held for it; refunds and disbursements draw on it, and cannot draw more than is left.
- `psp_fees` (expense): what the PSP charged.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import driver_of
from ramparts.db.rls import CURRENT_TENANT

__all__ = [
    "MAX_AMOUNT",
    "PSP_CLEARING",
    "PSP_FEES",
    "Account",
    "AccountKind",
    "Balance",
    "EntryDraft",
    "EntryKind",
    "InsufficientFundsError",
    "InvalidEntryError",
    "Ledger",
    "LedgerConflictError",
    "LedgerError",
    "PostedEntry",
    "Posting",
    "held_funds",
]

#: The largest amount of one posting (the database's bound too): 10^15 minor units.
MAX_AMOUNT = 10**15
MAX_POSTINGS = 64
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_REFERENCE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
#: A payment id is part of an account name, whose own separator is `:`.
_PAYMENT = re.compile(r"[A-Za-z0-9_.-]{1,255}")


class EntryKind(StrEnum):
    DEPOSIT = "deposit"
    PSP_FEE = "psp_fee"
    REFUND = "refund"
    DISBURSEMENT = "disbursement"
    REVERSAL = "reversal"


class AccountKind(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """Whether a debit raises the account's balance (assets and expenses)."""
        return self in {AccountKind.ASSET, AccountKind.EXPENSE}


class LedgerError(Exception):
    """A posting the ledger refuses."""


class InvalidEntryError(LedgerError, ValueError):
    """The entry is malformed: unbalanced, too few postings, a bad amount or currency."""


class LedgerConflictError(LedgerError):
    """The reference already names a different entry, or the entry is already reversed."""


class InsufficientFundsError(LedgerError):
    """The entry would take a never-negative account below zero."""


@dataclass(frozen=True)
class Account:
    """An account of the chart; the currency is the posting's."""

    name: str
    kind: AccountKind
    never_negative: bool = False


PSP_CLEARING = Account("psp_clearing", AccountKind.ASSET)
PSP_FEES = Account("psp_fees", AccountKind.EXPENSE)


def held_funds(payment: str) -> Account:
    """What `payment` brought in and is still held for it."""
    return Account(f"held_funds:{_payment(payment)}", AccountKind.LIABILITY, True)


@dataclass(frozen=True)
class Posting:
    account: Account
    currency: str
    amount: int  # minor units; positive debits the account, negative credits it


@dataclass(frozen=True)
class EntryDraft:
    kind: EntryKind
    reference: str
    postings: tuple[Posting, ...]
    payment: str | None = None
    reverses: uuid.UUID | None = None


@dataclass(frozen=True)
class PostedEntry:
    id: uuid.UUID
    kind: EntryKind
    reference: str
    payment: str | None
    reverses: uuid.UUID | None
    posted_at: datetime
    #: (account name, currency, amount), in posting order.
    postings: tuple[tuple[str, str, int], ...]
    #: True when the entry was already there (the same postings under the same reference).
    replayed: bool = field(default=False, compare=False)
    #: The order it was posted in, within the tenant's book (a page's cursor).
    seq: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Balance:
    account: str
    currency: str
    kind: AccountKind
    #: Debits minus credits.
    net: int

    @property
    def balance(self) -> int:
        """The balance on the account's normal side (what an asset holds, a liability owes)."""
        return self.net if self.kind.debit_normal else -self.net


def _reference(value: str, what: str) -> str:
    if not isinstance(value, str) or not _REFERENCE.fullmatch(value):
        raise InvalidEntryError(f"{what} must be 1-255 letters, digits or _.:- characters")
    return value


def _payment(value: str) -> str:
    if not isinstance(value, str) or not _PAYMENT.fullmatch(value):
        raise InvalidEntryError("payment must be 1-255 letters, digits or _.- characters")
    return value


def _currency(value: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise InvalidEntryError("currency must be a three-letter ISO 4217 code")
    return value.upper()  # the PSP writes `eur`; the ledger keeps `EUR`


def _amount(value: int) -> int:
    # bool is an int to Python, never an amount.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_AMOUNT:
        raise InvalidEntryError(f"amount must be an integer of minor units, 1 to {MAX_AMOUNT}")
    return value


def _checked(draft: EntryDraft) -> EntryDraft:
    """The draft with currencies normalised, or InvalidEntryError saying what is wrong."""
    _reference(draft.reference, "reference")
    if draft.payment is not None:
        _payment(draft.payment)
    if (draft.kind is EntryKind.REVERSAL) != (draft.reverses is not None):
        raise InvalidEntryError("a reversal, and only a reversal, names the entry it reverses")
    if not 2 <= len(draft.postings) <= MAX_POSTINGS:
        raise InvalidEntryError(f"an entry has 2 to {MAX_POSTINGS} postings")
    postings = []
    totals: dict[str, int] = defaultdict(int)
    for posting in draft.postings:
        amount = posting.amount
        if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
            raise InvalidEntryError("a posting's amount is a non-zero integer of minor units")
        _amount(abs(amount))
        currency = _currency(posting.currency)
        totals[currency] += amount
        postings.append(Posting(posting.account, currency, amount))
    off = {currency: total for currency, total in totals.items() if total}
    if off:
        raise InvalidEntryError(f"the entry does not balance: {off} off")
    return EntryDraft(draft.kind, draft.reference, tuple(postings), draft.payment, draft.reverses)


_POST = f"""
WITH accounts AS (
    INSERT INTO ledger_accounts (tenant_id, name, currency, kind, never_negative)
    SELECT {CURRENT_TENANT}, a.name, a.currency, a.kind, a.never_negative
    FROM unnest(%(names)s::text[], %(currencies)s::text[], %(kinds)s::text[],
                %(never_negative)s::boolean[]) AS a(name, currency, kind, never_negative)
    ON CONFLICT DO NOTHING
), entry AS (
    INSERT INTO ledger_entries (tenant_id, kind, reference, payment, reverses)
    VALUES ({CURRENT_TENANT}, %(kind)s, %(reference)s, %(payment)s, %(reverses)s)
    ON CONFLICT (tenant_id, kind, reference) DO NOTHING
    RETURNING tenant_id, id, posted_at
), postings AS (
    INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, amount)
    SELECT entry.tenant_id, entry.id, p.position, p.account, p.currency, p.amount
    FROM entry, unnest(%(names)s::text[], %(currencies)s::text[], %(amounts)s::bigint[])
        WITH ORDINALITY AS p(account, currency, amount, position)
)
SELECT id, posted_at FROM entry
"""  # noqa: S608  # nosec B608 # the tenant expression, a constant
#: The same for an entry that draws on never-negative accounts, run once they are locked
#: (`_LOCK`) and in a statement of its own after the lock, so that its snapshot holds what the
#: previous holder of the lock committed: in one round trip, it finds the entry already
#: posted under the reference (a retried refund finds its first posting before its funds are
#: counted again: what it took is no longer held), counts what each drawn account holds, and
#: posts only when the entry is new and every account keeps enough. Its rows say which:
#: `posted` (with the new entry), `replay` (the entry there), or one `short` per account.
_POST_DRAWING = f"""
WITH existing AS (
    SELECT id FROM ledger_entries
    WHERE tenant_id = {CURRENT_TENANT} AND kind = %(kind)s AND reference = %(reference)s
), held AS (
    SELECT d.position, d.account, d.currency, d.change,
           CASE WHEN d.debit_normal THEN 1 ELSE -1 END * coalesce((
               SELECT sum(p.amount) FROM ledger_postings p
               WHERE p.tenant_id = {CURRENT_TENANT} AND p.account = d.account
                 AND p.currency = d.currency), 0) AS held
    FROM unnest(%(drawn_accounts)s::text[], %(drawn_currencies)s::text[],
                %(drawn_changes)s::bigint[], %(drawn_debit_normal)s::boolean[])
        WITH ORDINALITY AS d(account, currency, change, debit_normal, position)
), short AS (
    SELECT position, account, currency, held, change FROM held WHERE held + change < 0
), go AS (
    SELECT WHERE NOT EXISTS (SELECT FROM existing) AND NOT EXISTS (SELECT FROM short)
), accounts AS (
    INSERT INTO ledger_accounts (tenant_id, name, currency, kind, never_negative)
    SELECT {CURRENT_TENANT}, a.name, a.currency, a.kind, a.never_negative
    FROM go, unnest(%(names)s::text[], %(currencies)s::text[], %(kinds)s::text[],
                    %(never_negative)s::boolean[]) AS a(name, currency, kind, never_negative)
    ON CONFLICT DO NOTHING
), entry AS (
    INSERT INTO ledger_entries (tenant_id, kind, reference, payment, reverses)
    SELECT {CURRENT_TENANT}, %(kind)s::text, %(reference)s::text, %(payment)s::text,
           %(reverses)s::uuid
    FROM go
    ON CONFLICT (tenant_id, kind, reference) DO NOTHING
    RETURNING tenant_id, id, posted_at
), postings AS (
    INSERT INTO ledger_postings (tenant_id, entry_id, position, account, currency, amount)
    SELECT entry.tenant_id, entry.id, p.position, p.account, p.currency, p.amount
    FROM entry, unnest(%(names)s::text[], %(currencies)s::text[], %(amounts)s::bigint[])
        WITH ORDINALITY AS p(account, currency, amount, position)
)
SELECT 'posted', id, posted_at, NULL, NULL, NULL::bigint, NULL::bigint, 0::bigint FROM entry
UNION ALL
SELECT 'replay', id, NULL, NULL, NULL, NULL, NULL, 0 FROM existing
UNION ALL
SELECT 'short', NULL, NULL, account, currency, held, change, position FROM short
ORDER BY 8
"""  # noqa: S608  # nosec B608 # the tenant expression, a constant
_ENTRY = """
SELECT e.id, e.kind, e.reference, e.payment, e.reverses, e.posted_at,
       array_agg(p.account ORDER BY p.position), array_agg(p.currency ORDER BY p.position),
       array_agg(p.amount ORDER BY p.position), e.seq
FROM ledger_entries e JOIN ledger_postings p ON p.tenant_id = e.tenant_id AND p.entry_id = e.id
WHERE {where}
GROUP BY e.tenant_id, e.id
"""
_BALANCES = """
SELECT a.name, a.currency, a.kind, coalesce(sum(p.amount), 0)
FROM ledger_accounts a
LEFT JOIN ledger_postings p
    ON p.tenant_id = a.tenant_id AND p.account = a.name AND p.currency = a.currency
WHERE {where}
GROUP BY a.tenant_id, a.name, a.currency, a.kind
ORDER BY a.name, a.currency
"""
#: One lock per account and tenant, held to the end of the transaction: refunds drawing on
#: the same held funds take turns, so two cannot both see enough left.
_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("  # noqa: S608  # nosec B608 # a constant
    f"{CURRENT_TENANT}::text || '/' || a, 20201)) FROM unnest(%s::text[]) AS a ORDER BY a"
)
#: What reversing an entry needs, in one round trip: its kind and payment, its postings with
#: their accounts' kinds, and the reference of the reversal already posted for it, if any.
_REVERSING = f"""
SELECT e.kind, e.payment,
       array_agg(p.account ORDER BY p.position), array_agg(p.currency ORDER BY p.position),
       array_agg(p.amount ORDER BY p.position), array_agg(a.kind ORDER BY p.position),
       array_agg(a.never_negative ORDER BY p.position),
       (SELECT r.reference FROM ledger_entries r
        WHERE r.tenant_id = e.tenant_id AND r.reverses = e.id)
FROM ledger_entries e
JOIN ledger_postings p ON p.tenant_id = e.tenant_id AND p.entry_id = e.id
JOIN ledger_accounts a
    ON a.tenant_id = p.tenant_id AND a.name = p.account AND a.currency = p.currency
WHERE e.tenant_id = {CURRENT_TENANT} AND e.id = %s
GROUP BY e.tenant_id, e.id
"""  # noqa: S608  # nosec B608 # the tenant expression, a constant
#: An account's debits minus credits.
_NET = (
    "SELECT coalesce(sum(amount), 0) FROM ledger_postings "  # noqa: S608  # nosec B608 # a constant
    f"WHERE tenant_id = {CURRENT_TENANT} AND account = %s AND currency = %s"
)


def _drawn(draft: EntryDraft) -> dict[tuple[Account, str], int]:
    """What the entry takes from each never-negative account it lowers (a negative change)."""
    drawn: dict[tuple[Account, str], int] = defaultdict(int)
    for posting in draft.postings:
        account = posting.account
        if account.never_negative:
            normal = posting.amount if account.kind.debit_normal else -posting.amount
            drawn[account, posting.currency] += normal
    return {key: change for key, change in drawn.items() if change < 0}


def _funds_refusal(account: str, currency: str, held: int, change: int) -> InsufficientFundsError:
    return InsufficientFundsError(f"{account} holds {held} {currency}; the entry takes {-change}")


class Ledger:
    """Posts balanced entries and reads balances inside a tenant session."""

    async def post(self, session: AsyncSession, draft: EntryDraft) -> PostedEntry:
        """Post `draft` once: the first entry under its kind and reference is returned when
        it is there already with the same postings; another one is a LedgerConflictError."""
        draft = _checked(draft)
        driver = await driver_of(session)
        drawn = _drawn(draft)
        arguments: dict[str, Any] = {
            "names": [p.account.name for p in draft.postings],
            "currencies": [p.currency for p in draft.postings],
            "kinds": [p.account.kind.value for p in draft.postings],
            "never_negative": [p.account.never_negative for p in draft.postings],
            "amounts": [p.amount for p in draft.postings],
            "kind": draft.kind.value,
            "reference": draft.reference,
            "payment": draft.payment,
            "reverses": draft.reverses,
        }
        statement = _POST
        if drawn:
            await driver.execute(_LOCK, ([f"{a.name}/{currency}" for a, currency in drawn],))
            statement = _POST_DRAWING
            arguments |= {
                "drawn_accounts": [account.name for account, _ in drawn],
                "drawn_currencies": [currency for _, currency in drawn],
                "drawn_changes": list(drawn.values()),
                "drawn_debit_normal": [account.kind.debit_normal for account, _ in drawn],
            }
        try:
            cursor = await driver.execute(statement, arguments)
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "uq_ledger_entries_reverses":
                raise LedgerConflictError(f"entry {draft.reverses} is already reversed") from None
            raise
        except psycopg.errors.ForeignKeyViolation as exc:
            if exc.diag.constraint_name == "fk_ledger_entries_reverses":
                raise LedgerConflictError(f"no entry {draft.reverses} to reverse") from None
            raise
        row = await cursor.fetchone()
        if drawn and row is not None:
            outcome, entry_id, posted_at, account, currency, held, change, _ = row
            if outcome == "replay":
                return await self._replayed(session, draft)
            if outcome == "short":
                raise _funds_refusal(account, currency, int(held), int(change))
            row = (entry_id, posted_at)
        if row is not None:
            postings = tuple((p.account.name, p.currency, p.amount) for p in draft.postings)
            return PostedEntry(
                row[0], draft.kind, draft.reference, draft.payment, draft.reverses, row[1],
                postings,
            )  # fmt: skip
        return await self._replayed(session, draft)

    async def _replayed(self, session: AsyncSession, draft: EntryDraft) -> PostedEntry:
        first = await self.entry(session, draft.kind, draft.reference)
        wanted = tuple((p.account.name, p.currency, p.amount) for p in draft.postings)
        if first is None:  # pragma: no cover - the conflicting row is committed and visible
            raise LedgerConflictError(f"{draft.kind} {draft.reference} conflicts")
        same = (first.postings, first.payment, first.reverses) == (
            wanted,
            draft.payment,
            draft.reverses,
        )
        if not same:
            raise LedgerConflictError(
                f"{draft.kind} {draft.reference} is already posted with other postings"
            )
        return replace(first, replayed=True)

    async def entry(
        self, session: AsyncSession, kind: EntryKind, reference: str
    ) -> PostedEntry | None:
        """The entry posted under `kind` and `reference`, if any."""
        rows = await self._entries(
            session,
            "e.tenant_id = {tenant} AND e.kind = %s AND e.reference = %s",
            (kind.value, reference),
        )
        return rows[0] if rows else None

    async def entries_of(self, session: AsyncSession, payment: str) -> list[PostedEntry]:
        """Every entry of `payment`, in the order they were posted."""
        return await self._entries(session, "e.tenant_id = {tenant} AND e.payment = %s", (payment,))

    async def latest(
        self, session: AsyncSession, *, limit: int, before: int | None = None
    ) -> list[PostedEntry]:
        """The book's `limit` most recent entries, newest first; `before`: only those posted
        before the entry of that `seq` (the next page)."""
        return await self._entries(
            session,
            "e.tenant_id = {tenant} AND (%s::bigint IS NULL OR e.seq < %s::bigint)",
            (before, before),
            order=f"e.seq DESC LIMIT {int(limit)}",
        )

    async def _entries(
        self,
        session: AsyncSession,
        where: str,
        parameters: tuple[Any, ...],
        *,
        order: str = "e.seq",
    ) -> list[PostedEntry]:
        driver = await driver_of(session)
        statement = _ENTRY.format(where=where.format(tenant=CURRENT_TENANT))
        cursor = await driver.execute(statement + f" ORDER BY {order}", parameters)
        return [
            PostedEntry(
                id=row[0],
                kind=EntryKind(row[1]),
                reference=row[2],
                payment=row[3],
                reverses=row[4],
                posted_at=row[5],
                postings=tuple(zip(row[6], row[7], row[8], strict=True)),
                seq=row[9],
            )
            for row in await cursor.fetchall()
        ]

    async def balances(self, session: AsyncSession, *, prefix: str = "") -> list[Balance]:
        """Every account's balance (those whose name starts with `prefix`)."""
        driver = await driver_of(session)
        where = f"a.tenant_id = {CURRENT_TENANT} AND starts_with(a.name, %s)"
        cursor = await driver.execute(_BALANCES.format(where=where), (prefix,))
        return [
            Balance(name, currency, AccountKind(kind), int(net))
            for name, currency, kind, net in await cursor.fetchall()
        ]

    async def balance(self, session: AsyncSession, account: Account, currency: str) -> int:
        """`account`'s balance in `currency` on its normal side (0 when never posted to)."""
        driver = await driver_of(session)
        cursor = await driver.execute(_NET, (account.name, _currency(currency)))
        row = await cursor.fetchone()
        net = int(row[0]) if row else 0
        return net if account.kind.debit_normal else -net

    # The movements the money flows record. Each names the PSP object it is (`reference`)
    # and the payment it belongs to.

    async def record_deposit(
        self, session: AsyncSession, *, payment: str, amount: int, currency: str,
        reference: str | None = None,
    ) -> PostedEntry:  # fmt: skip
        """A payment's money reached the PSP: it is held for the payment."""
        return await self._move(
            session, EntryKind.DEPOSIT, reference or payment, payment,
            PSP_CLEARING, held_funds(payment), amount, currency,
        )  # fmt: skip

    async def record_psp_fee(
        self, session: AsyncSession, *, payment: str, reference: str, amount: int, currency: str
    ) -> PostedEntry:
        """The PSP kept a fee on the payment (`reference`: its balance transaction)."""
        return await self._move(
            session, EntryKind.PSP_FEE, reference, payment, PSP_FEES, PSP_CLEARING, amount,
            currency,
        )  # fmt: skip

    async def record_refund(
        self, session: AsyncSession, *, payment: str, refund: str, amount: int, currency: str
    ) -> PostedEntry:
        """Held funds went back to the payer (`refund`: the PSP's refund)."""
        return await self._move(
            session, EntryKind.REFUND, refund, payment, held_funds(payment), PSP_CLEARING,
            amount, currency,
        )  # fmt: skip

    async def record_disbursement(
        self, session: AsyncSession, *, payment: str, disbursement: str, amount: int,
        currency: str,
    ) -> PostedEntry:  # fmt: skip
        """Held funds were paid out to the payee (`disbursement`: the PSP's transfer or
        payout)."""
        return await self._move(
            session, EntryKind.DISBURSEMENT, disbursement, payment, held_funds(payment),
            PSP_CLEARING, amount, currency,
        )  # fmt: skip

    async def reverse(
        self, session: AsyncSession, entry_id: uuid.UUID, *, reference: str
    ) -> PostedEntry:
        """Cancel a posted entry with its mirror image (the only correction there is)."""
        driver = await driver_of(session)
        cursor = await driver.execute(_REVERSING, (entry_id,))
        row = await cursor.fetchone()
        if row is None:
            raise LedgerConflictError(f"no entry {entry_id} to reverse")
        kind, payment, names, currencies, amounts, kinds, never, reversed_by = row
        if reversed_by == reference:  # this very reversal, asked again
            again = await self.entry(session, EntryKind.REVERSAL, reference)
            if again is not None:
                return replace(again, replayed=True)
        if kind == EntryKind.REVERSAL:
            raise LedgerConflictError(
                f"entry {entry_id} is a reversal: post the movement again instead"
            )
        # Asked first, so the usual refusal leaves the transaction usable; the unique
        # constraint still settles two concurrent reversals.
        if reversed_by is not None:
            raise LedgerConflictError(f"entry {entry_id} is already reversed")
        postings = tuple(
            Posting(Account(name, AccountKind(account_kind), negative), currency, -amount)
            for name, currency, amount, account_kind, negative in zip(
                names, currencies, amounts, kinds, never, strict=True
            )
        )
        draft = EntryDraft(EntryKind.REVERSAL, reference, postings, payment, reverses=entry_id)
        return await self.post(session, draft)

    async def _move(  # noqa: PLR0917 - one movement, spelled out
        self, session: AsyncSession, kind: EntryKind, reference: str, payment: str,
        debit: Account, credit: Account, amount: int, currency: str,
    ) -> PostedEntry:  # fmt: skip
        amount = _amount(amount)
        postings = (Posting(debit, currency, amount), Posting(credit, currency, -amount))
        return await self.post(session, EntryDraft(kind, reference, postings, payment))
