"""What the payer does at the PSP in tests, and the payments they pay."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import stripe
from psycopg.rows import dict_row

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments import records
from ramparts.payments.checkout import confirm_payment
from ramparts.payments.psp import StripePsp
from ramparts.payments.records import Payment
from ramparts.payments.velocity import VelocityLimits

VISA = "4242424242424242"
VISA_3DS = "4000002760003184"
#: Declined when charged (localstripe's "decline after attaching").
DECLINED = "4000000000000341"
#: Other cards that pay, for a payer trying several.
MASTERCARD = "5555555555554444"


def card_payment_method(buyer: stripe.StripeClient, number: str) -> str:
    """A PaymentMethod made at the PSP from a test card, as the PSP's hosted fields make one."""
    method = buyer.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        }
    )
    return method.id


async def new_payment(
    database: Database,
    psp: StripePsp,
    tenant: uuid.UUID,
    payer: uuid.UUID,
    *,
    amount: int = 5_000,
    currency: str = "eur",
) -> Payment:
    """A payment of `tenant`'s app `shop`, paid by `payer`, with its PaymentIntent: what an
    app's charge makes before the payer pays."""
    async with database.tenant_session(tenant) as session:
        payment = await records.create(
            session,
            app="shop",
            subject=f"order-{uuid.uuid4().hex[:8]}",
            payer_id=payer,
            requested_by=uuid.uuid4(),
            amount=amount,
            currency=currency,
        )
        intent = await psp.create_payment_intent(
            tenant,
            amount=amount,
            currency=currency,
            idempotency_key=f"charge-{payment.id}",
            metadata={"ramparts_payment": str(payment.id)},
        )
        return await records.set_psp_id(session, payment, intent.id, intent.status)


async def pay(
    database: Database,
    psp: StripePsp,
    tenant: uuid.UUID,
    payment: Payment,
    payment_method: str,
    *,
    payer: uuid.UUID | None = None,
    limits: VelocityLimits | None = None,
) -> Payment:
    """`confirm_payment` in a tenant transaction of its own, as the confirm route runs it:
    committed on success, rolled back when it raises (the attempts are written apart)."""
    async with database.tenant_session(tenant) as session:
        return await confirm_payment(
            session,
            psp,
            payment,
            payer_id=payer or payment.payer_id or uuid.uuid4(),
            payment_method=payment_method,
            idempotency_key=f"pay-{uuid.uuid4()}",
            limits=limits or VelocityLimits(),
            apart=database,
        )


def attempts(urls: DatabaseUrls, tenant: uuid.UUID) -> list[dict[str, Any]]:
    """Every attempt of `tenant`'s, oldest first, as the owner reads them."""
    with psycopg.connect(libpq(urls.owner), autocommit=True, row_factory=dict_row) as owner:
        return owner.execute(
            "SELECT * FROM payment_attempts WHERE tenant_id = %s ORDER BY created_at", (tenant,)
        ).fetchall()


def stored_payment(urls: DatabaseUrls, payment_id: uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(libpq(urls.owner), autocommit=True, row_factory=dict_row) as owner:
        row = owner.execute("SELECT * FROM payments WHERE id = %s", (payment_id,)).fetchone()
    assert row is not None
    return row
