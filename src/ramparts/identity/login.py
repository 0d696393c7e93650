"""Password and TOTP checks, with progressive lockout per account and per client address.

Unknown tenants, unknown users, wrong passwords and locked accounts all answer the same way and
take the same time (an argon2 verification always runs), so the login form reveals nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.passwords import HASHER, hash_password
from ramparts.identity.sealed import RECOVERY_CODE_INDEX, TOTP_SECRET

__all__ = ["Authenticator", "LoginResult", "new_recovery_code", "recovery_index"]

ACCOUNT_FREE_FAILURES = 5
ACCOUNT_BASE_LOCK = timedelta(seconds=30)
ACCOUNT_MAX_LOCK = timedelta(minutes=15)
ADDRESS_MAX_FAILURES = 20
ADDRESS_WINDOW = timedelta(minutes=15)
TOTP_STEP_SECONDS = 30

# Verified against when the user does not exist, so that path costs the same as a real one.
_DUMMY_HASH = HASHER.hash("not-a-password-not-a-password")


@dataclass(frozen=True)
class LoginResult:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    has_totp: bool


class Authenticator:
    def __init__(
        self, database: Database, fields: SealedFields, address_key: bytes, audit: AuditLog
    ) -> None:
        self._db = database
        self._fields = fields
        self._address_key = address_key
        self._audit = audit

    def _address_hash(self, address: str) -> bytes:
        return hmac.new(self._address_key, address.encode(), hashlib.sha256).digest()

    async def password(
        self, *, tenant_slug: str, username: str, password: str, address: str
    ) -> LoginResult | None:
        """The user when the password is right and nothing is locked; otherwise None."""
        now = datetime.now(UTC)
        async with self._db.session() as session:
            tenant_id, address_until = (
                await session.execute(
                    text(
                        "SELECT ramparts_tenant_id(:slug), (SELECT locked_until FROM "
                        "login_throttle WHERE key_hash = :key)"
                    ),
                    {"slug": tenant_slug, "key": self._address_hash(address)},
                )
            ).one()
        address_locked = address_until is not None and address_until > now
        if tenant_id is None:
            _verify(_DUMMY_HASH, password)
            await self._address_failed(address, now)
            await self._audit.record_apart(
                None,
                Actor("anonymous", username=username),
                Action.LOGIN_FAILED,
                Resource("tenant", tenant_slug[:100]),
                Decision.DENY,
                {"reason": "unknown_tenant"},
            )
            return None
        async with self._db.tenant_session(tenant_id) as session:
            row = (
                await session.execute(
                    text(
                        "SELECT u.id, u.password_hash, u.locked_until, u.is_active, "
                        "EXISTS (SELECT 1 FROM totp_credentials t WHERE t.tenant_id = u.tenant_id "
                        "AND t.user_id = u.id) FROM users u "
                        "WHERE u.tenant_id = :tenant AND u.username = :username FOR UPDATE"
                    ),
                    {"tenant": tenant_id, "username": username.strip().lower()},
                )
            ).first()
            user_id = None
            if row is None:
                _verify(_DUMMY_HASH, password)
                reason = "unknown_user"
            else:
                user_id, password_hash, locked_until, active, has_totp = row
                correct = _verify(password_hash or _DUMMY_HASH, password) and password_hash
                locked = locked_until is not None and locked_until > now
                if correct and active and not locked and not address_locked:
                    # Upgrade hashes made with older parameters while we know the password.
                    if HASHER.check_needs_rehash(password_hash):
                        password_hash = hash_password(password)
                    await session.execute(
                        text(
                            "UPDATE users SET failed_logins = 0, locked_until = NULL, "
                            "password_hash = :hash WHERE tenant_id = :tenant AND id = :id"
                        ),
                        {"tenant": tenant_id, "id": user_id, "hash": password_hash},
                    )
                    return LoginResult(tenant_id, user_id, username.strip().lower(), has_totp)
                reason = "locked" if locked or address_locked else "bad_password"
                # Only a wrong password counts against the account: a locked shared address
                # must not lock out the people behind it who type theirs correctly.
                if not locked and not correct:
                    await self._account_failed(session, tenant_id, user_id, now)
            await self._audit.record(
                session,
                Actor("anonymous", tenant=tenant_id, username=username),
                Action.LOGIN_FAILED,
                Resource("user", str(user_id) if user_id else None),
                Decision.DENY,
                {"reason": reason, "step": "password"},
            )
        await self._address_failed(address, now)
        return None

    async def _account_failed(
        self, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID, now: datetime
    ) -> None:
        failures = await session.scalar(
            text(
                "UPDATE users SET failed_logins = failed_logins + 1 "
                "WHERE tenant_id = :tenant AND id = :id RETURNING failed_logins"
            ),
            {"tenant": tenant_id, "id": user_id},
        )
        if failures is not None and failures >= ACCOUNT_FREE_FAILURES:
            lock = min(
                ACCOUNT_BASE_LOCK * 2 ** (failures - ACCOUNT_FREE_FAILURES), ACCOUNT_MAX_LOCK
            )
            await session.execute(
                text(
                    "UPDATE users SET locked_until = :until WHERE tenant_id = :tenant AND id = :id"
                ),
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

    async def _address_failed(self, address: str, now: datetime) -> None:
        locked = False
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
                {
                    "key": self._address_hash(address),
                    "now": now,
                    "window_open": now - ADDRESS_WINDOW,
                },
            )
            if failures is not None and failures >= ADDRESS_MAX_FAILURES:
                await session.execute(
                    text("UPDATE login_throttle SET locked_until = :until WHERE key_hash = :key"),
                    {"until": now + ADDRESS_WINDOW, "key": self._address_hash(address)},
                )
                locked = True
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

    async def verify_totp(self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, code: str) -> bool:
        """RFC 6238 with one step of drift either way; each accepted step is used up."""
        async with self._db.tenant_session(tenant_id) as session:
            if await self._locked(session, tenant_id, user_id):
                await self._user_event(
                    session, tenant_id, user_id, Action.TOTP_FAILED, ok=False, reason="locked"
                )
                return False
            row = (
                await session.execute(
                    text(
                        "SELECT sealed_secret, last_step FROM totp_credentials "
                        "WHERE tenant_id = :tenant AND user_id = :user FOR UPDATE"
                    ),
                    {"tenant": tenant_id, "user": user_id},
                )
            ).first()
            if row is None:
                return False
            secret = (
                await self._fields.open(session, tenant_id, TOTP_SECRET, user_id, row[0])
            ).decode()
            step = _matching_step(secret, code)
            if step is None:
                # Wrong codes count like wrong passwords: a known password does not buy an
                # endless supply of guesses at the second factor.
                await self._user_event(
                    session, tenant_id, user_id, Action.TOTP_FAILED, ok=False, reason="wrong_code"
                )
                await self._account_failed(session, tenant_id, user_id, datetime.now(UTC))
                return False
            if step <= row[1]:
                await self._user_event(session, tenant_id, user_id, Action.TOTP_REPLAYED, ok=False)
                return False
            await session.execute(
                text(
                    "UPDATE totp_credentials SET last_step = :step "
                    "WHERE tenant_id = :tenant AND user_id = :user"
                ),
                {"step": step, "tenant": tenant_id, "user": user_id},
            )
            return True

    async def _user_event(
        self,
        session: AsyncSession,
        tenant_id: uuid.UUID,
        user_id: uuid.UUID,
        action: Action,
        *,
        ok: bool,
        **details: str,
    ) -> None:
        """Record a second-factor event of a user who has given a password but no more."""
        await self._audit.record(
            session,
            Actor("user", tenant=tenant_id, id=str(user_id)),
            action,
            Resource("user", str(user_id)),
            Decision.ALLOW if ok else Decision.DENY,
            details,
        )

    async def _locked(
        self, session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> bool:
        until = await session.scalar(
            text("SELECT locked_until FROM users WHERE tenant_id = :tenant AND id = :user"),
            {"tenant": tenant_id, "user": user_id},
        )
        return until is not None and until > datetime.now(UTC)

    async def has_second_factor(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        async with self._db.tenant_session(tenant_id) as session:
            found = await session.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM totp_credentials WHERE tenant_id = :tenant "
                    "AND user_id = :user) OR EXISTS (SELECT 1 FROM webauthn_credentials "
                    "WHERE tenant_id = :tenant AND user_id = :user)"
                ),
                {"tenant": tenant_id, "user": user_id},
            )
        return bool(found)

    async def tenant_id(self, slug: str) -> uuid.UUID | None:
        async with self._db.session() as session:
            found = await session.scalar(text("SELECT ramparts_tenant_id(:slug)"), {"slug": slug})
        return found if isinstance(found, uuid.UUID) else None

    async def has_totp(self, tenant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        async with self._db.tenant_session(tenant_id) as session:
            found = await session.scalar(
                text(
                    "SELECT EXISTS (SELECT 1 FROM totp_credentials WHERE tenant_id = :tenant "
                    "AND user_id = :user)"
                ),
                {"tenant": tenant_id, "user": user_id},
            )
        return bool(found)

    async def replace_recovery_codes(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID
    ) -> list[str]:
        """A new set of single-use codes (shown once); any earlier set stops working."""
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        async with self._db.tenant_session(tenant_id) as session:
            await session.execute(
                text("DELETE FROM recovery_codes WHERE tenant_id = :tenant AND user_id = :user"),
                {"tenant": tenant_id, "user": user_id},
            )
            for code in codes:
                index = await recovery_index(self._fields, session, tenant_id, code)
                await session.execute(
                    text(
                        "INSERT INTO recovery_codes (tenant_id, user_id, code_hash) "
                        "VALUES (:tenant, :user, :hash)"
                    ),
                    {"tenant": tenant_id, "user": user_id, "hash": index},
                )
        return codes

    async def use_recovery_code(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, code: str
    ) -> bool:
        async with self._db.tenant_session(tenant_id) as session:
            if await self._locked(session, tenant_id, user_id):
                await self._user_event(
                    session, tenant_id, user_id, Action.RECOVERY_CODE_USED, ok=False
                )
                return False
            index = await recovery_index(self._fields, session, tenant_id, code)
            used = await session.execute(
                text(
                    "UPDATE recovery_codes SET used_at = now() WHERE tenant_id = :tenant "
                    "AND user_id = :user AND code_hash = :hash AND used_at IS NULL"
                ),
                {"tenant": tenant_id, "user": user_id, "hash": index},
            )
            ok = bool(getattr(used, "rowcount", 0))
            if not ok:
                await self._account_failed(session, tenant_id, user_id, datetime.now(UTC))
            await self._user_event(session, tenant_id, user_id, Action.RECOVERY_CODE_USED, ok=ok)
        return ok

    async def enroll_totp(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, secret: str, code: str
    ) -> bool:
        """Store `secret` as the user's second factor once `code` proves they hold it."""
        step = _matching_step(secret, code)
        if step is None:
            return False
        async with self._db.tenant_session(tenant_id) as session:
            sealed = await self._fields.seal(
                session, tenant_id, TOTP_SECRET, user_id, secret.encode()
            )
            inserted = await session.execute(
                text(
                    "INSERT INTO totp_credentials (tenant_id, user_id, sealed_secret, last_step)"
                    " VALUES (:tenant, :user, :sealed, :step) ON CONFLICT DO NOTHING"
                ).bindparams(TOTP_SECRET.param("sealed")),
                {"tenant": tenant_id, "user": user_id, "sealed": sealed, "step": step},
            )
            enrolled = bool(getattr(inserted, "rowcount", 0))
            await self._user_event(session, tenant_id, user_id, Action.TOTP_ENROLLED, ok=enrolled)
        return enrolled


RECOVERY_CODES = 10


async def recovery_index(
    fields: SealedFields, session: AsyncSession, tenant: uuid.UUID, code: str
) -> bytes:
    """The stored form of a recovery code: the tenant's blind index of it, never a plain hash."""
    return await fields.blind_index(
        session, tenant, RECOVERY_CODE_INDEX, code.replace("-", "").strip().lower()
    )


def new_recovery_code() -> str:
    """Four groups of four base32 characters: 80 random bits, easy to read out and type."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _matching_step(secret: str, code: str) -> int | None:
    """The time step (within ±1 of now) whose code equals `code`, compared in constant time."""
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_STEP_SECONDS)
    now_step = int(datetime.now(UTC).timestamp()) // TOTP_STEP_SECONDS
    match = None
    for step in (now_step - 1, now_step, now_step + 1):
        if hmac.compare_digest(totp.at(step * TOTP_STEP_SECONDS), code):
            match = step
    return match
