"""Password, TOTP and recovery-code checks, each through the lockout (lockout.py).

Unknown tenants, unknown users, wrong passwords and locked accounts all answer the same way and
take the same time (an argon2 verification always runs), so the login form reveals nothing.
"""

from __future__ import annotations

import base64
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
import structlog
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.fields import FieldDecryptionError
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.lockout import Lockout, SecondFactorAttempt
from ramparts.identity.passwords import HASHER, hash_password
from ramparts.identity.sealed import RECOVERY_CODE_INDEX, TOTP_SECRET

log = structlog.get_logger(__name__)

__all__ = ["Authenticator", "LoginResult", "new_recovery_code", "recovery_index"]

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
        self, database: Database, fields: SealedFields, audit: AuditLog, lockout: Lockout
    ) -> None:
        self._db = database
        self._fields = fields
        self._audit = audit
        self._lockout = lockout

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
                    {"slug": tenant_slug, "key": self._lockout.address_hash(address)},
                )
            ).one()
        address_locked = address_until is not None and address_until > now
        if tenant_id is None:
            _verify(_DUMMY_HASH, password)
            await self._lockout.address_failed(address)
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
                    await self._lockout.password_failed(session, tenant_id, user_id, now)
            await self._audit.record(
                session,
                Actor("anonymous", tenant=tenant_id, username=username),
                Action.LOGIN_FAILED,
                Resource("user", str(user_id) if user_id else None),
                Decision.DENY,
                {"reason": reason, "step": "password"},
            )
        await self._lockout.address_failed(address)
        return None

    async def verify_totp(
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, code: str, address: str
    ) -> bool:
        """RFC 6238 with one step of drift either way; each accepted step is used up.
        Raises SecondFactorLockedError, checking nothing, while a lock holds."""
        async with self._db.tenant_session(tenant_id) as session:
            attempt = await self._lockout.begin_second_factor(session, tenant_id, user_id, address)
            refusal = "locked" if attempt.locked else await self._check_totp(session, attempt, code)
            if refusal is None:
                await self._lockout.second_factor_succeeded(session, attempt)
            else:
                action = Action.TOTP_REPLAYED if refusal == "replayed" else Action.TOTP_FAILED
                await self._user_event(
                    session, tenant_id, user_id, action, ok=False, reason=refusal
                )
                await self._lockout.second_factor_failed(session, attempt, "totp")
        await self._lockout.end_second_factor(attempt, ok=refusal is None)
        return refusal is None

    async def _check_totp(
        self, session: AsyncSession, attempt: SecondFactorAttempt, code: str
    ) -> str | None:
        """Why `code` is refused, or None when it is accepted (and its step used up)."""
        tenant_id, user_id = attempt.tenant_id, attempt.user_id
        row = (
            await session.execute(
                text(
                    "SELECT sealed_secret, last_step FROM totp_credentials "
                    "WHERE tenant_id = :tenant AND user_id = :user"
                ),
                {"tenant": tenant_id, "user": user_id},
            )
        ).first()
        if row is None:
            return "no_totp"
        try:
            secret = (
                await self._fields.open(session, tenant_id, TOTP_SECRET, user_id, row[0])
            ).decode()
        except FieldDecryptionError:
            # Moved from another row or tenant, tampered with, or its key shredded: no code
            # can match it. A refused second factor (audited, counted), never a server error.
            log.warning("totp_secret_unreadable", tenant=str(tenant_id), user=str(user_id))
            return "unreadable_secret"
        step = _matching_step(secret, code)
        if step is None:
            return "wrong_code"
        if step <= row[1]:
            return "replayed"
        await session.execute(
            text(
                "UPDATE totp_credentials SET last_step = :step "
                "WHERE tenant_id = :tenant AND user_id = :user"
            ),
            {"step": step, "tenant": tenant_id, "user": user_id},
        )
        return None

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
        self, *, tenant_id: uuid.UUID, user_id: uuid.UUID, code: str, address: str
    ) -> bool:
        """Use up one of the user's recovery codes. Raises SecondFactorLockedError, checking
        nothing, while a lock holds."""
        async with self._db.tenant_session(tenant_id) as session:
            attempt = await self._lockout.begin_second_factor(session, tenant_id, user_id, address)
            ok = False
            if not attempt.locked:
                index = await recovery_index(self._fields, session, tenant_id, code)
                used = await session.execute(
                    text(
                        "UPDATE recovery_codes SET used_at = now() WHERE tenant_id = :tenant "
                        "AND user_id = :user AND code_hash = :hash AND used_at IS NULL"
                    ),
                    {"tenant": tenant_id, "user": user_id, "hash": index},
                )
                ok = bool(getattr(used, "rowcount", 0))
            if ok:
                await self._lockout.second_factor_succeeded(session, attempt)
                await self._user_event(
                    session, tenant_id, user_id, Action.RECOVERY_CODE_USED, ok=True
                )
            else:
                reason = "locked" if attempt.locked else "wrong_code"
                await self._user_event(
                    session, tenant_id, user_id, Action.RECOVERY_CODE_USED, ok=False, reason=reason
                )
                await self._lockout.second_factor_failed(session, attempt, "recovery_code")
        await self._lockout.end_second_factor(attempt, ok=ok)
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
