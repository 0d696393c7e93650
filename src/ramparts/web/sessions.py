"""The web app's server-side sessions: the browser holds a cookie, the server holds the tokens.

The first-party web app is a backend for frontend (OAuth 2.0 for Browser-Based Apps, section
6.1): the server runs the authorization code flow with PKCE for the browser and keeps the
user's access and refresh tokens; the browser gets one HttpOnly cookie and never a token, so a
script injected into a page has nothing to steal.

The cookie is `<tenant id hex>.<256 random bits>`. Its row (`browser_sessions`, under
row-level security) is found by the SHA-256 of the random part and holds the tokens sealed with
AES-GCM under a key derived from it (HKDF), bound to the row: a copy of the database opens no
session. The CSRF token of the session's forms is derived from the same bits.

The access token is renewed with the refresh token when it has less than `RENEW_SECONDS` left,
under the row's lock, so two requests at once never both spend the same refresh token (which
would revoke the whole family as a replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import Database
from ramparts.identity.oauth import OAuthError, OAuthService, TokenResponse

__all__ = ["RENEW_SECONDS", "BrowserSession", "BrowserSessions"]

log = structlog.get_logger(__name__)

#: An access token with less than this left is renewed before a request uses it.
RENEW_SECONDS = 60
_SECRET_BYTES = 32


@dataclass(frozen=True)
class BrowserSession:
    """A signed-in browser: whose it is, the access token to call the API with, and the CSRF
    token its forms must echo."""

    tenant_id: uuid.UUID
    user_id: uuid.UUID
    username: str
    access_token: str
    csrf: str

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


@dataclass(frozen=True)
class _Handle:
    tenant_id: uuid.UUID
    secret: bytes

    @classmethod
    def parse(cls, cookie: str | None) -> _Handle | None:
        if not cookie or len(cookie) > 100:
            return None
        tenant, _, encoded = cookie.partition(".")
        try:
            secret = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            return cls(uuid.UUID(hex=tenant), secret) if len(secret) == _SECRET_BYTES else None
        except ValueError:
            return None

    @property
    def cookie(self) -> str:
        return f"{self.tenant_id.hex}.{base64.urlsafe_b64encode(self.secret).rstrip(b'=').decode()}"

    @property
    def id_hash(self) -> bytes:
        return hashlib.sha256(b"ramparts browser session\x00" + self.secret).digest()

    def _derive(self, purpose: bytes) -> bytes:
        return HKDF(hashes.SHA256(), 32, salt=None, info=purpose).derive(self.secret)

    @property
    def csrf(self) -> str:
        return base64.urlsafe_b64encode(self._derive(b"ramparts csrf")).rstrip(b"=").decode()

    def seal(self, tokens: TokenResponse, username: str) -> bytes:
        """The tokens, and the name the layout shows (sealed too: it is an e-mail)."""
        nonce = secrets.token_bytes(12)
        plain = json.dumps(
            {
                "access_token": tokens.access_token,
                "refresh_token": tokens.refresh_token,
                "username": username,
            }
        ).encode()
        return nonce + AESGCM(self._derive(b"ramparts tokens")).encrypt(nonce, plain, self.id_hash)

    def open(self, sealed: bytes) -> dict[str, str]:
        plain = AESGCM(self._derive(b"ramparts tokens")).decrypt(
            sealed[:12], sealed[12:], self.id_hash
        )
        opened: dict[str, str] = json.loads(plain)
        return opened


async def _live_row(session: AsyncSession, handle: _Handle, *, lock: bool = False) -> Any:
    """The session's row while it lives (locked until the transaction ends when `lock`)."""
    query = _LOCKED_ROW if lock else _ROW
    return (
        await session.execute(query, {"tenant": handle.tenant_id, "id": handle.id_hash})
    ).first()


_ROW = text(
    "SELECT user_id, sealed, access_expires_at FROM browser_sessions "
    "WHERE tenant_id = :tenant AND id_hash = :id AND expires_at > now()"
)
_LOCKED_ROW = text(f"{_ROW.text} FOR UPDATE")


class BrowserSessions:
    """Start, load (renewing the access token) and end the web app's sessions."""

    def __init__(self, database: Database, oauth: OAuthService, *, client_id: str) -> None:
        self._database = database
        self._oauth = oauth
        self._client_id = client_id

    @property
    def lifetime(self) -> timedelta:
        """A session lasts as long as its refresh-token family may."""
        return self._oauth.family_lifetime

    async def start(
        self, tenant_id: uuid.UUID, user_id: uuid.UUID, username: str, tokens: TokenResponse
    ) -> str:
        """A new session holding `tokens`; its cookie value."""
        handle = _Handle(tenant_id, secrets.token_bytes(_SECRET_BYTES))
        now = datetime.now(UTC)
        async with self._database.tenant_session(tenant_id) as session:
            await session.execute(
                text(
                    "INSERT INTO browser_sessions (tenant_id, id_hash, user_id, sealed, "
                    "access_expires_at, expires_at) VALUES (:tenant, :id, :user, :sealed, "
                    ":access_expires, :expires)"
                ),
                {
                    "tenant": tenant_id,
                    "id": handle.id_hash,
                    "user": user_id,
                    "sealed": handle.seal(tokens, username),
                    "access_expires": now + timedelta(seconds=tokens.expires_in),
                    "expires": now + self.lifetime,
                },
            )
        return handle.cookie

    async def load(self, cookie: str | None) -> BrowserSession | None:
        """The live session `cookie` names, its access token renewed if it was about to
        expire; None when there is none (never was, ended, expired, or its family revoked)."""
        handle = _Handle.parse(cookie)
        if handle is None:
            return None
        async with self._database.tenant_session(handle.tenant_id) as session:
            row = await _live_row(session, handle)
        if row is None:
            return None
        if row.access_expires_at - datetime.now(UTC) < timedelta(seconds=RENEW_SECONDS):
            return await self._renew(handle)
        return self._session(handle, row.user_id, row.sealed)

    async def _renew(self, handle: _Handle) -> BrowserSession | None:
        async with self._database.tenant_session(handle.tenant_id) as session:
            row = await _live_row(session, handle, lock=True)
            if row is None:
                return None
            if row.access_expires_at - datetime.now(UTC) >= timedelta(seconds=RENEW_SECONDS):
                return self._session(handle, row.user_id, row.sealed)  # renewed meanwhile
            held = handle.open(row.sealed)
            try:
                tokens = await self._oauth.refresh(
                    refresh_token=held["refresh_token"],
                    client_id=self._client_id,
                )
            except OAuthError as refused:
                log.info("browser_session_ended", reason=refused.error)
                await session.execute(
                    text("DELETE FROM browser_sessions WHERE tenant_id = :t AND id_hash = :id"),
                    {"t": handle.tenant_id, "id": handle.id_hash},
                )
                return None
            sealed = handle.seal(tokens, held["username"])
            await session.execute(
                text(
                    "UPDATE browser_sessions SET sealed = :sealed, access_expires_at = :expires "
                    "WHERE tenant_id = :t AND id_hash = :id"
                ),
                {
                    "sealed": sealed,
                    "expires": datetime.now(UTC) + timedelta(seconds=tokens.expires_in),
                    "t": handle.tenant_id,
                    "id": handle.id_hash,
                },
            )
        return self._session(handle, row.user_id, sealed)

    async def end(self, cookie: str | None) -> None:
        """End the session: its refresh-token family is revoked (and with it every access
        token it issued), and its row is deleted."""
        handle = _Handle.parse(cookie)
        if handle is None:
            return
        async with self._database.tenant_session(handle.tenant_id) as session:
            sealed = await session.scalar(
                text(
                    "DELETE FROM browser_sessions WHERE tenant_id = :t AND id_hash = :id "
                    "RETURNING sealed"
                ),
                {"t": handle.tenant_id, "id": handle.id_hash},
            )
        if sealed is not None:
            await self._oauth.revoke(
                token=handle.open(sealed)["refresh_token"], client_id=self._client_id
            )

    @staticmethod
    def _session(handle: _Handle, user_id: uuid.UUID, sealed: bytes) -> BrowserSession:
        held = handle.open(sealed)
        return BrowserSession(
            tenant_id=handle.tenant_id,
            user_id=user_id,
            username=held["username"],
            access_token=held["access_token"],
            csrf=handle.csrf,
        )
