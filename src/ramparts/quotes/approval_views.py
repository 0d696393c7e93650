"""HTTP for the money that leaves a paid deposit: Finance asks, a second Finance user decides.

- `POST /api/payments/{id}/refunds` `{"amount": int}` and
- `POST /api/quotes/{id}/disbursements` `{}`

answer `202 {"approval_id", "status": "pending_approval"}`: the request is an approval request
of the tool `issue_refund` / `disburse_deposit` with the exact arguments that will run (a
disbursement's amount is what is still held for the deposit when it is asked for), decided at
`POST /api/approvals/{id}/approve|reject` by a different Finance user (see `four_eyes`). Both
need an `Idempotency-Key`: the same request again answers the same 202, and makes no second
request. Nothing moves before the deposit is confirmed paid by a verified webhook (409
`payment-not-paid`); a refund asks for 1 up to what is left (the ledger's `held_funds`, less
what requests still to be decided ask: 422 above it, 409 when nothing is left).

Like every quote route, each declares its Cedar action and asks the Authorizer in the
request's one tenant transaction; a payment or quote of another tenant answers 404.
"""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from ramparts.ai.approval_requests import request_direct_approval
from ramparts.apps import AppServices
from ramparts.db.request import request_session
from ramparts.identity.auth import Principal
from ramparts.payments import records
from ramparts.payments.idempotency import IdempotencyStore, Idempotent, IdempotentRequest
from ramparts.policy.engine import PolicyAction, Target
from ramparts.problems import Problem, ProblemType
from ramparts.quotes import four_eyes
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.services import QuoteService
from ramparts.quotes.tools import money_tools
from ramparts.routes import declares
from ramparts.web.pages import WEB_CLIENT_ID

__all__ = ["build_router"]

PENDING = "pending_approval"


class RefundIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    amount: int = Field(ge=1, le=99_999_999)


class DisbursementIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Requests:
    """What both routes do: authorize in the request's transaction, and store the request."""

    def __init__(self, services: AppServices) -> None:
        self._authorizer = services.authorizer
        self._audit = services.audit
        # The tools the requests are of: their schemas check the arguments stored.
        self._tools = {
            tool.name: tool for tool in money_tools(services.psp, services.settings.public_url)
        }

    async def require(
        self, session: AsyncSession, principal: Principal, action: PolicyAction, target: Target
    ) -> None:
        """Cedar's decision, recorded (a denial apart, to outlive the rollback)."""
        context = await self._authorizer.context(
            principal, ui_client=WEB_CLIENT_ID, session=session
        )
        decision = await self._authorizer.authorize(
            principal, action, target, context, session=session
        )
        if not decision.allowed:
            raise Problem(403, ProblemType.FORBIDDEN, f"{action} is not allowed here")

    async def not_found(
        self, session: AsyncSession, principal: Principal, action: PolicyAction, key: str
    ) -> Problem:
        """What to answer for a payment or quote not found in the caller's tenant: it belongs
        to no tenant we know, so Cedar's tenant wall denies it (recorded); another tenant's
        reads the same as none."""
        context = await self._authorizer.context(
            principal, ui_client=WEB_CLIENT_ID, session=session
        )
        target = Target(action.entity_type, key, "")
        await self._authorizer.authorize(principal, action, target, context, session=session)
        return Problem(404, ProblemType.NOT_FOUND, "no such payment or quote")

    async def ask(
        self,
        session: AsyncSession,
        principal: Principal,
        idempotent: IdempotentRequest,
        *,
        tool: str,
        arguments: dict[str, Any],
        reason: str,
    ) -> Response:
        """Store the request of `tool` with `arguments` and answer 202 (stored for replays)."""
        approval = await request_direct_approval(
            session,
            self._audit,
            principal,
            tool=self._tools[tool],
            arguments=arguments,
            reason=reason,
        )
        return await idempotent.respond(202, {"approval_id": str(approval), "status": PENDING})


def _not_paid(what: str) -> Problem:
    return Problem(
        409,
        ProblemType.PAYMENT_NOT_PAID,
        f"{what}: only a deposit confirmed paid by a verified webhook is refunded or disbursed",
    )


def build_router(services: AppServices) -> APIRouter:
    router = APIRouter(tags=["payments"])
    requests = _Requests(services)
    Caller = Annotated[Principal, Depends(services.bearer)]  # noqa: N806 - a type alias
    Session = Annotated[AsyncSession, Depends(request_session)]  # noqa: N806 - a type alias
    Idempotency = Annotated[  # noqa: N806 - a type alias
        IdempotentRequest, Depends(Idempotent(IdempotencyStore()))
    ]

    @router.post(
        "/api/payments/{payment_id}/refunds",
        status_code=202,
        openapi_extra=declares(QuoteAction.REFUND_ISSUE, people_only=True),
    )
    async def request_refund(
        principal: Caller,
        session: Session,
        idempotent: Idempotency,
        payment_id: uuid.UUID,
        body: RefundIn,
    ) -> Response:
        """Ask for a refund of a paid deposit; a second Finance user decides it."""
        if (replayed := idempotent.replay) is not None:
            return replayed
        action = QuoteAction.REFUND_ISSUE
        payment = await records.by_id(session, payment_id, lock=True)
        quote = None
        if payment is not None:
            quote = await four_eyes.quote_of(session, principal.tenant_id, payment)
        if payment is None or quote is None:
            raise await requests.not_found(session, principal, action, str(payment_id))
        await requests.require(session, principal, action, four_eyes.refund_target(payment, quote))
        if not payment.paid:
            raise _not_paid("the payment is not paid")
        left = (await four_eyes.left_of(session, payment)).available
        if left <= 0:
            raise Problem(409, ProblemType.WRONG_STATUS, "nothing is left to refund")
        if body.amount > left:
            raise Problem(
                422,
                ProblemType.INVALID_REQUEST,
                f"amount must be 1 to {left}: what is left of the payment",
            )
        return await requests.ask(
            session,
            principal,
            idempotent,
            tool=four_eyes.REFUND_TOOL,
            arguments={"payment_id": str(payment.id), "amount": body.amount},
            reason="a refund waits for a second Finance user's approval",
        )

    @router.post(
        "/api/quotes/{quote_id}/disbursements",
        status_code=202,
        openapi_extra=declares(QuoteAction.DISBURSEMENT_APPROVE, people_only=True),
    )
    async def request_disbursement(
        principal: Caller,
        session: Session,
        idempotent: Idempotency,
        quote_id: uuid.UUID,
        body: DisbursementIn,
    ) -> Response:
        """Ask to pay what is held of the quote's paid deposit out to its seller; a second
        Finance user decides it."""
        if (replayed := idempotent.replay) is not None:
            return replayed
        action = QuoteAction.DISBURSEMENT_APPROVE
        quote = await QuoteService(session).get(principal.tenant_id, quote_id)
        if quote is None:
            raise await requests.not_found(session, principal, action, str(quote_id))
        await requests.require(session, principal, action, four_eyes.disbursement_target(quote))
        payment = await four_eyes.paid_deposit(session, quote.id, lock=True)
        if payment is None:
            raise _not_paid("the deposit is not confirmed paid yet")
        left = (await four_eyes.left_of(session, payment)).available
        if left <= 0:
            raise Problem(
                409,
                ProblemType.WRONG_STATUS,
                "nothing is left to disburse (or a request for it waits for approval)",
            )
        return await requests.ask(
            session,
            principal,
            idempotent,
            tool=four_eyes.DISBURSE_TOOL,
            arguments={"quote_id": str(quote.id), "amount": left},
            reason="a disbursement waits for a second Finance user's approval",
        )

    return router
