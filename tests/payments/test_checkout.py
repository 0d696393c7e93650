"""Paying a payment with a card the PSP tokenized (`confirm_payment`), against real PostgreSQL
and the real localstripe process: what the payer's confirm route runs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import stripe

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments.checkout import STRIPE_JS, browser_keys
from ramparts.payments.psp import StripePsp
from ramparts.payments.sandbox import SANDBOX_PUBLISHABLE_KEY, Sandbox
from ramparts.problems import Problem, ProblemType
from tests.payments.helpers import (
    DECLINED,
    VISA,
    VISA_3DS,
    attempts,
    card_payment_method,
    new_payment,
    pay,
    stored_payment,
)
from tests.payments.test_idempotency import new_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(urls.app, pool_size=6)
    yield db
    await db.dispose()


async def test_a_card_that_pays_leaves_the_payment_processing_not_paid(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant, payer = new_tenant(urls), uuid.uuid4()
    payment = await new_payment(database, psp, tenant, payer, amount=4_200)
    assert payment.status == "requires_payment_method"
    method = card_payment_method(buyer, VISA)

    paid = await pay(database, psp, tenant, payment, method)

    # The PSP says succeeded; only the worker, with a verified event, makes it paid.
    assert paid.status == "processing"
    assert not paid.paid
    row = stored_payment(urls, payment.id)
    assert (row["status"], row["confirmed_at"]) == ("processing", None)
    assert payment.psp_id is not None
    intent = buyer.v1.payment_intents.retrieve(payment.psp_id)
    assert (intent.status, intent.payment_method, intent.amount) == ("succeeded", method, 4_200)
    # The attempt: PSP ids and the card's fingerprint, never the card.
    fingerprint = buyer.v1.payment_methods.retrieve(method).card.fingerprint  # type: ignore[union-attr]
    [attempt] = attempts(urls, tenant)
    assert attempt["payment_id"] == payment.id
    assert attempt["payer_id"] == payer
    assert attempt["card_fingerprint"] == fingerprint
    assert (attempt["amount"], attempt["currency"], attempt["outcome"]) == (
        4_200,
        "eur",
        "succeeded",
    )
    assert not any(VISA in str(value) or VISA[-4:] in str(value) for value in attempt.values())


async def test_3ds_is_requires_action_and_not_paid(
    urls: DatabaseUrls,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    sandbox: Sandbox,
) -> None:
    tenant = new_tenant(urls)
    payment = await new_payment(database, psp, tenant, uuid.uuid4())

    waiting = await pay(database, psp, tenant, payment, card_payment_method(buyer, VISA_3DS))

    assert waiting.status == "requires_action"
    assert not waiting.paid
    assert stored_payment(urls, payment.id)["status"] == "requires_action"
    assert [a["outcome"] for a in attempts(urls, tenant)] == ["requires_action"]
    assert payment.psp_id is not None
    intent = await psp.retrieve_payment_intent(tenant, payment.psp_id)
    assert intent.status == "requires_action"
    assert intent.client_secret
    # While it waits for the cardholder, it cannot be confirmed again.
    with pytest.raises(Problem) as again:
        await pay(database, psp, tenant, payment, card_payment_method(buyer, VISA))
    assert (again.value.status, again.value.type) == (409, ProblemType.WRONG_STATUS)
    # The cardholder passes the challenge at the PSP: the PSP has the money, the payment is
    # still not paid here (the worker confirms it on the verified event).
    sandbox.authenticate(payment.psp_id)
    assert (await psp.retrieve_payment_intent(tenant, payment.psp_id)).status == "succeeded"
    assert stored_payment(urls, payment.id)["confirmed_at"] is None


async def test_a_decline_is_402_and_the_attempt_stays(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    payment = await new_payment(database, psp, tenant, uuid.uuid4())

    with pytest.raises(Problem) as declined:
        await pay(database, psp, tenant, payment, card_payment_method(buyer, DECLINED))

    assert (declined.value.status, declined.value.type) == (402, ProblemType.CARD_DECLINED)
    assert declined.value.extensions == {"decline_code": "card_declined"}
    assert DECLINED[-4:] not in str(declined.value)
    # The caller's transaction rolled back; the declined attempt was written apart and counts.
    [attempt] = attempts(urls, tenant)
    assert (attempt["outcome"], attempt["decline_code"]) == ("declined", "card_declined")
    assert stored_payment(urls, payment.id)["status"] == "requires_payment_method"


async def test_only_the_payer_pays_a_payment_that_waits_for_a_card(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant, payer = new_tenant(urls), uuid.uuid4()
    payment = await new_payment(database, psp, tenant, payer)
    method = card_payment_method(buyer, VISA)

    for refused, status, kind in [
        (pay(database, psp, tenant, payment, method, payer=uuid.uuid4()), 404, "not-found"),
        (pay(database, psp, tenant, payment, "pm_missing"), 422, "invalid-request"),
        (pay(database, psp, tenant, payment, "card_x"), 422, "invalid-request"),
    ]:
        with pytest.raises(Problem) as answer:
            await refused
        assert (answer.value.status, answer.value.type.slug) == (status, kind)
    assert attempts(urls, tenant) == []  # nothing reached the PSP's charge

    await pay(database, psp, tenant, payment, method)
    with pytest.raises(Problem) as twice:
        await pay(database, psp, tenant, payment, card_payment_method(buyer, VISA))
    assert (twice.value.status, twice.value.type) == (409, ProblemType.WRONG_STATUS)
    assert len(attempts(urls, tenant)) == 1


async def test_concurrent_confirmations_of_one_payment_charge_once(
    urls: DatabaseUrls, database: Database, psp: StripePsp, buyer: stripe.StripeClient
) -> None:
    tenant = new_tenant(urls)
    payment = await new_payment(database, psp, tenant, uuid.uuid4())
    methods = [card_payment_method(buyer, VISA) for _ in range(3)]

    outcomes = await asyncio.gather(
        *(pay(database, psp, tenant, payment, m) for m in methods), return_exceptions=True
    )

    paid = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, Problem)]
    assert len(paid) == 1, outcomes
    assert [r.status for r in refused] == [409, 409]
    assert len(attempts(urls, tenant)) == 1


def test_the_payers_page_loads_the_psps_card_fields() -> None:
    base = "http://127.0.0.1:12111"
    assert browser_keys(base, None) == (SANDBOX_PUBLISHABLE_KEY, f"{base}/js.stripe.com/v3/")
    assert browser_keys(None, "pk_live_abc") == ("pk_live_abc", STRIPE_JS)
    with pytest.raises(Problem) as unset:
        browser_keys(None, None)
    assert (unset.value.status, unset.value.type) == (503, ProblemType.PAYMENTS_UNAVAILABLE)
