"""HTTP for a quote's payments: Finance charges the deposit, the buyer pays it.

- `POST /api/quotes/{id}/deposit` (Finance, `Idempotency-Key`): `201` payment (`money`).
- `GET /api/payments?quote_id=`, `GET /api/payments/{id}`: Finance reads the tenant's
  payments, a buyer the ones they are the payer of.
- `GET /api/payments/{id}/checkout` (the payer): what the payer's page needs to show the
  PSP's card fields: the payment, the intent's client secret, the PSP's publishable key and
  Stripe.js's URL.
- `POST /api/payments/{id}/confirm` (the payer, `Idempotency-Key`) `{"payment_method":
  "pm_…"}`: the card the PSP tokenized is charged (`ramparts.payments.checkout`, velocity
  limits first): `200` payment with `client_secret` (set when the card asks for 3D Secure:
  `requires_action`), `429 velocity-limit` with `Retry-After`, `402 card-declined`.

Every route declares its Cedar action and asks the Authorizer on the real resource. A payment
the caller may not read (another tenant's, another payer's) answers 404 like one that does not
exist, so ids teach nothing; a role that may never take the action is refused 403 by the
permission gate before anything is read. The money-moving routes replay their stored answer
to a repeated `Idempotency-Key` byte for byte (`ramparts.payments.idempotency`).
"""

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from ramparts.apps import AppServices
from ramparts.db.request import request_session
from ramparts.identity.auth import Principal
from ramparts.payments import records
from ramparts.payments.checkout import PAYMENT_METHOD_ID, browser_keys, confirm_payment
from ramparts.payments.idempotency import IdempotencyStore, Idempotent, IdempotentRequest
from ramparts.payments.psp import PspError
from ramparts.payments.records import Payment, PaymentStatus
from ramparts.payments.velocity import VelocityLimits
from ramparts.policy.engine import PolicyAction, Target
from ramparts.policy.services import RequestContext
from ramparts.problems import Problem, ProblemType
from ramparts.quotes import money
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote, Sensitivity
from ramparts.quotes.roles import FINANCE
from ramparts.quotes.services import QuoteService
from ramparts.routes import declares
from ramparts.web.pages import WEB_CLIENT_ID

__all__ = ["build_router", "payment_target"]

PAYMENT = QuoteAction.PAYMENT_READ.entity_type  # what every payment target is, to Cedar
DEPOSIT = QuoteAction.DEPOSIT_CHARGE.entity_type
#: Roles that read every payment of their tenant (the others: their own as payer).
READS_EVERY_PAYMENT = frozenset({FINANCE})

log = structlog.get_logger(__name__)


class DepositIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # Minor units; default: the quote's deposit. Bounded by the quote's total in `money`.
    amount: int | None = None


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    payment_method: str = Field(pattern=PAYMENT_METHOD_ID.pattern, max_length=253)


def payment_target(payment: Payment, tenant_id: uuid.UUID, sensitivity: str) -> Target:
    """The payment as Cedar sees it: its tenant, its quote's sensitivity and its payer."""
    parties = (("payer", str(payment.payer_id)),) if payment.payer_id is not None else ()
    return Target(PAYMENT, str(payment.id), str(tenant_id), sensitivity, parties=parties)


def _no_payment() -> Problem:
    return Problem(404, ProblemType.NOT_FOUND, "no such payment")


async def _sensitivities(
    session: AsyncSession, tenant_id: uuid.UUID, payments: list[Payment]
) -> dict[str, str]:
    """Each payment's quote's sensitivity, by quote id (one statement)."""
    ids = []
    for payment in payments:
        try:
            ids.append(uuid.UUID(payment.subject))
        except ValueError:  # not one of ours: judged as confidential below
            continue
    if not ids:
        return {}
    rows = await session.execute(
        select(Quote.id, Quote.sensitivity).where(Quote.tenant_id == tenant_id, Quote.id.in_(ids))
    )
    return {str(row.id): Sensitivity(row.sensitivity).value for row in rows}


def build_router(services: AppServices) -> APIRouter:  # noqa: PLR0915 - one route table
    router = APIRouter(tags=["payments"])
    bearer, authorizer, settings = services.bearer, services.authorizer, services.settings
    idempotent = Idempotent(IdempotencyStore())
    limits = VelocityLimits.from_settings(settings)
    Caller = Annotated[Principal, Depends(bearer)]  # noqa: N806 - a type alias
    Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806 - a type alias
    Idem = Annotated[IdempotentRequest, Depends(idempotent)]  # noqa: N806 - a type alias

    async def context(session: AsyncSession, principal: Principal) -> RequestContext:
        return await authorizer.context(principal, ui_client=WEB_CLIENT_ID, session=session)

    async def find(
        session: AsyncSession, principal: Principal, action: PolicyAction, payment_id: uuid.UUID
    ) -> Payment:
        """The quote app's payment, when Cedar allows `action` on it; 404 otherwise."""
        payment = await records.by_id(session, payment_id)
        if payment is not None and payment.app != money.APP:
            payment = None
        if payment is None:  # no tenant we know: the tenant wall denies it (recorded)
            target = Target(PAYMENT, str(payment_id), tenant="", sensitivity="internal")
        else:
            sensitivity = (await _sensitivities(session, principal.tenant_id, [payment])).get(
                payment.subject, Sensitivity.CONFIDENTIAL.value
            )
            target = payment_target(payment, principal.tenant_id, sensitivity)
        decision = await authorizer.authorize(
            principal, action, target, await context(session, principal), session=session
        )
        if payment is None or not decision.allowed:
            raise _no_payment()
        return payment

    @router.post(
        "/api/quotes/{quote_id}/deposit",
        status_code=201,
        openapi_extra=declares(QuoteAction.DEPOSIT_CHARGE, people_only=True),
        responses={
            201: {"description": "the deposit's payment"},
            409: {"description": "the quote is not accepted, or has a live deposit"},
        },
    )
    async def charge_deposit(
        principal: Caller,
        session: Session,
        quote_id: uuid.UUID,
        idem: Idem,
        body: DepositIn | None = None,
    ) -> Response:
        """Charge an accepted quote's deposit (Finance; `Idempotency-Key` required): a
        PaymentIntent for `amount` minor units (default: the quote's deposit, 30 % of its
        total rounded up), paid by the quote's buyer at `checkout_url`."""
        quote = await QuoteService(session).read(principal.tenant_id, quote_id)
        if quote is None:
            target = Target(DEPOSIT, str(quote_id), tenant="", sensitivity="internal")
        else:
            target = Target(DEPOSIT, str(quote.id), str(quote.tenant_id), quote.sensitivity.value)
        decision = await authorizer.authorize(
            principal,
            QuoteAction.DEPOSIT_CHARGE,
            target,
            await context(session, principal),
            session=session,
        )
        if quote is None:
            raise Problem(404, ProblemType.NOT_FOUND, "no such quote")
        if not decision.allowed:
            raise Problem(
                403, ProblemType.FORBIDDEN, f"{QuoteAction.DEPOSIT_CHARGE} is not allowed here"
            )
        if (replayed := idem.replay) is not None:
            return replayed
        try:
            shown = await money.charge_deposit(
                session,
                services.psp(),
                principal,
                quote_id,
                amount=body.amount if body is not None else None,
                idempotency_key=idem.key,
                public_url=settings.public_url,
            )
        except money.MoneyRefused as refused:
            raise refused.problem() from None
        return await idem.respond(201, shown)

    @router.get("/api/payments", openapi_extra=declares(QuoteAction.PAYMENT_LIST))
    async def list_payments(
        principal: Caller, session: Session, quote_id: uuid.UUID | None = None
    ) -> dict[str, Any]:
        """The payments the caller may read, newest first (at most 200), of `quote_id` only
        when given: every one of the tenant's for Finance, a buyer's own otherwise."""
        ctx = await context(session, principal)
        collection = Target(PAYMENT, "*", str(principal.tenant_id), "internal")
        await authorizer.require(
            principal, QuoteAction.PAYMENT_LIST, collection, ctx, session=session
        )
        every = bool(READS_EVERY_PAYMENT & set(principal.roles))
        if not every and principal.user_id is None:  # a service is nobody's payer
            return {"items": []}
        found = await records.list_for(
            session,
            money.APP,
            [str(quote_id)] if quote_id is not None else None,
            payer_id=None if every else principal.user_id,
        )
        sensitivities = await _sensitivities(session, principal.tenant_id, found)
        targets = {
            str(p.id): payment_target(
                p,
                principal.tenant_id,
                sensitivities.get(p.subject, Sensitivity.CONFIDENTIAL.value),
            )
            for p in found
        }
        readable = {
            t.id
            for t in await authorizer.permitted(
                principal, QuoteAction.PAYMENT_READ, list(targets.values()), ctx, session=session
            )
        }
        return {
            "items": [
                money.payment_json(p, settings.public_url) for p in found if str(p.id) in readable
            ]
        }

    @router.get("/api/payments/{payment_id}", openapi_extra=declares(QuoteAction.PAYMENT_READ))
    async def read_payment(
        principal: Caller, session: Session, payment_id: uuid.UUID
    ) -> dict[str, Any]:
        payment = await find(session, principal, QuoteAction.PAYMENT_READ, payment_id)
        return money.payment_json(payment, settings.public_url)

    @router.get(
        "/api/payments/{payment_id}/checkout", openapi_extra=declares(QuoteAction.PAYMENT_PAY)
    )
    async def checkout(
        principal: Caller, session: Session, payment_id: uuid.UUID
    ) -> dict[str, Any]:
        """What the payer's page needs for the PSP's card fields (the payer only). The
        intent's client secret only while it waits for the cardholder (3D Secure): before a
        velocity-checked confirmation, the payer has no key to the intent at the PSP."""
        payment = await find(session, principal, QuoteAction.PAYMENT_PAY, payment_id)
        if payment.psp_id is None:  # pragma: no cover - made with its intent, in one transaction
            raise Problem(409, ProblemType.WRONG_STATUS, "the payment has no PaymentIntent yet")
        publishable_key, stripe_js = browser_keys(
            services.psp.api_base, settings.psp_publishable_key
        )
        try:
            intent = await services.psp().retrieve_payment_intent(
                principal.tenant_id, payment.psp_id
            )
        except PspError as failed:
            raise Problem(502, ProblemType.PAYMENTS_UNAVAILABLE, str(failed)) from None
        return {
            "payment": money.payment_json(payment, settings.public_url),
            "client_secret": (
                intent.client_secret if intent.status == PaymentStatus.REQUIRES_ACTION else None
            ),
            "publishable_key": publishable_key,
            "stripe_js": stripe_js,
        }

    @router.post(
        "/api/payments/{payment_id}/confirm",
        openapi_extra=declares(QuoteAction.PAYMENT_PAY),
        responses={
            402: {"description": "the card was declined"},
            429: {"description": "a velocity limit: retry after Retry-After seconds"},
        },
    )
    async def confirm(
        principal: Caller, session: Session, payment_id: uuid.UUID, idem: Idem, body: ConfirmIn
    ) -> Response:
        """Pay with the card the PSP tokenized (`payment_method`, a `pm_…` id; the payer
        only; `Idempotency-Key` required). `client_secret` is set when the card asks for 3D
        Secure (`requires_action`): the page then runs Stripe.js's `handleCardAction`."""
        payment = await find(session, principal, QuoteAction.PAYMENT_PAY, payment_id)
        if (replayed := idem.replay) is not None:
            return replayed
        payer = principal.user_id
        if payer is None:  # pragma: no cover - the schema gives payment.pay to people only
            raise _no_payment()
        psp = services.psp()
        paid = await confirm_payment(
            session,
            psp,
            payment,
            payer_id=payer,
            payment_method=body.payment_method,
            idempotency_key=idem.key,
            limits=limits,
            apart=services.apart,
        )
        shown = money.payment_json(paid, settings.public_url)
        shown["client_secret"] = None
        if paid.status is PaymentStatus.REQUIRES_ACTION and paid.psp_id is not None:
            # The page has it from /checkout too: a PSP that does not answer now costs nothing.
            try:
                intent = await psp.retrieve_payment_intent(principal.tenant_id, paid.psp_id)
                shown["client_secret"] = intent.client_secret
            except PspError:
                log.warning("payment_client_secret_unavailable", payment=str(paid.id))
        return await idem.respond(200, shown)

    return router
