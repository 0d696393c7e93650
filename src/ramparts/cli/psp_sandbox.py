"""`ramparts psp sandbox pay`: complete a payment's checkout at the sandbox PSP, as the payer's
browser would (development only).

The card is tokenized at the PSP: a PaymentMethod made from one of Stripe's public test cards
through the stripe SDK, which is what Stripe.js does in the payer's browser; the card number
goes to the sandbox only, never to Ramparts. Then the same service the checkout route runs
confirms the payment with that PaymentMethod (`ramparts.payments.checkout.confirm_payment`: the
velocity limits apply and the attempt is recorded), and for `3ds` the cardholder passes the
sandbox's 3D Secure challenge. The payment is then `processing` (or `requires_action` with
`--no-authenticate`): it is paid only once the worker has the PSP's verified event.

The sandbox is the one at RAMPARTS_PSP_API_BASE (a running demo's); the payment is found by
its id in the tenant `--tenant` names, or in every tenant.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import stripe
import structlog
import typer
from sqlalchemy import text

from ramparts.cli.common import JsonOption, UsageError, print_result
from ramparts.config import Profile, Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, open_database
from ramparts.payments import records
from ramparts.payments.checkout import confirm_payment
from ramparts.payments.psp import PspError, StripePsp
from ramparts.payments.records import Payment, PaymentStatus
from ramparts.payments.sandbox import SANDBOX_API_KEY, TEST_CARDS, SandboxError, authenticate
from ramparts.payments.velocity import VelocityLimits
from ramparts.problems import Problem

__all__ = ["sandbox_app"]

sandbox_app = typer.Typer(
    help="The sandbox PSP (development only): act as a payer would.", no_args_is_help=True
)


class Card(StrEnum):
    VISA = "visa"
    DECLINED = "declined"
    THREE_DS = "3ds"


class PayFailedError(Exception):
    """The payment could not be completed (exit 1; the message is one line)."""


@dataclass(frozen=True)
class Found:
    tenant_id: uuid.UUID
    payment: Payment


@sandbox_app.command("pay")
def pay(
    payment_id: Annotated[uuid.UUID, typer.Argument(help="The payment to pay (its id).")],
    card: Annotated[
        Card,
        typer.Option(
            "--card",
            help="The test card: visa (paid), declined (declined when charged), 3ds (asks "
            "for 3D Secure).",
        ),
    ] = Card.VISA,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="The payment's tenant (slug); default: look in every one."),
    ] = None,
    no_authenticate: Annotated[
        bool,
        typer.Option(
            "--no-authenticate",
            help="With 3ds: stop at requires_action instead of passing the challenge.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Pay PAYMENT_ID at the sandbox PSP as its payer would: prints the payment's id, its PSP
    id and its status (processing until the worker confirms it)."""
    # The command says itself how the payment went (one line, or JSON): the service's own log
    # lines of the same outcome would only repeat it.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    settings = load_settings()
    if settings.profile is not Profile.DEV:
        raise UsageError(
            f"psp sandbox pay is for the dev profile only (this is {settings.profile})"
        )
    if settings.psp_api_base is None:
        raise UsageError("RAMPARTS_PSP_API_BASE is not set: point it at the running sandbox")
    try:
        result = asyncio.run(
            _pay(settings, settings.psp_api_base, payment_id, card, tenant, no_authenticate)
        )
    except (PayFailedError, SandboxError) as failed:
        typer.echo(f"ramparts: error: {failed}", err=True)
        raise typer.Exit(1) from None
    line = f"payment {result['payment_id']} ({result['psp_id']}): {result['status']}"
    print_result(result, as_json, line)


async def _pay(
    settings: Settings,
    api_base: str,
    payment_id: uuid.UUID,
    card: Card,
    tenant: str | None,
    no_authenticate: bool,
) -> dict[str, Any]:
    try:
        psp = StripePsp.from_kms(open_kms(settings), api_base=api_base)
    except PspError as failed:  # no API key in the KMS
        raise PayFailedError(str(failed)) from None
    with open_database(settings) as urls:
        # The owner only lists the tenants; the payment is read and paid as the runtime role,
        # under row-level security, exactly as the checkout route does.
        owner = Database(urls.owner, pool_size=1)
        runtime = Database(urls.app, pool_size=2, transaction_pooler=settings.transaction_pooler)
        try:
            found = await _find(owner, runtime, payment_id, tenant)
            method = await _tokenize(api_base, TEST_CARDS[card.value])
            paid = await _confirm(runtime, psp, found, method, settings)
            if (
                paid.status is PaymentStatus.REQUIRES_ACTION
                and card is Card.THREE_DS
                and not no_authenticate
                and paid.psp_id is not None
            ):
                await asyncio.to_thread(authenticate, api_base, paid.psp_id)
                paid = await _follow(runtime, psp, found.tenant_id, paid)
        except PspError as failed:
            raise PayFailedError(str(failed)) from None
        finally:
            await psp.aclose()
            await runtime.dispose()
            await owner.dispose()
    return {
        "payment_id": str(paid.id),
        "psp_id": paid.psp_id,
        "status": paid.status.value,
        "card": card.value,
    }


async def _find(
    owner: Database, runtime: Database, payment_id: uuid.UUID, slug: str | None
) -> Found:
    """The payment and its tenant: in `slug`'s tenant, or in the tenant that has it (the
    owner lists the tenants; each is searched as the runtime role, which sees one)."""
    async with owner.session() as session:
        if slug is None:
            rows = await session.execute(text("SELECT id FROM tenants ORDER BY slug"))
        else:
            rows = await session.execute(
                text("SELECT id FROM tenants WHERE slug = :slug"), {"slug": slug}
            )
        tenants = list(rows.scalars())
    if slug is not None and not tenants:
        raise UsageError(f"no tenant {slug!r}")
    for tenant_id in tenants:
        async with runtime.tenant_session(tenant_id) as session:
            payment = await records.by_id(session, payment_id)
        if payment is not None:
            return Found(tenant_id, payment)
    raise UsageError(f"no payment {payment_id}" + (f" in tenant {slug!r}" if slug else ""))


async def _tokenize(api_base: str, number: str) -> str:
    """A PaymentMethod made at the PSP from a test card, as Stripe.js makes one in the
    payer's browser (the sandbox takes its secret test key where Stripe.js sends the
    publishable one)."""
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": api_base})
    params: Any = {
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
    }
    try:
        method = await asyncio.to_thread(client.v1.payment_methods.create, params=params)
    except stripe.StripeError as exc:
        raise PayFailedError(f"the sandbox refused the test card ({exc.http_status})") from None
    return method.id


async def _confirm(
    runtime: Database, psp: StripePsp, found: Found, method: str, settings: Settings
) -> Payment:
    payer = found.payment.payer_id
    if payer is None:
        raise PayFailedError(f"payment {found.payment.id} has no payer")
    try:
        async with runtime.tenant_session(found.tenant_id) as session:
            return await confirm_payment(
                session,
                psp,
                found.payment,
                payer_id=payer,
                payment_method=method,
                idempotency_key=f"sandbox-pay-{uuid.uuid4()}",
                limits=VelocityLimits.from_settings(settings),
                apart=runtime,
            )
    except Problem as refused:
        raise PayFailedError(f"{refused.type.slug}: {refused}") from None


async def _follow(
    runtime: Database, psp: StripePsp, tenant_id: uuid.UUID, paid: Payment
) -> Payment:
    """The payment's status after the challenge, as the PSP now says (`succeeded` shows as
    `processing` until the worker confirms it)."""
    if paid.psp_id is None:  # pragma: no cover - a confirmed payment has its intent
        return paid
    intent = await psp.retrieve_payment_intent(tenant_id, paid.psp_id)
    async with runtime.tenant_session(tenant_id) as session:
        locked = await records.by_id(session, paid.id, lock=True)
        if locked is None:  # pragma: no cover - found above
            return paid
        return await records.set_status(session, locked, intent.status)
