"""Money going out of a payment (migration 0023): refunds to the payer and disbursements to
the payee, each one PSP object, asked for by one person and approved by another.

Every function works in the caller's tenant session (row-level security: the tenant is the
session's). A row is written once the PSP accepted the refund or payout, in the transaction
that posts it to the ledger; its status is the PSP's, mapped onto the table's (a refund that
`requires_action` is `pending`). The database refuses a row whose approver is its requester
(`ck_*_four_eyes`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.payments.records import Payment

__all__ = [
    "Outgoing",
    "OutgoingKind",
    "add",
    "of_payment",
    "table_status",
]


class OutgoingKind(StrEnum):
    REFUND = "refund"
    DISBURSEMENT = "disbursement"

    @property
    def table(self) -> str:
        return f"payment_{self.value}s"


#: Each kind's statuses (the table's CHECK), and the PSP's statuses that map onto another.
_STATUSES = {
    OutgoingKind.REFUND: frozenset({"pending", "succeeded", "failed", "canceled"}),
    OutgoingKind.DISBURSEMENT: frozenset({"pending", "in_transit", "paid", "failed", "canceled"}),
}
_MAPPED = {OutgoingKind.REFUND: {"requires_action": "pending"}, OutgoingKind.DISBURSEMENT: {}}
_COLUMNS = "id, payment_id, psp_id, amount, currency, status, requested_by, approved_by, created_at"
# Every statement is a constant per kind: its table name comes from `OutgoingKind`, never input.
_INSERT = {
    kind: (
        f"INSERT INTO {kind.table} (tenant_id, payment_id, psp_id, amount, currency, "  # noqa: S608  # nosec B608 # the table is a constant of OutgoingKind
        "status, requested_by, approved_by) VALUES (current_setting('app.tenant_id')::uuid, "
        ":payment, :psp_id, :amount, :currency, :status, :requested_by, :approved_by) "
        f"RETURNING {_COLUMNS}"
    )
    for kind in OutgoingKind
}
_OF_PAYMENT = {
    kind: f"SELECT {_COLUMNS} FROM {kind.table} "  # noqa: S608  # nosec B608 # constants
    "WHERE payment_id = :payment ORDER BY created_at, id"
    for kind in OutgoingKind
}


@dataclass(frozen=True)
class Outgoing:
    """A refund or a disbursement of a payment."""

    kind: OutgoingKind
    id: uuid.UUID
    payment_id: uuid.UUID
    psp_id: str | None  # re_… (a refund) or po_… (a payout)
    amount: int  # minor units
    currency: str  # lowercase ISO 4217, the payment's
    status: str
    requested_by: uuid.UUID
    approved_by: uuid.UUID
    created_at: datetime


def _outgoing(kind: OutgoingKind, row: Any) -> Outgoing:
    return Outgoing(kind, *row)


def table_status(kind: OutgoingKind, psp_status: str) -> str:
    """The table's status for what the PSP says of the refund or payout."""
    status = _MAPPED[kind].get(psp_status, psp_status)
    if status not in _STATUSES[kind]:
        raise ValueError(f"{kind.value} status {psp_status!r} is not one the runtime knows")
    return status


async def add(
    session: AsyncSession,
    kind: OutgoingKind,
    payment: Payment,
    *,
    psp_id: str,
    amount: int,
    psp_status: str,
    requested_by: uuid.UUID,
    approved_by: uuid.UUID,
) -> Outgoing:
    """Record the refund or disbursement the PSP accepted for `payment`: asked for by
    `requested_by`, approved by `approved_by` (a different person)."""
    if approved_by == requested_by:
        raise ValueError("four eyes: the approver is not the requester")
    row = (
        await session.execute(
            text(_INSERT[kind]),
            {
                "payment": payment.id,
                "psp_id": psp_id,
                "amount": amount,
                "currency": payment.currency,
                "status": table_status(kind, psp_status),
                "requested_by": requested_by,
                "approved_by": approved_by,
            },
        )
    ).one()
    return _outgoing(kind, row)


async def of_payment(
    session: AsyncSession, kind: OutgoingKind, payment_id: uuid.UUID
) -> list[Outgoing]:
    """`payment_id`'s refunds or disbursements, oldest first."""
    rows = await session.execute(text(_OF_PAYMENT[kind]), {"payment": payment_id})
    return [_outgoing(kind, row) for row in rows]
