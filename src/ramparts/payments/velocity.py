"""Velocity limits on attempts to pay (PAY-2): how often one card and one payer may try.

Card testing and stolen cards show as many attempts in little time: the same card tried again
and again, or one payer trying card after card, or ever larger amounts. Three limits, over
rolling windows, counted from `payment_attempts` (every attempt the PSP was asked to make,
declined or not, is a row there; an attempt refused here never reached the PSP and is not):

- attempts with one card (the PSP's fingerprint of its number) per hour, across payers;
- attempts by one payer per day;
- the amount one payer attempts per day, per currency (minor units).

`check_and_record` decides and records in one transaction under two transaction-level
advisory locks, the payer's then the card's (always in that order, so two attempts never wait
on each other in a cycle): two concurrent attempts of one payer or with one card are counted
one after the other, never both against the same count. The caller runs it in a short
transaction of its own that commits before the PSP is asked, so the attempt counts even when
the request that made it fails afterwards, and `record_outcome` later says how it ended.
Limits are settings (`RAMPARTS_VELOCITY_*`); an excess is `VelocityExceeded`, which says which
limit and when the oldest attempt that blocks leaves its window (the `Retry-After`).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.config import Settings

__all__ = [
    "AttemptOutcome",
    "Limit",
    "VelocityExceeded",
    "VelocityLimits",
    "check_and_record",
    "record_outcome",
]

CARD_WINDOW = timedelta(hours=1)
PAYER_WINDOW = timedelta(days=1)


class Limit(StrEnum):
    """Which limit an attempt exceeded (the problem's `limit` member)."""

    CARD_ATTEMPTS_PER_HOUR = "card_attempts_per_hour"
    PAYER_ATTEMPTS_PER_DAY = "payer_attempts_per_day"
    PAYER_AMOUNT_PER_DAY = "payer_amount_per_day"


class AttemptOutcome(StrEnum):
    """How an attempt ended (`payment_attempts.outcome`)."""

    PENDING = "pending"  # asked of the PSP; no answer yet, or the payment is processing
    SUCCEEDED = "succeeded"  # the PSP accepted the card (paid only once the worker confirms)
    REQUIRES_ACTION = "requires_action"  # the cardholder must authenticate (3D Secure)
    DECLINED = "declined"
    FAILED = "failed"  # the PSP could not be asked or refused the request itself


@dataclass(frozen=True)
class VelocityLimits:
    """The limits, each at least 1. Defaults: 5 attempts per card per hour, 10 attempts per
    payer per day, 5,000,000 minor units (50,000.00 of a two-decimal currency) per payer per
    day and currency."""

    card_attempts_per_hour: int = 5
    payer_attempts_per_day: int = 10
    payer_amount_per_day: int = 5_000_000

    def __post_init__(self) -> None:
        for name in ("card_attempts_per_hour", "payer_attempts_per_day", "payer_amount_per_day"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer")

    @classmethod
    def from_settings(cls, settings: Settings) -> VelocityLimits:
        return cls(
            card_attempts_per_hour=settings.velocity_card_attempts_per_hour,
            payer_attempts_per_day=settings.velocity_payer_attempts_per_day,
            payer_amount_per_day=settings.velocity_payer_amount_per_day,
        )


class VelocityExceeded(Exception):  # noqa: N818 - an outcome, like the problem it becomes
    """The attempt would exceed `limit`; it may be tried again in `retry_after` seconds."""

    def __init__(self, limit: Limit, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.limit = limit
        self.retry_after = retry_after
        self.detail = detail


# Every statement is a constant. The tenant is the session's: row-level security confines
# them to it, and each names it too, so a missing policy and a forgotten filter (or a role
# that bypasses row-level security) are each caught by the other.
_TENANT = "tenant_id = current_setting('app.tenant_id')::uuid"
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_NOW = text("SELECT now()")
_CARD_ATTEMPTS = text(
    f"SELECT created_at FROM payment_attempts WHERE {_TENANT} "  # noqa: S608  # nosec B608 # a constant
    "AND card_fingerprint = :fingerprint AND created_at > :since ORDER BY created_at"
)
_PAYER_ATTEMPTS = text(
    f"SELECT created_at, amount, currency FROM payment_attempts WHERE {_TENANT} "  # noqa: S608  # nosec B608 # the tenant expression, a constant
    "AND payer_id = :payer AND created_at > :since ORDER BY created_at"
)
_INSERT = text(
    "INSERT INTO payment_attempts (tenant_id, id, payment_id, payer_id, card_fingerprint, "
    "amount, currency) VALUES (current_setting('app.tenant_id')::uuid, :id, :payment, :payer, "
    ":fingerprint, :amount, :currency)"
)
_OUTCOME = text(
    "UPDATE payment_attempts SET outcome = :outcome, decline_code = :code "  # noqa: S608  # nosec B608 # the tenant expression, a constant
    f"WHERE {_TENANT} AND id = :id"
)


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for `parts` (namespaced, so it meets no other lock)."""
    digest = hashlib.sha256("\x00".join(("ramparts.velocity", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


async def check_and_record(
    session: AsyncSession,
    *,
    payment_id: uuid.UUID,
    payer_id: uuid.UUID,
    card_fingerprint: str,
    amount: int,
    currency: str,
    limits: VelocityLimits,
) -> uuid.UUID:
    """Record an attempt of `payer_id` to pay `amount` of `payment_id` with the card
    `card_fingerprint`, or raise `VelocityExceeded` (recording nothing). Run it in a
    transaction of its own and commit at once: the locks are held until then."""
    tenant = str((await session.execute(text("SELECT current_setting('app.tenant_id')"))).scalar())
    await session.execute(_LOCK, {"key": _lock_key(tenant, "payer", str(payer_id))})
    await session.execute(_LOCK, {"key": _lock_key(tenant, "card", card_fingerprint)})
    now: datetime = (await session.execute(_NOW)).scalar_one()

    cards = [
        row.created_at
        for row in await session.execute(
            _CARD_ATTEMPTS, {"fingerprint": card_fingerprint, "since": now - CARD_WINDOW}
        )
    ]
    if len(cards) >= limits.card_attempts_per_hour:
        # The attempts that must leave the window before one more fits: the oldest ones.
        unblocking = cards[len(cards) - limits.card_attempts_per_hour]
        raise VelocityExceeded(
            Limit.CARD_ATTEMPTS_PER_HOUR,
            _seconds_until(unblocking + CARD_WINDOW, now),
            f"this card was tried {len(cards)} times in the last hour "
            f"(at most {limits.card_attempts_per_hour})",
        )

    payers = list(
        await session.execute(_PAYER_ATTEMPTS, {"payer": payer_id, "since": now - PAYER_WINDOW})
    )
    if len(payers) >= limits.payer_attempts_per_day:
        unblocking = payers[len(payers) - limits.payer_attempts_per_day].created_at
        raise VelocityExceeded(
            Limit.PAYER_ATTEMPTS_PER_DAY,
            _seconds_until(unblocking + PAYER_WINDOW, now),
            f"{len(payers)} attempts to pay in the last day (at most "
            f"{limits.payer_attempts_per_day})",
        )

    _check_amount(payers, amount, currency, limits, now)
    attempt = uuid.uuid4()
    await session.execute(
        _INSERT,
        {
            "id": attempt,
            "payment": payment_id,
            "payer": payer_id,
            "fingerprint": card_fingerprint,
            "amount": amount,
            "currency": currency,
        },
    )
    return attempt


def _check_amount(
    payers: list[Any], amount: int, currency: str, limits: VelocityLimits, now: datetime
) -> None:
    same = [(row.created_at, int(row.amount)) for row in payers if row.currency == currency]
    attempted = sum(value for _, value in same)
    if attempted + amount <= limits.payer_amount_per_day:
        return
    detail = (
        f"{attempted + amount} {currency.upper()} in minor units attempted in a day "
        f"(at most {limits.payer_amount_per_day})"
    )
    if amount > limits.payer_amount_per_day:  # never fits: a whole window, to say "not today"
        raise VelocityExceeded(
            Limit.PAYER_AMOUNT_PER_DAY,
            math.ceil(PAYER_WINDOW.total_seconds()),
            f"{amount} {currency.upper()} in minor units is more than one payer may attempt "
            f"in a day ({limits.payer_amount_per_day})",
        )
    remaining = attempted
    for created_at, value in same:  # oldest first: when enough has left the window
        remaining -= value
        if remaining + amount <= limits.payer_amount_per_day:
            raise VelocityExceeded(
                Limit.PAYER_AMOUNT_PER_DAY, _seconds_until(created_at + PAYER_WINDOW, now), detail
            )
    raise AssertionError("unreachable: the amount alone fits")  # pragma: no cover


async def record_outcome(
    session: AsyncSession,
    attempt_id: uuid.UUID,
    outcome: AttemptOutcome,
    *,
    decline_code: str | None = None,
) -> None:
    """Say how an attempt ended (the attempt still counts, whatever the outcome)."""
    code = decline_code[:100] if decline_code else None
    await session.execute(_OUTCOME, {"outcome": outcome.value, "code": code, "id": attempt_id})
