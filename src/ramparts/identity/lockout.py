"""Progressive lockout: per account for passwords, per account for the second factor, and per
client address for both.

The two account counters are apart on purpose. A correct password resets the password count,
so if wrong second factors counted there too, whoever holds the password could guess codes
forever (4 wrong codes, a fresh sign-in, 4 more...). The second factor's count is reset only by
a second factor that succeeds. Only someone past the first factor can fail the second, so its
lock is no lever for locking out a user by name alone; it refuses even the right code while it
lasts, and raises an alert, since that person holds the user's password.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database

__all__ = [
    "ACCOUNT_FREE_FAILURES",
    "ACCOUNT_MAX_LOCK",
    "ADDRESS_MAX_FAILURES",
    "SECOND_FACTOR_BASE_LOCK",
    "SECOND_FACTOR_FREE_FAILURES",
    "SECOND_FACTOR_MAX_LOCK",
    "Lockout",
    "SecondFactorAttempt",
    "SecondFactorLockedError",
    "lock_duration",
]

log = structlog.get_logger(__name__)

ACCOUNT_FREE_FAILURES = 5
ACCOUNT_BASE_LOCK = timedelta(seconds=30)
ACCOUNT_MAX_LOCK = timedelta(minutes=15)
# Six-digit codes: five guesses, then one after a minute, two minutes, four... and at most one
# a day, so a year of guessing finds a code with well under 1 % odds.
SECOND_FACTOR_FREE_FAILURES = 5
SECOND_FACTOR_BASE_LOCK = timedelta(minutes=1)
SECOND_FACTOR_MAX_LOCK = timedelta(days=1)
ADDRESS_MAX_FAILURES = 20
ADDRESS_WINDOW = timedelta(minutes=15)


class SecondFactorLockedError(Exception):
    """The second factor is locked (for the account or the address): nothing was checked."""


def lock_duration(failures: int, *, free: int, base: timedelta, cap: timedelta) -> timedelta:
    """Nothing for the first `free - 1` failures, then `base`, doubling per failure up to `cap`
    (the exponent is bounded, so a long history of failures cannot overflow)."""
    if failures < free:
        return timedelta(0)
    doublings = min(failures - free, (cap // base).bit_length())
    return min(base * (1 << doublings), cap)


@dataclass(frozen=True)
class SecondFactorAttempt:
    """One second-factor attempt, begun with `Lockout.begin_second_factor`."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    address: str
    failures: int  # the account's consecutive second-factor failures so far
    locked: bool


class Lockout:
    def __init__(self, database: Database, address_key: bytes, audit: AuditLog) -> None:
        self._db = database
        self._address_key = address_key
        self._audit = audit

    def address_hash(self, address: str) -> bytes:
        """Addresses are kept as keyed hashes, never in the clear."""
        return hmac.new(self._address_key, address.encode(), hashlib.sha256).digest()

    async def password_failed(
        self, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> None:
        """A wrong password for this account (in the caller's transaction)."""
        failures = await session.scalar(
            text(
                "UPDATE users SET failed_logins = failed_logins + 1 "
                "WHERE tenant_id = :tenant AND id = :id RETURNING failed_logins"
            ),
            {"tenant": tenant_id, "id": user_id},
        )
        lock = lock_duration(
            failures or 0, free=ACCOUNT_FREE_FAILURES, base=ACCOUNT_BASE_LOCK, cap=ACCOUNT_MAX_LOCK
        )
        if not lock:
            return
        await session.execute(
            text("UPDATE users SET locked_until = :until WHERE tenant_id = :tenant AND id = :id"),
            {"until": now + lock, "tenant": tenant_id, "id": user_id},
        )
        await self._audit.record(
            session,
            Actor.system(),
            Action.ACCOUNT_LOCKED,
            Resource("user", str(user_id)),
            Decision.DENY,
            {"failures": failures, "seconds": int(lock.total_seconds())},
        )

    async def begin_second_factor(
        self, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, address: str
    ) -> SecondFactorAttempt:
        """Start an attempt in the caller's transaction: the user's row stays locked until it
        ends, so parallel guesses are checked one at a time and none slips past the count.
        The attempt is refused unseen while the second factor, the account or the address is
        locked."""
        row = (
            await session.execute(
                text(
                    "SELECT u.second_factor_failures, greatest(u.second_factor_locked_until, "
                    "u.locked_until, (SELECT t.locked_until FROM login_throttle t "
                    "WHERE t.key_hash = :key)) > now() FROM users u "
                    "WHERE u.tenant_id = :tenant AND u.id = :user FOR UPDATE OF u"
                ),
                {"tenant": tenant_id, "user": user_id, "key": self.address_hash(address)},
            )
        ).first()
        if row is None:  # the user was deleted during the sign-in: nothing to check
            return SecondFactorAttempt(tenant_id, user_id, address, 0, locked=True)
        return SecondFactorAttempt(tenant_id, user_id, address, row[0], locked=bool(row[1]))

    async def second_factor_failed(
        self, session: AsyncSession, attempt: SecondFactorAttempt, method: str
    ) -> None:
        """A refused second factor: it counts against the account unless the attempt met a
        lock (then nothing was guessed). The address is counted by `address_failed`, after
        the caller's transaction."""
        if attempt.locked:
            return
        now = datetime.now(UTC)
        failures = attempt.failures + 1
        lock = lock_duration(
            failures,
            free=SECOND_FACTOR_FREE_FAILURES,
            base=SECOND_FACTOR_BASE_LOCK,
            cap=SECOND_FACTOR_MAX_LOCK,
        )
        await session.execute(
            text(
                "UPDATE users SET second_factor_failures = :failures, "
                "second_factor_locked_until = :until WHERE tenant_id = :tenant AND id = :user"
            ),
            {
                "failures": failures,
                "until": now + lock if lock else None,
                "tenant": attempt.tenant_id,
                "user": attempt.user_id,
            },
        )
        if not lock:
            return
        # An alert: whoever did this holds the user's password.
        log.warning(
            "second_factor_locked",
            tenant=str(attempt.tenant_id),
            user=str(attempt.user_id),
            failures=failures,
            seconds=int(lock.total_seconds()),
        )
        await self._audit.record(
            session,
            Actor.system(),
            Action.SECOND_FACTOR_LOCKED,
            Resource("user", str(attempt.user_id)),
            Decision.DENY,
            {"failures": failures, "seconds": int(lock.total_seconds()), "method": method},
        )

    async def second_factor_succeeded(
        self, session: AsyncSession, attempt: SecondFactorAttempt
    ) -> None:
        """The only thing that resets the second factor's count (no write when it is 0)."""
        if attempt.failures:
            await session.execute(
                text(
                    "UPDATE users SET second_factor_failures = 0, "
                    "second_factor_locked_until = NULL WHERE tenant_id = :tenant AND id = :user"
                ),
                {"tenant": attempt.tenant_id, "user": attempt.user_id},
            )

    async def end_second_factor(self, attempt: SecondFactorAttempt, *, ok: bool) -> None:
        """After the attempt's transaction has committed its evidence: a refusal counts
        against the address too, and one that met a lock raises SecondFactorLockedError."""
        if ok:
            return
        await self.address_failed(attempt.address)
        if attempt.locked:
            raise SecondFactorLockedError

    async def address_failed(self, address: str) -> None:
        """A failed password or second factor from `address` (in a transaction of its own)."""
        now = datetime.now(UTC)
        key = self.address_hash(address)
        async with self._db.session() as session:
            failures = await session.scalar(
                text("""
                INSERT INTO login_throttle AS t (key_hash, failures, window_start)
                VALUES (:key, 1, :now)
                ON CONFLICT (key_hash) DO UPDATE SET
                    failures = CASE WHEN t.window_start < :window_open THEN 1
                                    ELSE t.failures + 1 END,
                    window_start = CASE WHEN t.window_start < :window_open THEN :now
                                        ELSE t.window_start END
                RETURNING failures
                """),
                {"key": key, "now": now, "window_open": now - ADDRESS_WINDOW},
            )
            locked = failures is not None and failures >= ADDRESS_MAX_FAILURES
            if locked:
                await session.execute(
                    text("UPDATE login_throttle SET locked_until = :until WHERE key_hash = :key"),
                    {"until": now + ADDRESS_WINDOW, "key": key},
                )
        if locked:
            # Addresses are not a tenant's: the lock is evidence on the system chain.
            await self._audit.record_apart(
                None,
                Actor.system(),
                Action.ADDRESS_LOCKED,
                Resource("address", address),
                Decision.DENY,
                {"failures": failures, "seconds": int(ADDRESS_WINDOW.total_seconds())},
            )
