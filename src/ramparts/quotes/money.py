"""The quote app's money service: charging an accepted quote's deposit, and how a payment
looks in the API.

`charge_deposit` is what `POST /api/quotes/{id}/deposit` and the assistant's `charge_deposit`
tool (once a second Finance user approved it) run; their callers have authorized it
(`Quotes::deposit.charge`) and hold the caller's idempotency key. It works in the caller's
tenant transaction:

1. the quote, locked until the transaction ends (so two charges of one quote run one after
   the other), must be `accepted` (409 `wrong-status`) and have no live deposit: one whose
   payment is not `canceled` (409 `payment-exists`, naming it);
2. the amount is the quote's deposit (`deposit_of`: `DEPOSIT_PERCENT` of its total, rounded
   up, in its currency) unless the caller names one, from 1 to the total (422 otherwise);
3. the `payments` row is created (app `quotes`, subject the quote's id, payer its buyer,
   requested by the caller), then the PaymentIntent at the PSP with the caller's key (the
   PSP gets a key derived from it) and the payment's id in its metadata, then the intent's id
   and status are recorded on the payment.

The payment's id is derived from the tenant, the quote and the caller's key, so a request
retried after its transaction rolled back (a lost answer, a crash after the PSP call) sends
the PSP exactly the same parameters under the same derived key, and Stripe answers with the
intent it made the first time instead of a second one.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.tools import ToolError
from ramparts.identity.auth import Principal
from ramparts.payments import records
from ramparts.payments.psp import PspError, StripePsp
from ramparts.payments.records import Payment, PaymentStatus
from ramparts.problems import Problem, ProblemType
from ramparts.quotes.models import QuoteStatus
from ramparts.quotes.services import QuoteService

__all__ = [
    "APP",
    "DEPOSIT_PERCENT",
    "MAX_AMOUNT",
    "AmountError",
    "MoneyRefused",
    "charge_deposit",
    "deposit_of",
    "payment_json",
    "typed_minor_units",
]

#: The app's name on its payments (`payments.app`).
APP = "quotes"
#: A quote's deposit, in percent of its total (rounded up to a whole minor unit).
DEPOSIT_PERCENT = 30
#: The largest amount the PSP takes in one payment, in minor units.
MAX_AMOUNT = 99_999_999
# The namespace of payment ids derived from (tenant, quote, idempotency key).
_PAYMENT_IDS = uuid.UUID("6f1c2a52-7d0e-4a4e-9a53-3b1f0c9d2e71")


class MoneyRefused(ToolError):  # noqa: N818 - the name the interfaces agreed
    """The money operation is refused: `status` and `problem_type` are the HTTP answer's,
    `detail` says why in words its caller may read; `extensions` are the problem's extra
    members (`payment_id`). A tool's caller gets it as a `ToolError`."""

    def __init__(
        self, status: int, problem_type: ProblemType, detail: str, **extensions: Any
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.problem_type = problem_type
        self.detail = detail
        self.extensions = extensions

    def problem(self) -> Problem:
        return Problem(self.status, self.problem_type, self.detail, **self.extensions)


def deposit_of(total: int) -> int:
    """The deposit due on a quote of `total` minor units: `DEPOSIT_PERCENT` of it, rounded up
    (a deposit never falls short of the percentage by a fraction of a cent)."""
    return math.ceil(total * DEPOSIT_PERCENT / 100)


def payment_json(payment: Payment, public_url: str) -> dict[str, Any]:
    """A quote's payment as the API shows it (DESIGN's payment object): `status` is the
    PaymentIntent's, `succeeded` only once paid (confirmed by a verified event)."""
    return {
        "id": str(payment.id),
        "quote_id": payment.subject,
        "status": payment.status.value,
        "amount": payment.amount,
        "currency": payment.currency,
        "psp_id": payment.psp_id,
        "checkout_url": f"{public_url}/pay/{payment.id}",
        "created_at": payment.created_at.isoformat(),
    }


async def charge_deposit(
    session: AsyncSession,
    psp: StripePsp,
    principal: Principal,
    quote_id: uuid.UUID,
    *,
    amount: int | None,
    idempotency_key: str,
    public_url: str,
) -> dict[str, Any]:
    """Charge the deposit of the accepted quote `quote_id` (see the module docstring); the
    payment as `payment_json` shows it. Raises `MoneyRefused`."""
    if principal.user_id is None:
        raise MoneyRefused(403, ProblemType.NOT_A_USER, "deposits are charged by people")
    quotes = QuoteService(session)
    locked = await quotes.get(principal.tenant_id, quote_id, for_update=True)
    quote = await quotes.read(principal.tenant_id, quote_id) if locked is not None else None
    if quote is None:  # another tenant's quote is invisible under RLS: the same answer
        raise MoneyRefused(404, ProblemType.NOT_FOUND, "no such quote")
    if quote.status is not QuoteStatus.ACCEPTED:
        raise MoneyRefused(
            409,
            ProblemType.WRONG_STATUS,
            f"the quote is {quote.status}, not accepted: only an accepted quote's deposit "
            "is charged",
        )
    subject = str(quote.id)
    for existing in await records.list_for(session, APP, [subject]):
        if existing.status is not PaymentStatus.CANCELED:
            raise MoneyRefused(
                409,
                ProblemType.PAYMENT_EXISTS,
                f"the quote has a deposit already: payment {existing.id} ({existing.status})",
                payment_id=str(existing.id),
            )
    charged = _amount(amount, quote.total_minor)
    payment_id = uuid.uuid5(
        _PAYMENT_IDS, f"{principal.tenant_id}\x00{subject}\x00{idempotency_key}"
    )
    if await records.by_id(session, payment_id) is not None:  # a canceled one, made with it
        raise MoneyRefused(
            422,
            ProblemType.IDEMPOTENCY_KEY_REUSED,
            "this Idempotency-Key made an earlier deposit of this quote; use a new key",
        )
    payment = await records.create(
        session,
        app=APP,
        subject=subject,
        payer_id=quote.buyer_id,
        requested_by=principal.user_id,
        amount=charged,
        currency=quote.currency.lower(),
        payment_id=payment_id,
    )
    try:
        intent = await psp.create_payment_intent(
            principal.tenant_id,
            amount=payment.amount,
            currency=payment.currency,
            idempotency_key=idempotency_key,
            metadata={"ramparts_payment": str(payment.id)},
        )
    except PspError as failed:
        raise MoneyRefused(502, ProblemType.PAYMENTS_UNAVAILABLE, str(failed)) from None
    payment = await records.set_psp_id(session, payment, intent.id, intent.status)
    return payment_json(payment, public_url)


def _amount(asked: int | None, total: int) -> int:
    """The amount to charge: `asked`, or the quote's deposit, within 1..total and the PSP's
    largest amount."""
    if total < 1:
        raise MoneyRefused(
            422, ProblemType.INVALID_REQUEST, "the quote's total is 0: there is nothing to charge"
        )
    if asked is None:
        charged = deposit_of(total)
    elif type(asked) is not int or not 1 <= asked <= total:
        raise MoneyRefused(
            422,
            ProblemType.INVALID_REQUEST,
            f"amount must be a whole number of minor units from 1 to {total} (the quote's total)",
        )
    else:
        charged = asked
    if charged > MAX_AMOUNT:
        raise MoneyRefused(
            422,
            ProblemType.INVALID_REQUEST,
            f"{charged} minor units is more than the PSP takes in one payment ({MAX_AMOUNT})",
        )
    return charged


class AmountError(ValueError):
    """A typed amount that is not one, with the sentence to show the person."""


# ASCII digits only: `\d` and `int` take every script's digits, and "1", U+0660 (an
# Arabic-Indic zero, which looks like a point), "5" would be read as 105.
_TYPED_AMOUNT = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,2}))?")


def typed_minor_units(typed: str, *, what: str, maximum: int, at_least: int = 0) -> int:
    """`"12.50"` → 1250: an amount a person typed in the currency's units (the quote app's
    currencies have two decimals), read exactly with a pattern, never through float. `what`
    names it in the refusal ("price", "refund amount")."""
    text = typed.strip()
    if not text:
        raise AmountError(f"enter a {what}, for example 12.50")
    if text.startswith("-"):
        raise AmountError(f"“{text[:20]}” is negative: a {what} is {at_least / 100:g} or more")
    if "," in text:
        raise AmountError(f"“{text[:20]}”: write decimals with a dot, for example 12.50")
    found = _TYPED_AMOUNT.fullmatch(text)
    if found is None:
        raise AmountError(
            f"“{text[:20]}” is not a {what}: write digits with at most two decimals, "
            "for example 12.50"
        )
    whole, cents = found.group(1), (found.group(2) or "").ljust(2, "0")
    amount = int(whole) * 100 + int(cents)
    if amount < at_least:
        raise AmountError(f"a {what} must be more than 0")
    if amount > maximum:
        raise AmountError(f"“{text[:20]}” is more than {maximum // 100:,}")
    return amount
