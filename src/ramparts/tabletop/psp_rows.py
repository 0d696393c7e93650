"""What the instance's database holds of the PSP's events and the money they move, read as its
owner in each tenant (row-level security applies to the owner too): how the tabletop sees
that a refused or replayed webhook delivery changed nothing. Only the runtime's own tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ramparts.tabletop.target import Target

__all__ = ["Aim", "Captured", "MoneyState", "aim", "captured", "money_state"]


@dataclass(frozen=True)
class Captured:
    """A delivery the PSP made and the instance processed: what an attacker could have
    captured on the wire (the event as stored, and when the PSP signed it)."""

    tenant_id: str
    event_id: str
    event_type: str
    object_id: str
    signed_at: datetime
    payload: str


@dataclass(frozen=True)
class Aim:
    """A payment a forged "succeeded" event would be about: one waiting to be paid when
    there is one (a forgery that took would pay it), with its PSP id."""

    tenant_id: str
    psp_id: str
    amount: int
    currency: str
    #: False: no payment waits to be paid, and the intent is made up.
    waiting: bool = True


@dataclass(frozen=True)
class MoneyState:
    """What a delivery about `object_id` could change: the rows stored under the event ids
    delivered (with their state), and the payment of that PSP object with its ledger
    entries."""

    events: tuple[tuple[str, str, str | None], ...]  # (event id, state, processed at)
    payment: tuple[str, str | None] | None  # (status, confirmed by event)
    ledger_entries: int


def _in_tenant(conn: psycopg.Connection[Any], tenant_id: str) -> None:
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))


def _tenant_ids(target: Target) -> list[str]:
    return [str(target.tenant(slug)["id"]) for slug in target.tenants()]


def captured(target: Target) -> Captured | None:
    """The newest processed `payment_intent.succeeded` event of any tenant (else the newest
    processed event), None when the PSP never had one processed."""
    found: list[tuple[bool, datetime, Captured]] = []
    with target.owner() as conn:
        for tenant_id in _tenant_ids(target):
            with conn.transaction():
                _in_tenant(conn, tenant_id)
                row = conn.execute(
                    "SELECT event_id, event_type, object_id, signed_at, received_at, "
                    "payload::text FROM psp_events WHERE tenant_id = %s AND state = 'processed' "
                    "ORDER BY (event_type = 'payment_intent.succeeded') DESC, received_at DESC "
                    "LIMIT 1",
                    (tenant_id,),
                ).fetchone()
            if row is not None:
                event = Captured(tenant_id, row[0], row[1], row[2], row[3], row[5])
                found.append((row[1] == "payment_intent.succeeded", row[4], event))
    if not found:
        return None
    return max(found, key=lambda item: (item[0], item[1]))[2]


def aim(target: Target) -> Aim | None:
    """The newest payment of any tenant that waits to be paid, None when there is none."""
    found: list[tuple[datetime, Aim]] = []
    with target.owner() as conn:
        for tenant_id in _tenant_ids(target):
            with conn.transaction():
                _in_tenant(conn, tenant_id)
                row = conn.execute(
                    "SELECT psp_id, amount, currency, created_at FROM payments "
                    "WHERE tenant_id = %s AND confirmed_at IS NULL AND psp_id IS NOT NULL "
                    "AND status IN ('requires_payment_method', 'requires_confirmation', "
                    "'requires_action', 'processing') ORDER BY created_at DESC LIMIT 1",
                    (tenant_id,),
                ).fetchone()
            if row is not None:
                found.append((row[3], Aim(tenant_id, row[0], row[1], row[2])))
    return max(found, key=lambda item: item[0])[1] if found else None


def money_state(
    target: Target, tenant_id: str, object_id: str, event_ids: tuple[str, ...]
) -> MoneyState:
    """The rows a delivery of `event_ids` about the PSP object `object_id` could change."""
    with target.owner() as conn, conn.transaction():
        _in_tenant(conn, tenant_id)
        events = conn.execute(
            "SELECT event_id, state, processed_at::text FROM psp_events "
            "WHERE tenant_id = %s AND event_id = ANY(%s) ORDER BY event_id",
            (tenant_id, list(event_ids)),
        ).fetchall()
        payment = conn.execute(
            "SELECT id::text, status, confirmed_by_event FROM payments "
            "WHERE tenant_id = %s AND psp_id = %s",
            (tenant_id, object_id),
        ).fetchone()
        entries = 0
        if payment is not None:
            counted = conn.execute(
                "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s AND payment = %s",
                (tenant_id, payment[0]),
            ).fetchone()
            entries = int(counted[0]) if counted else 0
    return MoneyState(
        tuple((e[0], e[1], e[2]) for e in events),
        (payment[1], payment[2]) if payment is not None else None,
        entries,
    )
