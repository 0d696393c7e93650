"""The runtime's records of payments (migration 0023): what an app asked the PSP to collect,
and where it stands.

Every function works in the caller's tenant session (row-level security: the tenant is the
session's, never an argument). A payment's status is the PSP's PaymentIntent status as last
read from the PSP; it is *paid* only once `confirm` ran, which the worker does after a verified
`payment_intent.succeeded` event whose intent the PSP says has succeeded. The database refuses
a terminal status changing and a confirmation changing (the trigger of 0023): this module asks
first so that the usual refusal is an answer, not an error.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "TERMINAL",
    "Payment",
    "PaymentStatus",
    "by_id",
    "by_psp_id",
    "confirm",
    "create",
    "list_for",
    "set_psp_id",
    "set_status",
]


class PaymentStatus(StrEnum):
    """Stripe's PaymentIntent statuses."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"


#: Statuses a payment never leaves.
TERMINAL = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED})

_COLUMNS = (
    "id, app, subject, payer_id, requested_by, psp_id, amount, currency, status, "
    "confirmed_at, confirmed_by_event, created_at, updated_at"
)
# Every statement is a constant: the columns above and fixed SQL, never input.
_INSERT = (
    "INSERT INTO payments (tenant_id, id, app, subject, payer_id, requested_by, amount, "  # noqa: S608  # nosec B608 # the column list is a constant
    "currency, status) VALUES (current_setting('app.tenant_id')::uuid, :id, :app, :subject, "
    ":payer, :requested_by, :amount, :currency, 'requires_payment_method') "
    f"RETURNING {_COLUMNS}"
)
_BY_ID = f"SELECT {_COLUMNS} FROM payments WHERE id = :id"  # noqa: S608  # nosec B608 # a constant
_BY_PSP_ID = f"SELECT {_COLUMNS} FROM payments WHERE psp_id = :psp_id"  # noqa: S608  # nosec B608 # a constant
_LIST = (
    f"SELECT {_COLUMNS} FROM payments WHERE app = :app "  # noqa: S608  # nosec B608 # a constant
    "AND (CAST(:subjects AS text[]) IS NULL OR subject = ANY(CAST(:subjects AS text[]))) "
    "AND (CAST(:payer AS uuid) IS NULL OR payer_id = CAST(:payer AS uuid)) "
    "ORDER BY created_at DESC, id LIMIT :limit"
)
_SET_PSP_ID = (
    "UPDATE payments SET psp_id = :psp_id, status = :status, updated_at = now() "  # noqa: S608  # nosec B608 # the column list is a constant
    f"WHERE id = :id RETURNING {_COLUMNS}"
)
_SET_STATUS = (
    "UPDATE payments SET status = :status, updated_at = now() "  # noqa: S608  # nosec B608 # a constant
    f"WHERE id = :id RETURNING {_COLUMNS}"
)
_CONFIRM = (
    "UPDATE payments SET status = 'succeeded', confirmed_at = now(), "  # noqa: S608  # nosec B608 # the column list is a constant
    f"confirmed_by_event = :event, updated_at = now() WHERE id = :id RETURNING {_COLUMNS}"
)
_FOR_UPDATE = " FOR UPDATE"


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    app: str
    subject: str  # the app's own id of what is paid for (an order's)
    payer_id: uuid.UUID | None
    requested_by: uuid.UUID
    psp_id: str | None  # the PaymentIntent's id, once created
    amount: int  # minor units
    currency: str  # lowercase ISO 4217
    status: PaymentStatus
    confirmed_at: datetime | None  # set once: paid, proven by a verified event and the PSP
    confirmed_by_event: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def paid(self) -> bool:
        return self.confirmed_at is not None

    @property
    def ledger_name(self) -> str:
        """The payment's name in the ledger (`held_funds:<this>`)."""
        return str(self.id)


def _payment(row: Any) -> Payment:
    values = list(row)
    values[8] = PaymentStatus(values[8])
    return Payment(*values)


async def create(
    session: AsyncSession,
    *,
    app: str,
    subject: str,
    payer_id: uuid.UUID | None,
    requested_by: uuid.UUID,
    amount: int,
    currency: str,
    payment_id: uuid.UUID | None = None,
) -> Payment:
    """A new payment of the session's tenant, before its PaymentIntent exists."""
    # The PSP's bounds (`StripePsp` checks them too): refused here in words, not by a CHECK.
    if type(amount) is not int or not 1 <= amount <= 99_999_999:
        raise ValueError("amount must be an integer of minor units in 1..99999999")
    row = (
        await session.execute(
            text(_INSERT),
            {
                "id": payment_id or uuid.uuid4(),
                "app": app,
                "subject": subject,
                "payer": payer_id,
                "requested_by": requested_by,
                "amount": amount,
                "currency": currency,
            },
        )
    ).one()
    return _payment(row)


async def by_id(
    session: AsyncSession, payment_id: uuid.UUID, *, lock: bool = False
) -> Payment | None:
    row = (
        await session.execute(
            text(_BY_ID + (_FOR_UPDATE if lock else "")),
            {"id": payment_id},
        )
    ).first()
    return _payment(row) if row is not None else None


async def by_psp_id(session: AsyncSession, psp_id: str, *, lock: bool = False) -> Payment | None:
    row = (
        await session.execute(
            text(_BY_PSP_ID + (_FOR_UPDATE if lock else "")),
            {"psp_id": psp_id},
        )
    ).first()
    return _payment(row) if row is not None else None


async def list_for(
    session: AsyncSession,
    app: str,
    subjects: list[str] | None = None,
    *,
    payer_id: uuid.UUID | None = None,
    limit: int = 200,
) -> list[Payment]:
    """`app`'s payments, newest first: of `subjects` only, and `payer_id`'s only, when
    given."""
    rows = await session.execute(
        text(_LIST),
        {"app": app, "subjects": subjects, "payer": payer_id, "limit": limit},
    )
    return [_payment(row) for row in rows]


async def set_psp_id(session: AsyncSession, payment: Payment, psp_id: str, status: str) -> Payment:
    """Record the PaymentIntent made for `payment` and the status the PSP gave it (`succeeded`
    shows as `processing` until `confirm`)."""
    if status == PaymentStatus.SUCCEEDED:
        status = PaymentStatus.PROCESSING
    row = (
        await session.execute(
            text(_SET_PSP_ID),
            {"psp_id": psp_id, "status": PaymentStatus(status).value, "id": payment.id},
        )
    ).one()
    return _payment(row)


async def set_status(session: AsyncSession, payment: Payment, status: str) -> Payment:
    """Move `payment` (read `FOR UPDATE`) to the PSP's `status`; a terminal payment stays as
    it is (the PSP's answer to a late, out-of-order event never moves it backwards). The PSP
    saying `succeeded` is not proof of payment here: the payment shows `processing` until
    `confirm` (the database refuses `succeeded` without a confirmation)."""
    new = PaymentStatus(status)
    if new is PaymentStatus.SUCCEEDED:
        new = PaymentStatus.PROCESSING
    if payment.status in TERMINAL or payment.status is new:
        return payment
    row = (
        await session.execute(
            text(_SET_STATUS),
            {"status": new.value, "id": payment.id},
        )
    ).one()
    return _payment(row)


async def confirm(session: AsyncSession, payment: Payment, event_id: str) -> Payment:
    """Mark `payment` (read `FOR UPDATE`) paid: only after a verified `succeeded` event whose
    intent the PSP confirmed. Confirming again is a no-op (the first event stays the proof)."""
    if payment.paid:
        return payment
    row = (
        await session.execute(
            text(_CONFIRM),
            {"event": event_id, "id": payment.id},
        )
    ).one()
    return _payment(row)
