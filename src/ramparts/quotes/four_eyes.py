"""Refunds and disbursements of a quote's deposit, behind four eyes (AI-4, issue 15).

Finance asks (`POST /api/payments/{id}/refunds`, `POST /api/quotes/{id}/disbursements`, or
its assistant's `issue_refund` / `disburse_deposit`); nothing moves until a *second* Finance
user approves at `POST /api/approvals/{id}/approve`. A request is an approval request of the
registered tool, with the exact arguments that will run (the amount included), decided by the
runtime's one `Approvals` service: a different person, a fresh second factor, who may do the
same action; the requester judged again with their current roles; the kill-switch; both in
the audit trail.

On approval the tool runs as the requester, in the approval's transaction, with the deposit's
payment row locked: what the ledger still holds for the payment bounds it (`held_funds:<id>`),
then the PSP is asked (idempotency key derived from the approval's id), then the refund or
payout row (requester and approver) and its ledger entry (reference: the PSP's `re_…` /
`po_…`) are written. A PSP refusal is the tool's refusal: the approval ends `failed` with the
reason and nothing is written. Only a deposit confirmed by a verified webhook (`paid`) is
refunded or disbursed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.approval_requests import pending_calls
from ramparts.ai.tools import ToolError, ToolOutcomeUnknown, ToolRun
from ramparts.payments import outgoing, records
from ramparts.payments.connection import PspConnection
from ramparts.payments.ledger import Ledger, held_funds
from ramparts.payments.outgoing import OutgoingKind
from ramparts.payments.psp import Payout, PspError, Refund, StripePsp
from ramparts.payments.records import Payment
from ramparts.policy.engine import Target
from ramparts.problems import Problem
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.models import Quote
from ramparts.quotes.services import QuoteService

__all__ = [
    "APP",
    "CHARGE_TOOL",
    "DISBURSE_TOOL",
    "REFUND_TOOL",
    "Left",
    "adapter",
    "approved",
    "deposit_target",
    "disburse",
    "disbursement_target",
    "left_of",
    "paid_deposit",
    "quote_of",
    "refund",
    "refund_target",
]

#: The app name a quote's deposit is recorded under (`payments.app`); its subject is the
#: quote's id.
APP = "quotes"
CHARGE_TOOL = "charge_deposit"
REFUND_TOOL = "issue_refund"
DISBURSE_TOOL = "disburse_deposit"


def _target(kind: str, resource: str, quote: Quote) -> Target:
    return Target(kind, resource, str(quote.tenant_id), quote.sensitivity.value)


def deposit_target(quote: Quote) -> Target:
    """A quote's deposit, as Cedar sees it: the quote's tenant and sensitivity."""
    return _target(QuoteAction.DEPOSIT_CHARGE.entity_type, str(quote.id), quote)


def refund_target(payment: Payment, quote: Quote) -> Target:
    """A refund of `payment` (a deposit of `quote`)."""
    return _target(QuoteAction.REFUND_ISSUE.entity_type, str(payment.id), quote)


def disbursement_target(quote: Quote) -> Target:
    """A disbursement of `quote`'s deposit to its seller."""
    return _target(QuoteAction.DISBURSEMENT_APPROVE.entity_type, str(quote.id), quote)


async def quote_of(session: AsyncSession, tenant_id: uuid.UUID, payment: Payment) -> Quote | None:
    """The quote `payment` is the deposit of (None: not a quote's payment)."""
    if payment.app != APP:
        return None
    try:
        quote_id = uuid.UUID(payment.subject)
    except ValueError:
        return None
    return await QuoteService(session).get(tenant_id, quote_id)


async def paid_deposit(
    session: AsyncSession, quote_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    """The quote's deposit confirmed paid (by a verified webhook and the PSP), if any;
    `lock` locks its row until the transaction ends."""
    for payment in await records.list_for(session, APP, [str(quote_id)]):
        if payment.paid:
            return await records.by_id(session, payment.id, lock=True) if lock else payment
    return None


@dataclass(frozen=True)
class Left:
    """What is left of a paid deposit: `held` by the ledger, less what requests still to
    be decided would take (`pending`)."""

    held: int
    pending: int

    @property
    def available(self) -> int:
        return max(0, self.held - self.pending)


async def left_of(session: AsyncSession, payment: Payment) -> Left:
    """What the ledger still holds for `payment` (its deposit, less the refunds and
    disbursements posted), and what pending refund and disbursement requests of it ask."""
    held = await Ledger().balance(session, held_funds(payment.ledger_name), payment.currency)
    pending = 0
    for tool, arguments in await pending_calls(session, [REFUND_TOOL, DISBURSE_TOOL]):
        if not isinstance(arguments, dict) or not isinstance(arguments.get("amount"), int):
            continue
        mine = (tool == REFUND_TOOL and arguments.get("payment_id") == str(payment.id)) or (
            tool == DISBURSE_TOOL and arguments.get("quote_id") == payment.subject
        )
        if mine:
            pending += arguments["amount"]
    return Left(held, pending)


# --- the approved calls ---------------------------------------------------------------------


def approved(run: ToolRun) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """The requester, the approver and the approval: money runs only on a second person's
    approval, whatever called the tool."""
    requester = run.principal.user_id
    approver = run.approved_by.user_id if run.approved_by is not None else None
    if requester is None or approver is None or run.approval_id is None:
        raise ToolError("money moves only once a second person approved the request")
    if approver == requester:  # pragma: no cover - the approvals service refuses it first
        raise ToolError("four eyes: a different person must approve")
    return requester, approver, run.approval_id


def adapter(psp: PspConnection) -> StripePsp:
    try:
        return psp()
    except Problem as problem:  # payments are not set up: the tool's refusal, in words
        raise ToolError(problem.detail or "payments are not set up") from None


async def _held(session: AsyncSession, payment: Payment, amount: int, what: str) -> None:
    held = await Ledger().balance(session, held_funds(payment.ledger_name), payment.currency)
    if amount > held:
        raise ToolError(f"{amount} cannot be {what}: {held} is still held for this payment")


def _psp_failure(exc: PspError) -> Exception:
    """A PSP refusal closes the approval (`failed`: nothing happened); no answer, a conflict
    or a server error may have moved the money, so the approval stays pending and approving
    it again sends the same call with the same idempotency key (the approval's id), which
    the PSP answers with the first result."""
    if exc.definitive:
        return ToolError(str(exc))
    return ToolOutcomeUnknown(str(exc))


async def refund(run: ToolRun, psp: PspConnection) -> dict[str, Any]:
    """`issue_refund`, approved: refund `amount` of the paid deposit `payment_id`."""
    _, _, approval = approved(run)
    session = run.session
    payment = await records.by_id(session, uuid.UUID(run.arguments["payment_id"]), lock=True)
    if payment is None or payment.app != APP:
        raise ToolError("no such payment")
    if not payment.paid or payment.psp_id is None:
        raise ToolError("the payment is not paid: only a confirmed deposit is refunded")
    amount = int(run.arguments["amount"])
    await _held(session, payment, amount, "refunded")
    try:
        made = await adapter(psp).create_refund(
            run.principal.tenant_id, payment.psp_id, amount=amount, idempotency_key=str(approval)
        )
    except PspError as exc:
        raise _psp_failure(exc) from None
    return await _settled(run, OutgoingKind.REFUND, payment, made)


async def disburse(run: ToolRun, psp: PspConnection) -> dict[str, Any]:
    """`disburse_deposit`, approved: pay `amount` of the quote's paid deposit out to the
    seller (a PSP payout)."""
    _, _, approval = approved(run)
    session = run.session
    quote_id = uuid.UUID(run.arguments["quote_id"])
    payment = await paid_deposit(session, quote_id, lock=True)
    if payment is None:
        raise ToolError("the deposit is not confirmed paid by a verified webhook yet")
    amount = int(run.arguments["amount"])
    await _held(session, payment, amount, "disbursed")
    try:
        made = await adapter(psp).create_payout(
            run.principal.tenant_id,
            amount=amount,
            currency=payment.currency,
            idempotency_key=str(approval),
            metadata={"ramparts_payment": str(payment.id)},
        )
    except PspError as exc:
        raise _psp_failure(exc) from None
    return {
        **await _settled(run, OutgoingKind.DISBURSEMENT, payment, made),
        "quote_id": str(quote_id),
    }


async def _settled(
    run: ToolRun, kind: OutgoingKind, payment: Payment, made: Refund | Payout
) -> dict[str, Any]:
    """Record what the PSP accepted (`made`): its row, with both people, and its ledger
    entry, in the approval's transaction; what the tool answers."""
    if made.status in {"failed", "canceled"}:
        raise ToolError(f"the PSP refused the {kind.value} ({made.status})")
    requester, approver, _ = approved(run)
    row = await outgoing.add(
        run.session,
        kind,
        payment,
        psp_id=made.id,
        amount=made.amount,
        psp_status=made.status,
        requested_by=requester,
        approved_by=approver,
    )
    ledger, name = Ledger(), payment.ledger_name
    if kind is OutgoingKind.REFUND:
        await ledger.record_refund(
            run.session, payment=name, refund=made.id, amount=made.amount,
            currency=payment.currency,
        )  # fmt: skip
    else:
        await ledger.record_disbursement(
            run.session, payment=name, disbursement=made.id, amount=made.amount,
            currency=payment.currency,
        )  # fmt: skip
    return {
        f"{kind.value}_id": str(row.id),
        "psp_id": made.id,
        "payment_id": str(payment.id),
        "amount": row.amount,
        "currency": row.currency,
        "status": row.status,
    }
