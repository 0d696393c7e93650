"""WebAuthn (passkeys) through py_webauthn: registration and authentication ceremonies.

User verification is required in both ceremonies, attestation is not requested, and the
signature counter must grow: a counter that does not is a cloned authenticator and fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.crypto.digest import token_digest
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.lockout import Lockout, SecondFactorAttempt
from ramparts.identity.sealed import PASSKEY_PUBLIC_KEY

__all__ = ["PasskeyError", "Passkeys"]


class PasskeyError(Exception):
    """The ceremony failed. The message is safe to log; `detail` is what the user is told,
    in our words (a library's own message names the runtime)."""

    def __init__(self, reason: str, *, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail or reason


@dataclass(frozen=True)
class Ceremony:
    options_json: str  # for navigator.credentials.create/get
    challenge: str  # base64url, kept server-side (in the sealed login flow)


class Passkeys:
    def __init__(
        self,
        database: Database,
        fields: SealedFields,
        audit: AuditLog,
        lockout: Lockout,
        *,
        public_url: str,
        rp_name: str = "Ramparts",
    ) -> None:
        self._db = database
        self._fields = fields
        self._audit = audit
        self._lockout = lockout
        self.origin = public_url
        self.rp_id = urlsplit(public_url).hostname or "localhost"
        self._rp_name = rp_name

    async def _credential_ids(self, tenant: uuid.UUID, user: uuid.UUID) -> list[bytes]:
        async with self._db.tenant_session(tenant) as session:
            rows = await session.scalars(
                text(
                    "SELECT credential_id FROM webauthn_credentials "
                    "WHERE tenant_id = :tenant AND user_id = :user ORDER BY created_at"
                ),
                {"tenant": tenant, "user": user},
            )
            return [bytes(row) for row in rows]

    async def has_passkey(self, tenant: uuid.UUID, user: uuid.UUID) -> bool:
        return bool(await self._credential_ids(tenant, user))

    async def registration(self, tenant: uuid.UUID, user: uuid.UUID, username: str) -> Ceremony:
        existing = await self._credential_ids(tenant, user)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self._rp_name,
            user_name=username,
            user_id=user.bytes,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in existing],
        )
        return Ceremony(options_to_json(options), bytes_to_base64url(options.challenge))

    async def register(
        self,
        tenant: uuid.UUID,
        user: uuid.UUID,
        challenge: str,
        credential: dict[str, Any],
        name: str = "passkey",
    ) -> None:
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            raise PasskeyError(
                f"registration refused: {exc}", detail="the new passkey's response does not verify"
            ) from None
        async with self._db.tenant_session(tenant) as session:
            public_key = await self._fields.seal(
                session,
                tenant,
                PASSKEY_PUBLIC_KEY,
                verified.credential_id.hex(),
                verified.credential_public_key,
            )
            await session.execute(
                text(
                    "INSERT INTO webauthn_credentials (tenant_id, credential_id, user_id, "
                    "public_key, sign_count, name) VALUES (:tenant, :id, :user, :key, :count, "
                    ":name)"
                ).bindparams(PASSKEY_PUBLIC_KEY.param("key")),
                {
                    "tenant": tenant,
                    "id": verified.credential_id,
                    "user": user,
                    "key": public_key,
                    "count": verified.sign_count,
                    "name": name[:100],
                },
            )
            await self._audit.record(
                session,
                Actor("user", tenant=tenant, id=str(user)),
                Action.PASSKEY_REGISTERED,
                Resource("passkey", bytes_to_base64url(verified.credential_id)),
                Decision.ALLOW,
                {"name": name[:100]},
            )

    async def remember_challenge(self, tenant: uuid.UUID, user: uuid.UUID, challenge: str) -> None:
        async with self._db.tenant_session(tenant) as session:
            await session.execute(
                text(
                    "DELETE FROM webauthn_challenges WHERE tenant_id = :tenant "
                    "AND expires_at < now()"
                ),
                {"tenant": tenant},
            )
            await session.execute(
                text(
                    "INSERT INTO webauthn_challenges (tenant_id, challenge_hash, user_id, "
                    "expires_at) VALUES (:tenant, :hash, :user, now() + interval '5 minutes')"
                ),
                {"tenant": tenant, "hash": token_digest(challenge), "user": user},
            )

    async def take_challenge(self, tenant: uuid.UUID, user: uuid.UUID, challenge: str) -> bool:
        """True once per remembered challenge of this user, while it is fresh."""
        async with self._db.tenant_session(tenant) as session:
            taken = await session.execute(
                text(
                    "DELETE FROM webauthn_challenges WHERE tenant_id = :tenant AND "
                    "challenge_hash = :hash AND user_id = :user AND expires_at > now()"
                ),
                {"tenant": tenant, "hash": token_digest(challenge), "user": user},
            )
        return bool(getattr(taken, "rowcount", 0))

    async def authentication(self, tenant: uuid.UUID, user: uuid.UUID) -> Ceremony:
        allowed = await self._credential_ids(tenant, user)
        if not allowed:
            raise PasskeyError("the user has no passkey")
        options = generate_authentication_options(
            rp_id=self.rp_id,
            user_verification=UserVerificationRequirement.REQUIRED,
            allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allowed],
        )
        return Ceremony(options_to_json(options), bytes_to_base64url(options.challenge))

    async def authenticate(
        self,
        tenant: uuid.UUID,
        user: uuid.UUID,
        challenge: str,
        credential: dict[str, Any],
        address: str,
    ) -> None:
        """Verify an assertion from one of the user's own credentials; raise PasskeyError on
        any doubt, counted like a wrong code, or SecondFactorLockedError, checking nothing,
        while a lock holds."""
        async with self._db.tenant_session(tenant) as session:
            attempt = await self._lockout.begin_second_factor(session, tenant, user, address)
            refusal = (
                PasskeyError("locked")
                if attempt.locked
                else await self._check(session, attempt, challenge, credential)
            )
            if refusal is None:
                await self._lockout.second_factor_succeeded(session, attempt)
            else:
                await self._audit.record(
                    session,
                    Actor("user", tenant=tenant, id=str(user)),
                    Action.PASSKEY_REFUSED,
                    Resource("user", str(user)),
                    Decision.DENY,
                    {"reason": str(refusal)},
                )
                await self._lockout.second_factor_failed(session, attempt, "passkey")
        await self._lockout.end_second_factor(attempt, ok=refusal is None)
        if refusal is not None:
            raise refusal

    async def _check(
        self,
        session: AsyncSession,
        attempt: SecondFactorAttempt,
        challenge: str,
        credential: dict[str, Any],
    ) -> PasskeyError | None:
        """Why the assertion is refused, or None when it is good (its counter then moves)."""
        tenant = attempt.tenant_id
        raw_id = credential.get("rawId") or credential.get("id")
        if not isinstance(raw_id, str):
            return PasskeyError("assertion without a credential id")
        try:
            credential_id = base64url_to_bytes(raw_id)
        except ValueError:
            return PasskeyError("malformed credential id")
        row = (
            await session.execute(
                text(
                    "SELECT public_key, sign_count FROM webauthn_credentials "
                    "WHERE tenant_id = :tenant AND user_id = :user AND credential_id = :id "
                    "FOR UPDATE"
                ),
                {"tenant": tenant, "user": attempt.user_id, "id": credential_id},
            )
        ).first()
        if row is None:
            return PasskeyError("not one of this user's credentials")
        public_key = await self._fields.open(
            session, tenant, PASSKEY_PUBLIC_KEY, credential_id.hex(), row[0]
        )
        try:
            verified = verify_authentication_response(
                credential=credential,
                expected_challenge=base64url_to_bytes(challenge),
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=public_key,
                credential_current_sign_count=row[1],
                require_user_verification=True,
            )
        except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
            return PasskeyError(
                f"assertion refused: {exc}", detail="the passkey's signature does not verify"
            )
        await session.execute(
            text(
                "UPDATE webauthn_credentials SET sign_count = :count, last_used_at = now()"
                " WHERE tenant_id = :tenant AND credential_id = :id"
            ),
            {"count": verified.new_sign_count, "tenant": tenant, "id": credential_id},
        )
        return None
