"""The ledger service (PAY-5): the money flows' entries, their balances, replays, conflicts,
funds that cannot be overdrawn, and reversals, over a real database as the runtime role."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments.ledger import (
    MAX_AMOUNT,
    PSP_CLEARING,
    PSP_FEES,
    Account,
    AccountKind,
    Balance,
    EntryDraft,
    EntryKind,
    InsufficientFundsError,
    InvalidEntryError,
    Ledger,
    LedgerConflictError,
    Posting,
    held_funds,
)

pytestmark = pytest.mark.anyio

LEDGER = Ledger()


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    database = Database(urls.app, pool_size=4)
    yield database
    await database.dispose()


async def _deposit(database: Database, tenant: uuid.UUID, payment: str, amount: int) -> None:
    async with database.tenant_session(tenant) as session:
        await LEDGER.record_deposit(session, payment=payment, amount=amount, currency="eur")


async def test_a_payments_movements_post_the_right_entries_and_balances(
    database: Database,
) -> None:
    tenant, payment = uuid.uuid4(), "pi_life"
    async with database.tenant_session(tenant) as session:
        deposit = await LEDGER.record_deposit(
            session, payment=payment, amount=10_000, currency="eur", reference="ch_life"
        )
        await LEDGER.record_psp_fee(
            session, payment=payment, reference="txn_fee", amount=320, currency="eur"
        )
        await LEDGER.record_refund(
            session, payment=payment, refund="re_1", amount=2_000, currency="EUR"
        )
        await LEDGER.record_disbursement(
            session, payment=payment, disbursement="po_1", amount=7_000, currency="EUR"
        )
    assert deposit.postings == (
        ("psp_clearing", "EUR", 10_000),
        ("held_funds:pi_life", "EUR", -10_000),
    )
    assert (deposit.kind, deposit.reference, deposit.payment) == (
        EntryKind.DEPOSIT,
        "ch_life",
        payment,
    )
    async with database.tenant_session(tenant) as session:
        balances = await LEDGER.balances(session)
        entries = await LEDGER.entries_of(session, payment)
        held = await LEDGER.balance(session, held_funds(payment), "eur")
    assert balances == [
        Balance("held_funds:pi_life", "EUR", AccountKind.LIABILITY, -1_000),
        Balance("psp_clearing", "EUR", AccountKind.ASSET, 680),
        Balance("psp_fees", "EUR", AccountKind.EXPENSE, 320),
    ]
    assert [b.balance for b in balances] == [1_000, 680, 320]
    assert held == 1_000
    assert [(e.kind, e.reference) for e in entries] == [
        (EntryKind.DEPOSIT, "ch_life"),
        (EntryKind.PSP_FEE, "txn_fee"),
        (EntryKind.REFUND, "re_1"),
        (EntryKind.DISBURSEMENT, "po_1"),
    ]
    assert sum(b.net for b in balances) == 0


async def test_another_tenant_sees_and_moves_none_of_it(database: Database) -> None:
    owner, other = uuid.uuid4(), uuid.uuid4()
    await _deposit(database, owner, "pi_mine", 500)
    async with database.tenant_session(other) as session:
        assert await LEDGER.balances(session) == []
        assert await LEDGER.entry(session, EntryKind.DEPOSIT, "pi_mine") is None
        assert await LEDGER.balance(session, held_funds("pi_mine"), "EUR") == 0
        # Its own posting under the same reference is its own, and cannot draw on mine.
        with pytest.raises(InsufficientFundsError, match="holds 0 EUR"):
            await LEDGER.record_refund(
                session, payment="pi_mine", refund="re_x", amount=1, currency="EUR"
            )


async def test_posting_again_replays_the_first_entry_and_other_postings_conflict(
    database: Database,
) -> None:
    tenant = uuid.uuid4()
    async with database.tenant_session(tenant) as session:
        first = await LEDGER.record_deposit(
            session, payment="pi_twice", amount=1_000, currency="EUR"
        )
    async with database.tenant_session(tenant) as session:
        again = await LEDGER.record_deposit(
            session, payment="pi_twice", amount=1_000, currency="eur"
        )
        assert again.replayed
        assert not first.replayed
        assert (again.id, again.postings, again.posted_at) == (
            first.id,
            first.postings,
            first.posted_at,
        )
        with pytest.raises(LedgerConflictError, match="already posted with other postings"):
            await LEDGER.record_deposit(session, payment="pi_twice", amount=999, currency="EUR")
    async with database.tenant_session(tenant) as session:
        assert await LEDGER.balance(session, PSP_CLEARING, "EUR") == 1_000
        assert len(await LEDGER.entries_of(session, "pi_twice")) == 1


async def test_concurrent_duplicates_post_one_entry(database: Database) -> None:
    tenant = uuid.uuid4()
    await asyncio.gather(*(_deposit(database, tenant, "pi_race", 700) for _ in range(4)))
    async with database.tenant_session(tenant) as session:
        assert await LEDGER.balance(session, PSP_CLEARING, "EUR") == 700
        assert len(await LEDGER.entries_of(session, "pi_race")) == 1


async def test_refunds_and_disbursements_cannot_draw_more_than_is_held(
    database: Database,
) -> None:
    tenant = uuid.uuid4()
    await _deposit(database, tenant, "pi_small", 1_000)
    async with database.tenant_session(tenant) as session:
        with pytest.raises(InsufficientFundsError, match="holds 1000 EUR; the entry takes 1001"):
            await LEDGER.record_refund(
                session, payment="pi_small", refund="re_big", amount=1_001, currency="EUR"
            )
        await LEDGER.record_refund(
            session, payment="pi_small", refund="re_part", amount=400, currency="EUR"
        )
        with pytest.raises(InsufficientFundsError, match="holds 600 EUR"):
            await LEDGER.record_disbursement(
                session, payment="pi_small", disbursement="po_big", amount=601, currency="EUR"
            )
        # Held funds are per currency: none are held in USD.
        with pytest.raises(InsufficientFundsError, match="holds 0 USD"):
            await LEDGER.record_refund(
                session, payment="pi_small", refund="re_usd", amount=1, currency="USD"
            )
    async with database.tenant_session(tenant) as session:
        assert await LEDGER.balance(session, held_funds("pi_small"), "EUR") == 600


async def test_concurrent_refunds_take_turns_on_the_held_funds(database: Database) -> None:
    tenant = uuid.uuid4()
    await _deposit(database, tenant, "pi_contested", 10_000)

    async def refund(number: int) -> bool:
        try:
            async with database.tenant_session(tenant) as session:
                await LEDGER.record_refund(
                    session,
                    payment="pi_contested",
                    refund=f"re_{number}",
                    amount=6_000,
                    currency="EUR",
                )
                await asyncio.sleep(0.2)  # hold the lock while the other one waits
        except InsufficientFundsError:
            return False
        return True

    assert sorted(await asyncio.gather(refund(1), refund(2))) == [False, True]
    async with database.tenant_session(tenant) as session:
        assert await LEDGER.balance(session, held_funds("pi_contested"), "EUR") == 4_000


async def test_a_reversal_mirrors_its_entry_once(database: Database) -> None:
    tenant = uuid.uuid4()
    async with database.tenant_session(tenant) as session:
        await LEDGER.record_deposit(session, payment="pi_rev", amount=5_000, currency="EUR")
        fee = await LEDGER.record_psp_fee(
            session, payment="pi_rev", reference="txn_wrong", amount=150, currency="EUR"
        )
    async with database.tenant_session(tenant) as session:
        reversal = await LEDGER.reverse(session, fee.id, reference="fix:txn_wrong")
        assert reversal.reverses == fee.id
        assert reversal.postings == (("psp_fees", "EUR", -150), ("psp_clearing", "EUR", 150))
        assert await LEDGER.balance(session, PSP_FEES, "EUR") == 0
        assert await LEDGER.balance(session, PSP_CLEARING, "EUR") == 5_000
        with pytest.raises(LedgerConflictError, match="already reversed"):
            await LEDGER.reverse(session, fee.id, reference="fix:again")
        with pytest.raises(LedgerConflictError, match="is a reversal"):
            await LEDGER.reverse(session, reversal.id, reference="fix:fix")
        # The same reversal again (a retried correction) is the first one.
        again = await LEDGER.reverse(session, fee.id, reference="fix:txn_wrong")
        assert (again.id, again.replayed) == (reversal.id, True)
    async with database.tenant_session(tenant) as session:
        with pytest.raises(LedgerConflictError, match="no entry"):
            await LEDGER.reverse(session, uuid.uuid4(), reference="fix:nothing")


async def test_a_deposit_already_paid_out_cannot_be_reversed(database: Database) -> None:
    tenant = uuid.uuid4()
    async with database.tenant_session(tenant) as session:
        deposit = await LEDGER.record_deposit(
            session, payment="pi_gone", amount=800, currency="EUR"
        )
        await LEDGER.record_disbursement(
            session, payment="pi_gone", disbursement="po_gone", amount=800, currency="EUR"
        )
        with pytest.raises(InsufficientFundsError, match="holds 0 EUR; the entry takes 800"):
            await LEDGER.reverse(session, deposit.id, reference="fix:pi_gone")


CASH = Account("cash", AccountKind.ASSET)
INCOME = Account("income", AccountKind.REVENUE)


@pytest.mark.parametrize(
    ("postings", "message"),
    [
        ((Posting(CASH, "EUR", 100), Posting(INCOME, "EUR", -99)), "does not balance"),
        ((Posting(CASH, "EUR", 100), Posting(INCOME, "USD", -100)), "does not balance"),
        ((Posting(CASH, "EUR", 0), Posting(INCOME, "EUR", 0)), "non-zero integer"),
        ((Posting(CASH, "EUR", True), Posting(INCOME, "EUR", -1)), "non-zero integer"),
        ((Posting(CASH, "EUR", 1.5), Posting(INCOME, "EUR", -1.5)), "non-zero integer"),  # type: ignore[arg-type]
        ((Posting(CASH, "EURO", 1), Posting(INCOME, "EURO", -1)), "ISO 4217"),
        ((Posting(CASH, "EUR", MAX_AMOUNT + 1), Posting(INCOME, "EUR", -MAX_AMOUNT - 1)), "1 to"),
        ((Posting(CASH, "EUR", 1),), "2 to 64 postings"),
    ],
)
async def test_a_malformed_entry_is_refused_with_what_is_wrong(
    database: Database, postings: tuple[Posting, ...], message: str
) -> None:
    tenant = uuid.uuid4()
    async with database.tenant_session(tenant) as session:
        with pytest.raises(InvalidEntryError, match=message):
            await LEDGER.post(session, EntryDraft(EntryKind.DEPOSIT, "ch_bad", postings))
        assert await LEDGER.balances(session) == []


async def test_references_and_payments_are_checked(database: Database) -> None:
    tenant = uuid.uuid4()
    async with database.tenant_session(tenant) as session:
        with pytest.raises(InvalidEntryError, match="payment must be"):
            await LEDGER.record_deposit(session, payment="pi:1", amount=1, currency="EUR")
        with pytest.raises(InvalidEntryError, match="reference must be"):
            await LEDGER.record_psp_fee(
                session, payment="pi_1", reference="x" * 256, amount=1, currency="EUR"
            )
        with pytest.raises(InvalidEntryError, match="only a reversal"):
            await LEDGER.post(
                session,
                EntryDraft(
                    EntryKind.DEPOSIT,
                    "ch_1",
                    (Posting(CASH, "EUR", 1), Posting(INCOME, "EUR", -1)),
                    reverses=uuid.uuid4(),
                ),
            )


async def test_a_multi_currency_entry_balances_per_currency(database: Database) -> None:
    tenant = uuid.uuid4()
    postings = (
        Posting(CASH, "EUR", 100),
        Posting(INCOME, "EUR", -100),
        Posting(CASH, "USD", 110),
        Posting(INCOME, "USD", -110),
    )
    async with database.tenant_session(tenant) as session:
        await LEDGER.post(session, EntryDraft(EntryKind.DEPOSIT, "ch_fx", postings))
        balances = {(b.account, b.currency): b.balance for b in await LEDGER.balances(session)}
    assert balances == {
        ("cash", "EUR"): 100,
        ("cash", "USD"): 110,
        ("income", "EUR"): 100,
        ("income", "USD"): 110,
    }
