"""Verified PSP events, stored once by event id in the tenant the runtime named.

What is stored is a verified Stripe event of a handled type about an object the runtime made
for a tenant (`ramparts.payments.tenancy`). Anything else that is validly signed is answered as
ignored and stored nowhere: the PSP is not asked to deliver it again, and what it names (an
event type the runtime does not act on, an object with no or an unknown tenant) is logged by
event id and type only, never with its payload.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import psycopg
import structlog
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import Database, Opening, opened
from ramparts.payments.tenancy import tenant_of

__all__ = [
    "HANDLED_TYPE_PREFIXES",
    "EventRefused",
    "OnStored",
    "Outcome",
    "PspEvents",
    "Receipt",
    "parse_event",
]

log = structlog.get_logger(__name__)

#: The events the runtime acts on: payments and their charges and refunds, and payouts (the
#: disbursements). Deny by default: any other type is acknowledged and dropped.
HANDLED_TYPE_PREFIXES = ("payment_intent.", "charge.", "refund.", "payout.")
MAX_ID_CHARS = 255
#: The shapes the table's checks hold them to, checked first to refuse in words.
EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
EVENT_TYPE = re.compile(r"[a-z_]+(\.[a-z_]+){1,4}")

#: Sets the tenant and stores the event in the transaction's first round trip (migration
#: 0021); answers whether the event was new.
STORE = "ramparts_store_psp_event"


#: Called in the storing transaction once an event is newly stored (the webhook route defers
#: its job there): the session, the event's tenant, the event id.
OnStored = Callable[[AsyncSession, uuid.UUID, str], Awaitable[None]]


class Outcome(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"


class EventRefused(Exception):  # noqa: N818 - a refusal, not a fault
    """A signed body that is not a Stripe event; the message says what is missing."""


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    object_id: str
    livemode: bool
    created: int
    psp_object: dict[str, Any]
    document: dict[str, Any]


@dataclass(frozen=True)
class Receipt:
    """What became of a delivery: `reason` says why one was ignored."""

    outcome: Outcome
    event_id: str
    reason: str | None = None


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_CHARS:
        raise EventRefused(f"{name} must be a string of 1 to {MAX_ID_CHARS} characters")
    return value


def parse_event(document: Any) -> Event:
    """The fields of a Stripe event (`object: "event"`) the store needs, or `EventRefused`."""
    if not isinstance(document, dict) or document.get("object") != "event":
        raise EventRefused('the body is not a Stripe event (an object with "object": "event")')
    event_id = _string(document.get("id"), "id")
    if not EVENT_ID.fullmatch(event_id):
        raise EventRefused('id must be an event id ("evt_" and ASCII letters, digits, _)')
    event_type = _string(document.get("type"), "type")
    if not EVENT_TYPE.fullmatch(event_type):
        raise EventRefused("type must be an event type (lowercase words joined by dots)")
    created = document.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or not 0 < created < 2**33:
        raise EventRefused("created must be a unix time in seconds")
    livemode = document.get("livemode")
    if not isinstance(livemode, bool):
        raise EventRefused("livemode must be true or false")
    data = document.get("data")
    psp_object = data.get("object") if isinstance(data, dict) else None
    if not isinstance(psp_object, dict):
        raise EventRefused("data.object must be an object")
    object_id = _string(psp_object.get("id"), "data.object.id")
    return Event(event_id, event_type, object_id, livemode, created, psp_object, document)


def _as_is(payload: Any) -> str:
    """The body is JSON text already (checked strict at the edge): sent as it came."""
    return str(payload)


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class PspEvents:
    """Stores verified events in their tenant's rows (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def store(
        self,
        event: Event,
        *,
        signed_at: int,
        body: str | None = None,
        on_stored: OnStored | None = None,
    ) -> Receipt:
        """Store `event` (parsed from `body`, the JSON as received, stored as it came: no
        second serialization) unless it is ignored or already stored; `on_stored` runs in
        the same transaction when it is new."""
        if not event.type.startswith(HANDLED_TYPE_PREFIXES):
            return self._ignored(event, "event type not handled")
        tenant = tenant_of(event.psp_object)
        if tenant is None:
            return self._ignored(event, "object names no tenant")
        payload = body if body is not None else json.dumps(event.document)
        arguments = (
            event.id,
            event.type,
            event.object_id,
            event.livemode,
            _timestamp(event.created),
            _timestamp(signed_at),
            Jsonb(payload, dumps=_as_is),
        )
        try:
            async with self._database.tenant_session(
                tenant, opening=Opening(STORE, arguments)
            ) as session:
                new = opened(session)
                if new and on_stored is not None:
                    await on_stored(session, tenant, event.id)
        except psycopg.errors.ForeignKeyViolation:
            # The tenant named is not (or no longer) one of ours: a deleted tenant's object.
            return self._ignored(event, "object names an unknown tenant")
        if not new:
            log.info("psp_event_duplicate", event_id=event.id, event_type=event.type)
            return Receipt(Outcome.DUPLICATE, event.id)
        # Debug only: the row itself (with `received_at`) is the record of every stored event.
        log.debug("psp_event_stored", event_id=event.id, event_type=event.type, tenant=str(tenant))
        return Receipt(Outcome.STORED, event.id)

    @staticmethod
    def _ignored(event: Event, reason: str) -> Receipt:
        log.warning("psp_event_ignored", event_id=event.id, event_type=event.type, reason=reason)
        return Receipt(Outcome.IGNORED, event.id, reason)
