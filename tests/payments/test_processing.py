"""Processing stored PSP events (`ramparts.payments.processing`), in process, against real
PostgreSQL and the real localstripe: the PSP's answer is what counts, each event acts once,
and nothing moves backwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
import stripe
from sqlalchemy import text

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments import records
from ramparts.payments.ledger import Ledger
from ramparts.payments.processing import EventState, process_event
from ramparts.payments.psp import PspDeclinedError, StripePsp
from ramparts.payments.psp_events import Outcome, PspEvents, parse_event
from ramparts.payments.records import Payment
from ramparts.payments.sandbox import Sandbox
from ramparts.payments.tenancy import tenant_metadata
from tests.payments.flows import (
    DECLINED,
    VISA,
    VISA_3DS,
    PspProxy,
    attempt_outcome,
    book_intact,
    entries,
    event,
    event_state,
    intent_event,
    make_tenant,
    new_payment,
    owner_query,
    payment_row,
)
from tests.payments.helpers import card_payment_method

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def db(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    return make_database()


@pytest.fixture
async def database(db: DatabaseUrls) -> AsyncIterator[Database]:
    database = Database(db.app, pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture
def tenant(db: DatabaseUrls) -> uuid.UUID:
    return make_tenant(db)


@pytest.fixture
def proxy(sandbox: Sandbox) -> Iterator[PspProxy]:
    made = PspProxy(sandbox.api_base)
    yield made
    made.close()


async def store(database: Database, document: dict[str, Any]) -> str:
    receipt = await PspEvents(database).store(parse_event(document), signed_at=int(time.time()))
    assert receipt.outcome is Outcome.STORED, receipt
    return receipt.event_id


async def process(
    database: Database, psp: StripePsp, tenant: uuid.UUID, document: dict[str, Any]
) -> EventState:
    event_id = await store(database, document)
    return await process_event(database, lambda: psp, tenant, event_id)


async def balances(database: Database, tenant: uuid.UUID) -> dict[str, int]:
    async with database.tenant_session(tenant) as session:
        return {b.account: b.balance for b in await Ledger().balances(session)}


async def test_a_succeeded_event_the_psp_confirms_pays_and_posts_the_deposit_once(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    assert payment_row(db, payment)[:2] == ("processing", False)  # succeeded, not yet proven
    document = intent_event("payment_intent.succeeded", tenant, payment)
    assert await process(database, psp, tenant, document) is EventState.PROCESSED
    status, paid, confirmed_by = payment_row(db, payment)
    assert (status, paid, confirmed_by) == ("succeeded", True, document["id"])
    assert event_state(db, document["id"]) == "processed"
    assert attempt_outcome(db, payment) == ("succeeded", None)
    charge = (await psp.retrieve_payment_intent(tenant, str(payment.psp_id))).latest_charge
    assert charge is not None
    assert entries(db, payment) == [("deposit", charge)]  # the sandbox charges no fee
    assert await balances(database, tenant) == {
        f"held_funds:{payment.id}": 5000,
        "psp_clearing": 5000,
    }
    # Processing it again (a second job for the event) changes nothing.
    again = await process_event(database, lambda: psp, tenant, document["id"])
    assert again is EventState.PROCESSED
    # Another event saying the same (a second delivery under a new id, a charge event).
    charge_event = event(
        "charge.succeeded",
        {"id": charge, "object": "charge", "payment_intent": payment.psp_id}
        | {"metadata": tenant_metadata(tenant)},
    )
    assert await process(database, psp, tenant, charge_event) is EventState.PROCESSED
    second = intent_event("payment_intent.succeeded", tenant, payment)
    assert await process(database, psp, tenant, second) is EventState.PROCESSED
    assert entries(db, payment) == [("deposit", charge)]
    assert payment_row(db, payment)[2] == document["id"]  # the first proof stays
    assert book_intact(db, tenant)


async def test_a_signed_succeeded_event_the_psp_denies_does_not_pay(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    unpaid = await new_payment(database, psp, buyer, tenant, card=None)
    needs_3ds = await new_payment(database, psp, buyer, tenant, card=VISA_3DS)
    for payment, psp_status in (
        (unpaid, "requires_payment_method"),
        (needs_3ds, "requires_action"),
    ):
        lie = intent_event("payment_intent.succeeded", tenant, payment, status="succeeded")
        assert await process(database, psp, tenant, lie) is EventState.PROCESSED
        assert payment_row(db, payment) == (psp_status, False, None)
        assert event_state(db, lie["id"]) == "processed"
        assert attempt_outcome(db, payment) == ("pending", None)
        assert entries(db, payment) == []


async def test_a_3ds_payment_requires_action_until_authenticated(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    sandbox: Sandbox,
) -> None:
    payment = await new_payment(database, psp, buyer, tenant, card=VISA_3DS)
    assert payment_row(db, payment)[:2] == ("requires_action", False)
    action = intent_event("payment_intent.requires_action", tenant, payment)
    assert await process(database, psp, tenant, action) is EventState.PROCESSED
    assert payment_row(db, payment) == ("requires_action", False, None)
    assert attempt_outcome(db, payment) == ("requires_action", None)
    sandbox.authenticate(str(payment.psp_id))
    succeeded = intent_event("payment_intent.succeeded", tenant, payment)
    assert await process(database, psp, tenant, succeeded) is EventState.PROCESSED
    assert payment_row(db, payment) == ("succeeded", True, succeeded["id"])
    assert attempt_outcome(db, payment) == ("succeeded", None)
    assert [kind for kind, _ in entries(db, payment)] == ["deposit"]


async def test_out_of_order_events_never_move_a_payment_back(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    earlier = int(time.time()) - 60
    succeeded = intent_event("payment_intent.succeeded", tenant, payment)
    assert await process(database, psp, tenant, succeeded) is EventState.PROCESSED
    # Older events, delivered late, each claiming an earlier state.
    for late_type, fields in (
        ("payment_intent.requires_action", {"status": "requires_action"}),
        (
            "payment_intent.payment_failed",
            {
                "status": "requires_payment_method",
                "last_payment_error": {"code": "card_declined", "decline_code": "do_not_honor"},
            },
        ),
        ("payment_intent.processing", {"status": "processing"}),
    ):
        late = intent_event(late_type, tenant, payment, **fields)
        late["created"] = earlier
        assert await process(database, psp, tenant, late) is EventState.PROCESSED
        assert payment_row(db, payment) == ("succeeded", True, succeeded["id"])
        assert attempt_outcome(db, payment) == ("succeeded", None)
    assert [kind for kind, _ in entries(db, payment)] == ["deposit"]
    # And the database itself refuses the move, whoever asks.
    with (
        psycopg.connect(libpq(db.owner)) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="cannot change"),
    ):
        conn.execute("UPDATE payments SET status = 'requires_action' WHERE id = %s", (payment.id,))


async def test_a_decline_is_recorded_on_the_attempt_with_its_code(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    payment = await new_payment(database, psp, buyer, tenant, card=None)
    buyer.v1.payment_intents.update(
        str(payment.psp_id), params={"payment_method": card_payment_method(buyer, DECLINED)}
    )
    with pytest.raises(PspDeclinedError):
        await psp.confirm_payment_intent(tenant, str(payment.psp_id), idempotency_key="decline")
    failed = intent_event(
        "payment_intent.payment_failed",
        tenant,
        payment,
        status="requires_payment_method",
        last_payment_error={"code": "card_declined", "decline_code": "insufficient_funds"},
    )
    assert await process(database, psp, tenant, failed) is EventState.PROCESSED
    assert payment_row(db, payment) == ("requires_payment_method", False, None)
    assert attempt_outcome(db, payment) == ("declined", "insufficient_funds")


async def test_events_about_unknown_objects_are_ignored(
    database: Database, db: DatabaseUrls, tenant: uuid.UUID, psp: StripePsp
) -> None:
    metadata = {"metadata": tenant_metadata(tenant)}
    for document in (
        event("payment_intent.succeeded", {"id": "pi_unknown1", **metadata}),
        event(
            "charge.succeeded", {"id": "ch_unknown1", "payment_intent": "pi_unknown2"} | metadata
        ),
        event("charge.failed", {"id": "ch_unknown2", **metadata}),  # names no intent
        event("refund.failed", {"id": "re_unknown1", **metadata}),
        event("payout.failed", {"id": "po_unknown1", **metadata}),
    ):
        assert await process(database, psp, tenant, document) is EventState.IGNORED
        assert event_state(db, document["id"]) == "ignored"
    assert await process_event(database, lambda: psp, tenant, "evt_nosuchevent") is (
        EventState.MISSING
    )


async def test_an_intent_of_another_tenant_is_ignored(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    """A payment row pointing at an intent the PSP says is not this tenant's is never paid."""
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    other = make_tenant(db)
    with psycopg.connect(libpq(db.owner)) as conn:
        conn.execute("DELETE FROM payments WHERE id = %s", (payment.id,))
    # The other tenant's row names this tenant's intent; the PSP's tag says otherwise.
    async with database.tenant_session(other) as session:
        theirs = await records.create(
            session,
            app="shop",
            subject="stolen",
            payer_id=None,
            requested_by=uuid.uuid4(),
            amount=payment.amount,
            currency=payment.currency,
        )
        await records.set_psp_id(session, theirs, str(payment.psp_id), "processing")
    document = intent_event("payment_intent.succeeded", other, payment)
    assert await process(database, psp, other, document) is EventState.IGNORED
    assert payment_row(db, theirs) == ("processing", False, None)


async def test_the_psp_fee_is_posted_with_its_balance_transaction(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    proxy: PspProxy,
    psp_kms: Kms,
) -> None:
    """The sandbox charges no fee; Stripe does. A fee in the charge's balance transaction
    (injected on the way back, as Stripe would answer) is posted under its `txn_` id."""
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    proxy.rewrite("/v1/charges/", {"balance_transaction": {"fee": 175}})
    fee_psp = StripePsp.from_kms(psp_kms, api_base=proxy.url)
    try:
        document = intent_event("payment_intent.succeeded", tenant, payment)
        event_id = await store(database, document)
        assert await process_event(database, lambda: fee_psp, tenant, event_id) is (
            EventState.PROCESSED
        )
    finally:
        await fee_psp.aclose()
    kinds = entries(db, payment)
    assert [kind for kind, _ in kinds] == ["deposit", "psp_fee"]
    assert kinds[1][1].startswith("txn_")
    assert await balances(database, tenant) == {
        f"held_funds:{payment.id}": 5000,
        "psp_clearing": 5000 - 175,
        "psp_fees": 175,
    }
    assert book_intact(db, tenant)


async def paid_payment(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> Payment:
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    document = intent_event("payment_intent.succeeded", tenant, payment)
    assert await process(database, psp, tenant, document) is EventState.PROCESSED
    assert payment_row(db, payment)[1]
    return payment


async def test_a_refund_that_fails_later_is_reversed_in_the_ledger(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    proxy: PspProxy,
    psp_kms: Kms,
) -> None:
    payment = await paid_payment(database, db, tenant, psp, buyer)
    refund = await psp.create_refund(
        tenant, str(payment.psp_id), amount=1200, idempotency_key=str(uuid.uuid4())
    )
    async with database.tenant_session(tenant) as session:
        await session.execute(
            records_insert("payment_refunds"),
            movement(payment, refund.id, 1200, "succeeded"),
        )
        await Ledger().record_refund(
            session, payment=payment.ledger_name, refund=refund.id, amount=1200, currency="eur"
        )
    refunded = {"metadata": tenant_metadata(tenant), "object": "refund"}
    # The sandbox's refunds always succeed: Stripe's refund failing later is injected.
    proxy.rewrite(f"/v1/refunds/{refund.id}", {"status": "failed"})
    failing_psp = StripePsp.from_kms(psp_kms, api_base=proxy.url)
    try:
        for event_type in ("charge.refund.updated", "refund.failed"):  # the second: no-op
            document = event(event_type, {"id": refund.id, **refunded})
            event_id = await store(database, document)
            state = await process_event(database, lambda: failing_psp, tenant, event_id)
            assert state is EventState.PROCESSED
    finally:
        await failing_psp.aclose()
    assert owner_query(db, "SELECT status FROM payment_refunds WHERE psp_id = %s", refund.id) == [
        ("failed",)
    ]
    assert [entry for entry in entries(db, payment) if entry[0] != "deposit"] == [
        ("refund", refund.id),
        ("reversal", f"{refund.id}.failed"),
    ]
    assert (await balances(database, tenant))[f"held_funds:{payment.id}"] == 5000
    # A succeeded event about the failed refund, delivered late, moves nothing back.
    late = event("refund.updated", {"id": refund.id, **refunded})
    assert await process(database, psp, tenant, late) is EventState.PROCESSED
    assert owner_query(db, "SELECT status FROM payment_refunds WHERE psp_id = %s", refund.id) == [
        ("failed",)
    ]
    assert book_intact(db, tenant)


async def test_a_failed_payout_is_reversed_and_a_paid_one_is_recorded(
    database: Database,
    db: DatabaseUrls,
    tenant: uuid.UUID,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    payment = await paid_payment(database, db, tenant, psp, buyer)
    outcomes = {}
    for status in ("paid", "failed"):
        payout = buyer.v1.payouts.create(
            params={
                "amount": 2000,
                "currency": "eur",
                "metadata": tenant_metadata(tenant),
                "status": status,  # the sandbox's way to make a payout that fails
            }  # type: ignore[typeddict-unknown-key]
        )
        async with database.tenant_session(tenant) as session:
            await session.execute(
                records_insert("payment_disbursements"),
                movement(payment, payout.id, 2000, "pending"),
            )
            await Ledger().record_disbursement(
                session,
                payment=payment.ledger_name,
                disbursement=payout.id,
                amount=2000,
                currency="eur",
            )
        psp_object = {"id": payout.id, "object": "payout", "metadata": tenant_metadata(tenant)}
        document = event(f"payout.{status}", psp_object)
        assert await process(database, psp, tenant, document) is EventState.PROCESSED
        outcomes[status] = payout.id
    rows = dict(
        owner_query(
            db,
            "SELECT psp_id, status FROM payment_disbursements WHERE payment_id = %s",
            payment.id,
        )
    )
    assert rows == {outcomes["paid"]: "paid", outcomes["failed"]: "failed"}
    assert [entry for entry in entries(db, payment) if entry[0] != "deposit"] == [
        ("disbursement", outcomes["paid"]),
        ("disbursement", outcomes["failed"]),
        ("reversal", f"{outcomes['failed']}.failed"),
    ]
    assert (await balances(database, tenant))[f"held_funds:{payment.id}"] == 3000
    assert book_intact(db, tenant)


def records_insert(table: str) -> Any:
    return text(
        f"INSERT INTO {table} (tenant_id, payment_id, psp_id, amount, currency, status, "
        "requested_by, approved_by) VALUES (current_setting('app.tenant_id')::uuid, :payment, "
        ":psp_id, :amount, 'eur', :status, :requested_by, :approved_by)"
    )


def movement(payment: Payment, psp_id: str, amount: int, status: str) -> dict[str, Any]:
    return {
        "payment": payment.id,
        "psp_id": psp_id,
        "amount": amount,
        "status": status,
        "requested_by": uuid.uuid4(),
        "approved_by": uuid.uuid4(),
    }


async def test_a_settled_event_cannot_change_and_the_runtime_role_moves_only_its_state(
    database: Database, db: DatabaseUrls, tenant: uuid.UUID, psp: StripePsp
) -> None:
    document = event(
        "payment_intent.succeeded", {"id": "pi_unknown3", "metadata": tenant_metadata(tenant)}
    )
    assert await process(database, psp, tenant, document) is EventState.IGNORED
    with (
        psycopg.connect(libpq(db.owner)) as conn,
        pytest.raises(psycopg.errors.CheckViolation, match="cannot change"),
    ):
        conn.execute(
            "UPDATE psp_events SET state = 'pending', processed_at = NULL WHERE event_id = %s",
            (document["id"],),
        )
    with psycopg.connect(libpq(db.app)) as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))
        for statement in (
            "UPDATE psp_events SET payload = '{}'::jsonb",
            "UPDATE psp_events SET event_type = 'charge.updated'",
            "DELETE FROM psp_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()
