"""Reconciliation (PAY-5) against a real localstripe process and real books: a clean day is
clean and stored; each drift type injected is found, with its PSP id, and nothing else is."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import psycopg
import pytest
from psycopg import errors

from ramparts.alerts import Alerter
from ramparts.db.engine import libpq
from ramparts.payments.ledger import EntryKind
from ramparts.payments.psp import BalanceTransaction, PspMovement
from ramparts.payments.reconcile import (
    DriftType,
    Evidence,
    LedgerRecord,
    compare,
    read_evidence,
    stored_runs,
)
from tests.payments.reconciliation import World

pytestmark = pytest.mark.anyio


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def alert_hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An alert webhook on loopback, and what it received."""
    received: list[dict[str, Any]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    server.shutdown()
    server.server_close()
    thread.join()


def _runs(world: World) -> list[dict[str, Any]]:
    with psycopg.connect(libpq(world.urls.owner), autocommit=True) as conn:
        return [
            dict(zip(("day", "status", "drift_count", "drift"), row, strict=True))
            for row in conn.execute(
                "SELECT day, status, drift_count, drift FROM reconciliation_runs "
                "ORDER BY started_at"
            )
        ]


async def test_a_clean_day_is_clean_and_stored(
    world: World, alert_hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, alerts = alert_hook
    first, second = world.tenant(), world.tenant()
    paid = await world.deposit(first, 10_000)
    await world.refund(paid, 2_500)
    await world.payout(paid, 5_000)
    other = await world.deposit(second, 4_200, "usd")
    await world.refund(other, 4_200)
    # A refund the PSP accepted and then canceled, reversed in the ledger as the worker does:
    # the books and the PSP agree that it did not happen.
    canceled = await world.refund(paid, 1_000)
    world.psp_sets(f"refunds/{canceled}", status="canceled")
    await world.reverse(first, EntryKind.REFUND, canceled)
    # A payout canceled at the PSP and reversed likewise.
    undone = await world.payout(paid, 500)
    world.buyer.v1.payouts.cancel(undone)
    await world.reverse(first, EntryKind.DISBURSEMENT, undone)

    report = await world.reconcile(alerter=Alerter(url))

    assert report.drift == []
    assert report.clean
    assert report.psp_transactions == 5  # 2 charges and 3 refunds; sandbox payouts have none
    # 2 charges, 3 refunds, 2 payouts and 2 paid payments, each checked and matched.
    assert (report.psp_objects, report.matched) == (9, 9)
    assert report.ledger_entries == 7  # reversals are not counted: they mark their entry
    assert alerts == []
    runs = _runs(world)
    assert runs == [{"day": report.day, "status": "clean", "drift_count": 0, "drift": []}]
    # Yesterday saw nothing on either side: clean, and stored too.
    yesterday = await world.reconcile(report.day - timedelta(days=1))
    assert (yesterday.clean, yesterday.psp_transactions, yesterday.ledger_entries) == (
        True,
        0,
        0,
    )
    with pytest.raises(ValueError, match="has not begun"):
        await world.reconcile(report.day + timedelta(days=1))
    assert len(_runs(world)) == 2


async def test_each_drift_type_is_found_with_its_psp_id(
    world: World, alert_hook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, alerts = alert_hook
    tenant, other = world.tenant(), world.tenant()
    fine = await world.deposit(tenant, 3_000)  # agrees everywhere

    # missing_in_ledger: the PSP took the money; no entry records it.
    unrecorded = await world.pay(tenant, 1_500)
    # missing_at_psp: an entry for a charge the PSP never made.
    await world.invented_deposit(tenant, 700, "ch_notattheprovider")
    # amount_mismatch: one cent off; currency_mismatch: another currency.
    off_by_one = await world.deposit(tenant, 2_000, in_ledger=2_001)
    other_currency = await world.deposit(tenant, 900, currency_in_ledger="usd")
    # fee_mismatch: the sandbox's fees are always 0, so a fee entry on a real charge's balance
    # transaction is a fee the PSP did not keep (drift by construction).
    await world.fee(fine, 29)
    # status_mismatch: a refund the PSP canceled after accepting it, still in the ledger...
    canceled = await world.refund(fine, 1_000)
    world.psp_sets(f"refunds/{canceled}", status="canceled")
    # ...a payout the PSP canceled, still in the ledger...
    payout = await world.payout(fine, 500)
    world.buyer.v1.payouts.cancel(payout)
    # ...and a payment held as paid whose intent never succeeded at the PSP.
    unpaid = await world.psp.create_payment_intent(
        other, amount=1_200, currency="eur", idempotency_key="never-paid"
    )
    async with world.database.tenant_session(other) as session:
        from ramparts.payments import records  # noqa: PLC0415 - only this case needs it

        payment = await records.create(
            session, app="shop", subject="order-x", payer_id=None, requested_by=uuid.uuid4(),
            amount=1_200, currency="eur",
        )  # fmt: skip
        payment = await records.set_psp_id(session, payment, unpaid.id, unpaid.status)
        await records.confirm(session, payment, "evt_forged")
    # duplicate: another tenant's book records the same charge.
    shared = await world.deposit(tenant, 1_100)
    await world.post_deposit(other, shared, 1_100, "eur")

    report = await world.reconcile(alerter=Alerter(url))

    found = {(d.type, d.kind, d.psp_id) for d in report.drift}
    assert found == {
        (DriftType.MISSING_IN_LEDGER, "deposit", unrecorded.charge),
        (DriftType.MISSING_AT_PSP, "deposit", "ch_notattheprovider"),
        (DriftType.AMOUNT_MISMATCH, "deposit", off_by_one.charge),
        (DriftType.CURRENCY_MISMATCH, "deposit", other_currency.charge),
        (DriftType.FEE_MISMATCH, "psp_fee", fine.transaction),
        (DriftType.STATUS_MISMATCH, "refund", canceled),
        (DriftType.STATUS_MISMATCH, "disbursement", payout),
        (DriftType.STATUS_MISMATCH, "payment", unpaid.id),
        (DriftType.DUPLICATE, "deposit", shared.charge),
        # ...and the copy in the other book is not in the tenant the charge is tagged with.
        (DriftType.TENANT_MISMATCH, "deposit", shared.charge),
    }
    assert len(report.drift) == len(found)
    assert report.status == "drift"
    by_type = {d.type: d for d in report.drift if d.kind != "payment"}
    amount = by_type[DriftType.AMOUNT_MISMATCH]
    assert (amount.psp_amount, amount.ledger_amount, amount.tenants) == (
        2_000,
        2_001,
        (str(tenant),),
    )
    currency = by_type[DriftType.CURRENCY_MISMATCH]
    assert (currency.psp_currency, currency.ledger_currency) == ("EUR", "USD")
    fee = by_type[DriftType.FEE_MISMATCH]
    assert (fee.psp_amount, fee.ledger_amount) == (0, 29)
    duplicate = by_type[DriftType.DUPLICATE]
    assert set(duplicate.tenants) == {str(tenant), str(other)}
    assert len(duplicate.entries) == 2
    misbooked = by_type[DriftType.TENANT_MISMATCH]  # the book's tenant, and the tag's
    assert (set(misbooked.tenants), len(misbooked.entries)) == ({str(tenant), str(other)}, 1)
    refund = next(d for d in report.drift if d.psp_id == canceled)
    assert refund.psp_status == "canceled"
    assert refund.ledger_amount == 1_000
    paid_item = next(d for d in report.drift if d.kind == "payment")
    assert paid_item.payment == str(payment.id)
    assert paid_item.psp_status == "requires_payment_method"

    # Stored as it was reported, and alerted once, naming ids and counts only.
    [run] = _runs(world)
    assert (run["status"], run["drift_count"]) == ("drift", 10)
    assert run["drift"] == [d.as_json() for d in report.drift]
    assert len(alerts) == 1
    assert alerts[0]["kind"] == "reconciliation_drift"
    assert alerts[0]["details"]["run_id"] == str(report.run_id)
    assert alerts[0]["details"]["drift"] == {
        "amount_mismatch": 1,
        "currency_mismatch": 1,
        "duplicate": 1,
        "fee_mismatch": 1,
        "missing_at_psp": 1,
        "missing_in_ledger": 1,
        "status_mismatch": 3,
        "tenant_mismatch": 1,
    }


async def test_a_charge_failing_late_and_a_reversed_refund_the_psp_made(world: World) -> None:
    """The PSP says a charge failed after the ledger took the deposit (status, and the paid
    payment's intent too); the ledger reversed a refund that the PSP did make."""
    tenant = world.tenant()
    failed = await world.deposit(tenant, 5_000)
    world.psp_sets(f"charges/{failed.charge}", status="failed")
    kept = await world.deposit(tenant, 800)
    refund = await world.refund(kept, 800)
    await world.reverse(tenant, EntryKind.REFUND, refund)

    report = await world.reconcile()

    found = {(d.type, d.kind, d.psp_id): d for d in report.drift}
    assert set(found) == {
        (DriftType.STATUS_MISMATCH, "deposit", failed.charge),
        (DriftType.STATUS_MISMATCH, "payment", failed.intent.id),
        (DriftType.MISSING_IN_LEDGER, "refund", refund),
    }
    assert "reversed" in found[DriftType.MISSING_IN_LEDGER, "refund", refund].detail
    assert found[DriftType.STATUS_MISMATCH, "deposit", failed.charge].psp_status == "failed"


async def test_a_psp_object_of_another_day_is_asked_for_by_id(world: World) -> None:
    """The day's window rule, with a window of seconds instead of a day: a charge created
    before the window and posted inside it is found by its id at the PSP (matched, or its
    amount compared), and an entry naming nothing at the PSP is missing there."""
    tenant = world.tenant()
    early = await world.pay(tenant, 6_100)
    other = await world.pay(tenant, 300)
    created = max(t.created for t in await world.psp.balance_transactions())
    await anyio.sleep(max(0.0, created + 1.2 - time.time()))  # the window starts after them
    start = datetime.fromtimestamp(created + 1, UTC)
    await world.post_deposit(tenant, early, 6_100, "eur")
    await world.post_deposit(tenant, other, 301, "eur")
    await world.fee(other, 10)
    end = datetime.now(UTC) + timedelta(seconds=5)

    async with await psycopg.AsyncConnection.connect(
        libpq(world.urls.owner), autocommit=True
    ) as owner:
        evidence = await read_evidence(owner, world.psp, start, end)
        assert evidence.transactions == []  # nothing of the PSP's in the window
        drift, checked, matched = compare(evidence)
        # The charges were fetched by id: one matches, one is a cent off; the fee's balance
        # transaction (of before the window) too.
        assert {(d.type, d.psp_id) for d in drift} == {
            (DriftType.AMOUNT_MISMATCH, other.charge),
            (DriftType.FEE_MISMATCH, other.transaction),
        }
        assert early.charge in evidence.movements
        # Both payments were confirmed before the window: not the window's.
        assert (checked, matched) == (3, 1)
        assert await stored_runs(owner) == []  # reading stores nothing


def _transaction(
    id_: str, type_: str, amount: int, source: str, *, fee: int = 0
) -> BalanceTransaction:
    return BalanceTransaction(
        id=id_, type=type_, amount=amount, fee=fee, net=amount - fee, currency="eur",
        source=source, status="available", created=0,
    )  # fmt: skip


def _record(kind: str, reference: str, amount: int, *, reversed_: bool = False) -> LedgerRecord:
    return LedgerRecord(
        tenant=uuid.UUID(int=1), id=uuid.uuid4(), kind=kind, reference=reference, amount=amount,
        currency="EUR", posted_at=datetime.now(UTC), reversed=reversed_,
    )  # fmt: skip


def test_what_the_sandbox_cannot_make_is_compared_by_the_same_rules() -> None:
    """Stripe's own shapes the sandbox never produces: a source with two charge transactions,
    a fee kept (and its entry), a refund given back by a `refund_failure`, a payout
    balance transaction, and money moved by a source the ledger has no kind for."""
    now = datetime.now(UTC)
    charge = PspMovement("ch_1", "charge", 1_000, "eur", "succeeded", 0)
    refund = PspMovement("re_1", "refund", 400, "eur", "failed", 0)
    payout = PspMovement("po_1", "payout", 600, "eur", "paid", 0)
    transactions = [
        _transaction("txn_c1", "charge", 1_000, "ch_1", fee=59),
        _transaction("txn_c2", "charge", 1_000, "ch_1"),
        _transaction("txn_r1", "refund", -400, "re_1"),
        _transaction("txn_r2", "refund_failure", 400, "re_1"),
        _transaction("txn_p1", "payout", -600, "po_1"),
        _transaction("txn_x1", "adjustment", -250, "du_1"),
    ]
    fee = _record("psp_fee", "txn_c1", 59)
    refunded = _record("refund", "re_1", 400)
    evidence = Evidence(
        start=now,
        end=now,
        transactions=transactions,
        window_ids={"ch_1", "re_1", "po_1", "du_1"},
        movements={m.id: m for m in (charge, refund, payout)},
        fee_transactions={t.id: t for t in transactions},
        ledger=[
            _record("deposit", "ch_1", 1_000),
            fee,
            refunded,
            _record("disbursement", "po_1", 600),
        ],
        ledger_of_window=set(),
    )
    drift, checked, matched = compare(evidence)
    assert {(d.type, d.psp_id) for d in drift} == {
        (DriftType.DUPLICATE, "ch_1"),  # two charge transactions for one charge
        (DriftType.STATUS_MISMATCH, "re_1"),  # failed, and given back, but still recorded
        (DriftType.MISSING_IN_LEDGER, "du_1"),  # a dispute's adjustment: no kind records it
    }
    assert "refund_failure" in next(d.detail for d in drift if d.psp_id == "re_1")
    # ch_1, re_1, po_1, du_1 and the one fee kept (which its entry matches).
    assert (checked, matched) == (5, 2)

    # The failed refund reversed in the ledger, and the fee entry gone: the refund matches,
    # the fee kept with no entry is fee drift.
    evidence.ledger = [
        _record("deposit", "ch_1", 1_000),
        _record("refund", "re_1", 400, reversed_=True),
        _record("disbursement", "po_1", 600),
    ]
    drift, _, _ = compare(evidence)
    assert {(d.type, d.psp_id) for d in drift} == {
        (DriftType.DUPLICATE, "ch_1"),
        (DriftType.FEE_MISMATCH, "txn_c1"),
        (DriftType.MISSING_IN_LEDGER, "du_1"),
    }


async def test_runs_are_the_owners_and_never_change(world: World) -> None:
    report = await world.reconcile()
    assert report.clean
    with psycopg.connect(libpq(world.urls.owner), autocommit=True) as owner:
        with pytest.raises(errors.InsufficientPrivilege, match="kept as they ran"):
            owner.execute("UPDATE reconciliation_runs SET status = 'clean'")
        with pytest.raises(errors.InsufficientPrivilege, match="kept as they ran"):
            owner.execute("DELETE FROM reconciliation_runs")
    with psycopg.connect(libpq(world.urls.app), autocommit=True) as app:
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute("SELECT * FROM reconciliation_runs")
        with pytest.raises(errors.InsufficientPrivilege):
            app.execute(
                "INSERT INTO reconciliation_runs (day, started_at, status, psp_transactions, "
                "psp_objects, ledger_entries, matched, drift_count, drift) "
                "VALUES (current_date, now(), 'clean', 0, 0, 0, 0, 0, '[]')"
            )
    assert len(_runs(world)) == 1


def test_an_entry_in_another_tenants_books_is_flagged() -> None:
    """The PSP object names its tenant: an entry of the right amount in another tenant's
    books (a misattributed deposit) is drift, not a match."""
    now = datetime.now(UTC)
    charge = PspMovement("ch_9", "charge", 1_000, "eur", "succeeded", 0, tenant_id=uuid.UUID(int=2))
    evidence = Evidence(
        start=now,
        end=now,
        transactions=[_transaction("txn_9", "charge", 1_000, "ch_9")],
        window_ids={"ch_9"},
        movements={"ch_9": charge},
        fee_transactions={},
        ledger=[_record("deposit", "ch_9", 1_000)],  # in tenant 1's books
        ledger_of_window=set(),
    )
    drift, _, matched = compare(evidence)
    assert [(d.type, d.psp_id) for d in drift] == [(DriftType.TENANT_MISMATCH, "ch_9")]
    assert matched == 0
    evidence.movements = {"ch_9": replace(charge, tenant_id=uuid.UUID(int=1))}
    assert compare(evidence)[0] == []
