"""Paying a payment: the payer's card, tokenized at the PSP, confirmed through the runtime.

The payer's browser gets the PSP's card fields (Stripe.js, from the PSP's origin): the card
number goes to the PSP, which answers a PaymentMethod id (`pm_…`); the browser hands that id,
and nothing of the card, to the app's confirm route, which calls `confirm_payment`:

1. the payment is the payer's and waits for a payment method (else a 404 or 409 problem);
2. the PaymentMethod is read from the PSP: a card, and its fingerprint (the only card datum
   the runtime keeps, to count attempts with one card);
3. the velocity limits are checked and the attempt recorded, in a short transaction of its
   own on `apart` that commits before the PSP is asked (`ramparts.payments.velocity`): an
   excess is a 429 problem `velocity-limit` with `Retry-After`;
4. the PSP is asked: the intent gets the payment method, then is confirmed (the sandbox does
   not implement confirming with a new payment method, so it is set first);
5. the attempt's outcome is recorded apart as well (a decline is a 402 problem
   `card-declined`, and the request's own transaction rolls back, but the declined attempt
   stays and counts), and the payment's status follows the PSP's in the caller's
   transaction (`records.set_status`: a PSP `succeeded` shows as `processing` until the
   worker has a verified event and the PSP's word; `requires_action` is not paid either).

Two confirmations of one payment never interleave: the second waits on a transaction-level
advisory lock of the payment, then finds it no longer waiting for a payment method.
Nothing here logs or stores a card number: only PSP ids, the fingerprint and decline codes.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import Database
from ramparts.payments import records
from ramparts.payments.browser import STRIPE_JS, stripe_js_url
from ramparts.payments.psp import PspDeclinedError, PspError, PspNotFoundError, StripePsp
from ramparts.payments.records import Payment, PaymentStatus
from ramparts.payments.sandbox import SANDBOX_PUBLISHABLE_KEY
from ramparts.payments.velocity import (
    AttemptOutcome,
    VelocityExceeded,
    VelocityLimits,
    check_and_record,
    record_outcome,
)
from ramparts.problems import Problem, ProblemType

__all__ = [
    "PAYABLE",
    "PAYMENT_METHOD_ID",
    "STRIPE_JS",
    "browser_keys",
    "confirm_payment",
]

#: What a payment method id looks like (what the confirm route accepts, nothing else): a
#: PaymentMethod (`pm_…`, what Stripe.js makes), or a Card (`card_…`, which Stripe also takes
#: as an intent's payment method: the sandbox's Stripe.js has no `createPaymentMethod`, and
#: the payer's page pays with the card of a token it made there).
PAYMENT_METHOD_ID = re.compile(r"(pm|card)_[A-Za-z0-9_]{1,250}")
# A fingerprint as `payment_attempts` keeps it (Stripe's are 16 letters and digits).
_FINGERPRINT = re.compile(r"[A-Za-z0-9_]{1,255}")
#: Statuses in which a payment may be given a card and confirmed.
PAYABLE = frozenset({PaymentStatus.REQUIRES_PAYMENT_METHOD, PaymentStatus.REQUIRES_CONFIRMATION})

log = structlog.get_logger(__name__)

_ATTEMPT_OUTCOMES = {
    PaymentStatus.SUCCEEDED: AttemptOutcome.SUCCEEDED,
    PaymentStatus.REQUIRES_CAPTURE: AttemptOutcome.SUCCEEDED,
    PaymentStatus.REQUIRES_ACTION: AttemptOutcome.REQUIRES_ACTION,
    PaymentStatus.PROCESSING: AttemptOutcome.PENDING,
    # The card was refused after all (a late decline, a failed authentication).
    PaymentStatus.REQUIRES_PAYMENT_METHOD: AttemptOutcome.DECLINED,
}


def browser_keys(api_base: str | None, publishable_key: str | None) -> tuple[str, str]:
    """What the payer's page needs to load the PSP's card fields: (publishable key, Stripe.js
    URL). The sandbox (`api_base` set) serves its own Stripe.js and takes any test key; with
    Stripe, a publishable key must be configured (RAMPARTS_PSP_PUBLISHABLE_KEY)."""
    if api_base is not None:
        return publishable_key or SANDBOX_PUBLISHABLE_KEY, stripe_js_url(api_base)
    if publishable_key is None:
        raise Problem(
            503,
            ProblemType.PAYMENTS_UNAVAILABLE,
            "payments are not set up: no PSP publishable key (RAMPARTS_PSP_PUBLISHABLE_KEY)",
        )
    return publishable_key, stripe_js_url(None)


def _lock_key(tenant: str, payment_id: uuid.UUID) -> int:
    digest = hashlib.sha256(f"ramparts.checkout\x00{tenant}\x00{payment_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def confirm_payment(
    session: AsyncSession,
    psp: StripePsp,
    payment: Payment,
    *,
    payer_id: uuid.UUID,
    payment_method: str,
    idempotency_key: str,
    limits: VelocityLimits,
    apart: Database,
) -> Payment:
    """Pay `payment` (of the session's tenant) with the PSP's `payment_method`, as its payer
    `payer_id`: see the module docstring. Returns the payment as it now stands; raises a
    `Problem` (404, 409, 422, 429 `velocity-limit`, 402 `card-declined`, 502/503
    `payments-unavailable`). `apart` is the pool of the short transactions that record the
    attempt whatever becomes of the caller's."""
    tenant = str((await session.execute(text("SELECT current_setting('app.tenant_id')"))).scalar())
    tenant_id = uuid.UUID(tenant)
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(tenant, payment.id)}
    )
    current = await records.by_id(session, payment.id)  # as it stands once the lock is ours
    if current is None or current.payer_id is None or current.payer_id != payer_id:
        raise Problem(404, ProblemType.NOT_FOUND, "no such payment")
    if current.status not in PAYABLE or current.psp_id is None:
        raise Problem(
            409,
            ProblemType.WRONG_STATUS,
            f"the payment is {current.status}: it does not wait for a payment method",
        )
    if not PAYMENT_METHOD_ID.fullmatch(payment_method):
        raise Problem(
            422, ProblemType.INVALID_REQUEST, "payment_method must be a pm_… (or card_…) id"
        )
    fingerprint = await _card_fingerprint(psp, payment_method)

    try:
        async with apart.tenant_session(tenant_id) as own:
            attempt = await check_and_record(
                own,
                payment_id=current.id,
                payer_id=payer_id,
                card_fingerprint=fingerprint,
                amount=current.amount,
                currency=current.currency,
                limits=limits,
            )
    except VelocityExceeded as exceeded:
        log.warning("payment_velocity_limit", payment=str(current.id), limit=exceeded.limit.value)
        raise Problem(
            429,
            ProblemType.VELOCITY_LIMIT,
            exceeded.detail,
            headers={"Retry-After": str(exceeded.retry_after)},
            limit=exceeded.limit.value,
        ) from None

    try:
        await psp.set_payment_method(
            tenant_id, current.psp_id, payment_method, idempotency_key=idempotency_key
        )
        intent = await psp.confirm_payment_intent(
            tenant_id, current.psp_id, idempotency_key=idempotency_key
        )
    except PspDeclinedError as declined:
        await _outcome(apart, tenant_id, attempt, AttemptOutcome.DECLINED, declined.code)
        log.info("payment_declined", payment=str(current.id), code=declined.code)
        raise Problem(
            402,
            ProblemType.CARD_DECLINED,
            "the card was declined; try another card",
            decline_code=declined.code,
        ) from None
    except PspError as failed:
        await _outcome(apart, tenant_id, attempt, AttemptOutcome.FAILED, None)
        raise Problem(502, ProblemType.PAYMENTS_UNAVAILABLE, str(failed)) from None

    status = PaymentStatus(intent.status)
    outcome = _ATTEMPT_OUTCOMES.get(status, AttemptOutcome.PENDING)
    await _outcome(apart, tenant_id, attempt, outcome, None)
    locked = await records.by_id(session, current.id, lock=True)
    if locked is None:  # pragma: no cover - read above in this transaction
        raise Problem(404, ProblemType.NOT_FOUND, "no such payment")
    return await records.set_status(session, locked, status)


async def _card_fingerprint(psp: StripePsp, payment_method: str) -> str:
    try:
        method = await psp.retrieve_payment_method(payment_method)
    except PspNotFoundError:
        raise Problem(
            422, ProblemType.INVALID_REQUEST, "no such payment method at the PSP"
        ) from None
    except PspError as failed:
        raise Problem(502, ProblemType.PAYMENTS_UNAVAILABLE, str(failed)) from None
    if method.type != "card" or method.card_fingerprint is None:
        raise Problem(422, ProblemType.INVALID_REQUEST, "the payment method is not a card")
    if not _FINGERPRINT.fullmatch(method.card_fingerprint):
        raise Problem(
            502, ProblemType.PAYMENTS_UNAVAILABLE, "the PSP sent a malformed card fingerprint"
        )
    return method.card_fingerprint


async def _outcome(
    apart: Database,
    tenant_id: uuid.UUID,
    attempt: uuid.UUID,
    outcome: AttemptOutcome,
    code: str | None,
) -> None:
    async with apart.tenant_session(tenant_id) as own:
        await record_outcome(own, attempt, outcome, decline_code=code)
