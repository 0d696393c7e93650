"""A card the sandbox's Stripe.js tokenized pays like a PaymentMethod: localstripe's Stripe.js
has no `createPaymentMethod`, so the payer's page sends the card of a token it made there
(`card_…`, which Stripe also takes as an intent's payment method). Real PostgreSQL, the real
localstripe process."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments.psp import StripePsp
from ramparts.payments.sandbox import SANDBOX_PUBLISHABLE_KEY, Sandbox
from tests.payments.helpers import VISA, VISA_3DS, attempts, new_payment, pay, stored_payment
from tests.payments.test_idempotency import new_tenant

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database(urls: DatabaseUrls) -> AsyncIterator[Database]:
    db = Database(urls.app, pool_size=6)
    yield db
    await db.dispose()


def tokenized_card(sandbox: Sandbox, number: str) -> tuple[str, str]:
    """What the sandbox's Stripe.js `createToken` does in the payer's browser: the card goes
    to the PSP with the publishable key only. Returns the token's card id and fingerprint."""
    answer = httpx.post(
        f"{sandbox.api_base}/v1/tokens",
        data={
            "card[number]": number,
            "card[exp_month]": "12",
            "card[exp_year]": "2034",
            "card[cvc]": "123",
            "key": SANDBOX_PUBLISHABLE_KEY,
        },
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    card = answer.json()["card"]
    return card["id"], card["fingerprint"]


async def test_a_tokenized_card_pays_and_its_fingerprint_counts(
    urls: DatabaseUrls, database: Database, psp: StripePsp, sandbox: Sandbox
) -> None:
    tenant, payer = new_tenant(urls), uuid.uuid4()
    payment = await new_payment(database, psp, tenant, payer, amount=240_300)
    card, fingerprint = tokenized_card(sandbox, VISA)
    assert card.startswith("card_")

    paid = await pay(database, psp, tenant, payment, card)

    assert paid.status == "processing"  # paid only once the worker has the verified event
    assert payment.psp_id is not None
    intent = await psp.retrieve_payment_intent(tenant, payment.psp_id)
    assert intent.status == "succeeded"
    [attempt] = attempts(urls, tenant)
    assert attempt["card_fingerprint"] == fingerprint
    assert stored_payment(urls, payment.id)["status"] == "processing"


async def test_a_tokenized_3ds_card_waits_for_the_bank(
    urls: DatabaseUrls, database: Database, psp: StripePsp, sandbox: Sandbox
) -> None:
    tenant = new_tenant(urls)
    payment = await new_payment(database, psp, tenant, uuid.uuid4())
    card, _ = tokenized_card(sandbox, VISA_3DS)

    waiting = await pay(database, psp, tenant, payment, card)

    assert waiting.status == "requires_action"
    assert not waiting.paid
