"""Property: whatever sequence of deposits, refunds, payouts and refunds that fail (reversed as
the worker reverses them) the money flows make, at a real localstripe process and in real
books, every entry stays balanced and reconciliation is clean; and each fault injected on
either side makes it report exactly the drift types those faults are."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.payments.ledger import EntryKind
from ramparts.payments.ledger_verify import ledger_books, verify_book
from ramparts.payments.reconcile import DriftType
from ramparts.payments.sandbox import Sandbox
from tests.payments.reconciliation import Paid, World, fresh_database  # noqa: F401 - a fixture


@dataclass(frozen=True)
class Step:
    move: str  # deposit, refund, payout, failed_refund
    amount: int  # a deposit's amount, or the share (in %) of what is left that is drawn
    currency: str
    pick: int  # which deposit a refund or payout draws on


#: What each injected fault is, as reconciliation must name it.
FAULTS = {
    "charge_not_recorded": {DriftType.MISSING_IN_LEDGER},
    "entry_without_charge": {DriftType.MISSING_AT_PSP},
    "amount_off_by_one": {DriftType.AMOUNT_MISMATCH},
    "other_currency": {DriftType.CURRENCY_MISMATCH},
    # The sandbox's fees are always 0: a fee entry is a fee the PSP did not keep.
    "fee_not_kept": {DriftType.FEE_MISMATCH},
    "refund_canceled_not_reversed": {DriftType.STATUS_MISMATCH},
    # Two books claim one charge, and one of them is not the tenant it is tagged with.
    "charge_in_two_books": {DriftType.DUPLICATE, DriftType.TENANT_MISMATCH},
}

steps = st.builds(
    Step,
    move=st.sampled_from(["deposit", "deposit", "refund", "payout", "failed_refund"]),
    amount=st.integers(min_value=1, max_value=100),
    currency=st.sampled_from(["eur", "usd"]),
    pick=st.integers(min_value=0, max_value=10),
)


async def _play(world: World, plan: list[Step]) -> None:
    tenants = [world.tenant(), world.tenant()]
    deposits: list[tuple[Paid, int]] = []  # with what is still held
    for number, step in enumerate(plan):
        if step.move == "deposit" or not deposits:
            tenant = tenants[number % 2]
            amount = 100 * step.amount + number  # distinct amounts
            deposits.append((await world.deposit(tenant, amount, step.currency), amount))
            continue
        index = step.pick % len(deposits)
        paid, held = deposits[index]
        drawn = max(1, held * step.amount // 100)
        if held < drawn or (step.move == "payout" and paid.intent.currency != "eur"):
            continue  # nothing left to draw, or a payout the sandbox cannot make
        if step.move == "payout":
            await world.payout(paid, drawn)
        else:
            refund = await world.refund(paid, drawn)
            if step.move == "failed_refund":
                world.psp_sets(f"refunds/{refund}", status="canceled")
                await world.reverse(paid.tenant, EntryKind.REFUND, refund)
                continue  # given back: still held
        deposits[index] = (paid, held - drawn)


async def _inject(world: World, fault: str) -> None:
    tenant = world.tenant()
    if fault == "charge_not_recorded":
        await world.pay(tenant, 1_234)
    elif fault == "entry_without_charge":
        await world.invented_deposit(tenant, 1_234, "ch_neverattheprovider")
    elif fault == "amount_off_by_one":
        await world.deposit(tenant, 1_234, in_ledger=1_235)
    elif fault == "other_currency":
        await world.deposit(tenant, 1_234, currency_in_ledger="gbp")
    elif fault == "fee_not_kept":
        await world.fee(await world.deposit(tenant, 1_234), 40)
    elif fault == "refund_canceled_not_reversed":
        refund = await world.refund(await world.deposit(tenant, 1_234), 234)
        world.psp_sets(f"refunds/{refund}", status="canceled")
    elif fault == "charge_in_two_books":
        paid = await world.deposit(tenant, 1_234)
        await world.post_deposit(world.tenant(), paid, 1_234, "eur")


async def _scenario(urls: DatabaseUrls, plan: list[Step], faults: list[str]) -> None:
    with Sandbox() as sandbox:
        world = World.open(urls, sandbox)
        try:
            await _play(world, plan)
            for fault in faults:
                await _inject(world, fault)
            report = await world.reconcile()
        finally:
            await world.close()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        books = [verify_book(owner, tenant) for tenant in ledger_books(owner)]
    assert books
    assert all(book.intact for book in books), [b.problems for b in books if b.problems]
    assert report.clean == (not faults), report.as_json()
    assert {item.type for item in report.drift} == set().union(*(FAULTS[f] for f in faults))
    assert report.matched == report.psp_objects - sum(
        1 for _ in {(d.kind, d.psp_id) for d in report.drift}
    )


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    plan=st.lists(steps, min_size=1, max_size=6),
    faults=st.lists(st.sampled_from(sorted(FAULTS)), max_size=2, unique=True),
)
def test_books_stay_balanced_and_reconcile_clean_exactly_without_faults(
    fresh_database: Callable[[], DatabaseUrls],  # noqa: F811
    plan: list[Step],
    faults: list[str],
) -> None:
    asyncio.run(_scenario(fresh_database(), plan, faults))
