"""Processing a stored PSP event, exactly once by event id (PAY-2, PAY-4).

`process_event` runs in the event's tenant session (row-level security: the tenant is the one
the runtime wrote on the PSP object), in one transaction: it locks the `psp_events` row, and
an event that is not `pending` any more is left as it is; otherwise it acts and marks the
event `processed` (or `ignored`) in the same transaction. A crash or a PSP that does not
answer rolls everything back, and the job is retried.

A signature proves the PSP sent an event, not that money moved: the event only says which
object to look at, and what is recorded is what the PSP answers when asked now.

- `payment_intent.*` (and `charge.*` naming an intent): the payment's status becomes the
  intent's (`ramparts.payments.records`: a terminal status never moves, `succeeded` shows as
  `processing` until confirmed). A `payment_intent.succeeded` event whose intent the PSP says
  has succeeded confirms the payment (paid) and posts the deposit to the ledger (reference:
  the charge) and the PSP's fee when there is one (reference: its balance transaction). The
  latest attempt to pay records the outcome the event reports, when the PSP agrees.
- `refund.*`, `charge.refund.*` and `payout.*`: the refund's or the disbursement's status
  becomes the PSP's; one that failed or was canceled gets its ledger entry reversed
  (reference `<psp id>.failed`).
- An event about an object the runtime does not know is `ignored`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import Database
from ramparts.payments import records
from ramparts.payments.ledger import EntryKind, Ledger
from ramparts.payments.psp import PaymentIntent, Payout, PspNotFoundError, Refund, StripePsp
from ramparts.payments.records import Payment, PaymentStatus

__all__ = ["EventState", "process_event"]

log = structlog.get_logger(__name__)


class EventState(StrEnum):
    """What `process_event` found or made of an event."""

    PROCESSED = "processed"
    IGNORED = "ignored"
    #: No such event in the tenant (a job naming what is not there): nothing to do.
    MISSING = "missing"


@dataclass(frozen=True)
class _Event:
    id: str
    type: str
    object_id: str
    psp_object: Mapping[str, Any]


_LOCK_EVENT = text(
    "SELECT event_type, object_id, state, payload FROM psp_events WHERE event_id = :id FOR UPDATE"
)
_SETTLE = text("UPDATE psp_events SET state = :state, processed_at = now() WHERE event_id = :id")
_LATEST_ATTEMPT = text(
    "SELECT id, outcome FROM payment_attempts WHERE payment_id = :payment "
    "ORDER BY created_at DESC, id DESC LIMIT 1 FOR UPDATE"
)
_SET_ATTEMPT = text(
    "UPDATE payment_attempts SET outcome = :outcome, decline_code = :code WHERE id = :id"
)
#: Attempt outcomes an event may still change (the others are final).
_OPEN_ATTEMPT = frozenset({"pending", "requires_action"})
_DECLINE_CODE = re.compile(r"[a-z0-9_]{1,100}")

#: The refund and disbursement tables: their statuses in the order they may move (a status
#: never moves back; the last ones are final and reverse the ledger entry).
_FAILED = frozenset({"failed", "canceled"})


@dataclass(frozen=True)
class _Movement:
    table: str
    kind: EntryKind
    rank: Mapping[str, int]

    def lock(self) -> Any:
        # The table is one of the two constants below, never input.
        return text(
            f"SELECT id, status FROM {self.table} WHERE psp_id = :psp_id FOR UPDATE"  # noqa: S608  # nosec B608 # the table is one of two constants
        )

    def update(self) -> Any:
        return text(
            f"UPDATE {self.table} SET status = :status, updated_at = now() "  # noqa: S608  # nosec B608 # the table is one of two constants
            "WHERE id = :id"
        )


_REFUNDS = _Movement(
    "payment_refunds",
    EntryKind.REFUND,
    {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2},
)
_DISBURSEMENTS = _Movement(
    "payment_disbursements",
    EntryKind.DISBURSEMENT,
    {"pending": 0, "in_transit": 1, "paid": 2, "failed": 3, "canceled": 3},
)


async def process_event(
    database: Database, psp: Callable[[], StripePsp], tenant_id: uuid.UUID, event_id: str
) -> EventState:
    """Process `event_id` of `tenant_id` once (see the module docstring). `psp` gives the
    adapter when the PSP must be asked. Raises (and changes nothing) when the PSP cannot be
    reached: the job is then retried."""
    async with database.tenant_session(tenant_id) as session:
        row = (await session.execute(_LOCK_EVENT, {"id": event_id})).first()
        if row is None:
            log.warning("psp_event_missing", event_id=event_id, tenant=str(tenant_id))
            return EventState.MISSING
        event_type, object_id, state, payload = row
        if state != "pending":
            return EventState(state)
        data = payload.get("data") if isinstance(payload, dict) else None
        psp_object = data.get("object") if isinstance(data, dict) else None
        event = _Event(event_id, event_type, object_id, psp_object or {})
        settled = await _handle(session, psp, tenant_id, event)
        await session.execute(_SETTLE, {"state": settled.value, "id": event_id})
    log.info("psp_event_processed", event_id=event_id, event_type=event_type, state=settled.value)
    return settled


async def _handle(
    session: AsyncSession, psp: Callable[[], StripePsp], tenant: uuid.UUID, event: _Event
) -> EventState:
    kind = event.type
    if kind.startswith("payment_intent."):
        return await _payment(session, psp, tenant, event, event.object_id)
    if kind.startswith(("refund.", "charge.refund.")):
        return await _outgoing(
            session, _REFUNDS, lambda: psp().retrieve_refund(tenant, event.object_id), event
        )
    if kind.startswith("charge."):
        intent_id = _id_of(event.psp_object.get("payment_intent"))
        if intent_id is None:
            return EventState.IGNORED
        return await _payment(session, psp, tenant, event, intent_id)
    if kind.startswith("payout."):
        return await _outgoing(
            session, _DISBURSEMENTS, lambda: psp().retrieve_payout(tenant, event.object_id), event
        )
    return EventState.IGNORED


async def _payment(
    session: AsyncSession,
    psp: Callable[[], StripePsp],
    tenant: uuid.UUID,
    event: _Event,
    intent_id: str,
) -> EventState:
    payment = await records.by_psp_id(session, intent_id, lock=True)
    if payment is None:
        log.info("psp_event_unknown_payment", event_id=event.id, event_type=event.type)
        return EventState.IGNORED
    adapter = psp()
    try:
        intent = await adapter.retrieve_payment_intent(tenant, intent_id)
    except PspNotFoundError:
        log.warning("psp_event_intent_not_at_psp", event_id=event.id, payment_id=str(payment.id))
        return EventState.IGNORED
    payment = await records.set_status(session, payment, intent.status)
    proven = event.type == "payment_intent.succeeded" and intent.status == "succeeded"
    if proven and not payment.paid:
        if payment.status is PaymentStatus.CANCELED or (intent.amount, intent.currency) != (
            payment.amount,
            payment.currency,
        ):
            # Money the PSP took that the payment does not match: never marked paid here;
            # reconciliation reports it.
            log.error(
                "psp_intent_does_not_match_payment",
                event_id=event.id,
                payment_id=str(payment.id),
                status=payment.status.value,
            )
        else:
            payment = await records.confirm(session, payment, event.id)
            await _post_deposit(session, adapter, payment, intent)
    await _record_attempt(session, payment, event, intent)
    return EventState.PROCESSED


async def _post_deposit(
    session: AsyncSession, psp: StripePsp, payment: Payment, intent: PaymentIntent
) -> None:
    charge = await psp.retrieve_charge(intent)
    ledger = Ledger()
    await ledger.record_deposit(
        session,
        payment=payment.ledger_name,
        amount=charge.amount,
        currency=charge.currency,
        reference=charge.id,
    )
    booked = charge.balance_transaction
    if booked is not None and booked.fee > 0:
        await ledger.record_psp_fee(
            session,
            payment=payment.ledger_name,
            reference=booked.id,
            amount=booked.fee,
            currency=booked.currency,
        )


def _attempt_outcome(event: _Event, intent: PaymentIntent) -> tuple[str, str | None] | None:
    """The outcome the event reports for the latest attempt, when the PSP agrees."""
    if event.type == "payment_intent.succeeded" and intent.status == "succeeded":
        return "succeeded", None
    if event.type == "payment_intent.requires_action" and intent.status == "requires_action":
        return "requires_action", None
    if event.type == "payment_intent.payment_failed" and intent.status in {
        "requires_payment_method",
        "canceled",
    }:
        error = event.psp_object.get("last_payment_error")
        code = None
        if isinstance(error, dict):
            code = error.get("decline_code") or error.get("code")
        valid = isinstance(code, str) and _DECLINE_CODE.fullmatch(code)
        return "declined", code if valid else None
    return None


async def _record_attempt(
    session: AsyncSession, payment: Payment, event: _Event, intent: PaymentIntent
) -> None:
    outcome = _attempt_outcome(event, intent)
    if outcome is None:
        return
    attempt = (await session.execute(_LATEST_ATTEMPT, {"payment": payment.id})).first()
    if attempt is None or attempt.outcome not in _OPEN_ATTEMPT:
        return  # none made through the runtime, or already final: never moved back
    await session.execute(
        _SET_ATTEMPT, {"outcome": outcome[0], "code": outcome[1], "id": attempt.id}
    )


async def _outgoing(
    session: AsyncSession,
    movement: _Movement,
    read: Callable[[], Awaitable[Refund | Payout]],
    event: _Event,
) -> EventState:
    """A refund's or payout's event: the row it names moves to what the PSP (`read`) says of
    the object now."""
    row = await _locked(session, movement, event)
    if row is None:
        return EventState.IGNORED
    try:
        found = await read()
    except PspNotFoundError:
        log.warning("psp_event_object_not_at_psp", event_id=event.id, event_type=event.type)
        return EventState.IGNORED
    # A refund waiting for the cardholder's bank is still pending to the books.
    status = "pending" if found.status == "requires_action" else found.status
    await _move(session, movement, row, status, event)
    return EventState.PROCESSED


async def _locked(session: AsyncSession, movement: _Movement, event: _Event) -> Any:
    row = (await session.execute(movement.lock(), {"psp_id": event.object_id})).first()
    if row is None:
        log.info("psp_event_unknown_object", event_id=event.id, event_type=event.type)
    return row


async def _move(
    session: AsyncSession, movement: _Movement, row: Any, status: str, event: _Event
) -> None:
    """Move the row to the PSP's `status` if that is forward; reverse the ledger entry of a
    movement that failed or was canceled."""
    rank = movement.rank
    if status not in rank:
        log.warning("psp_status_unknown", event_id=event.id, status=status[:40])
        return
    if rank[status] <= rank[row.status] or row.status in _FAILED:
        return
    await session.execute(movement.update(), {"status": status, "id": row.id})
    if status not in _FAILED:
        return
    ledger = Ledger()
    entry = await ledger.entry(session, movement.kind, event.object_id)
    if entry is None:
        log.warning("psp_failed_movement_not_in_ledger", event_id=event.id, table=movement.table)
        return
    await ledger.reverse(session, entry.id, reference=f"{event.object_id}.failed")


def _id_of(value: object) -> str | None:
    """An expandable field's id, whether the event holds the id or the object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        found: str = value["id"]
        return found
    return None
