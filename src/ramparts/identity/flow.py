"""The login flow's state between the authorize request and the authorization code.

The browser holds only a random flow id (in a cookie); the state is a row in `login_flows`,
sealed with AES-GCM (key derived from RAMPARTS_SECRET_KEY) and advanced by compare-and-set, so
a replayed request finds the flow where it is now (or gone), never where it was. A flow expires
after ten minutes and carries the CSRF token its forms must echo.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import text

from ramparts.crypto.digest import token_digest
from ramparts.crypto.sealer import Sealer, SealError
from ramparts.db.engine import Database

__all__ = ["FLOW_SECONDS", "FlowCodec", "FlowConflict", "FlowStore", "LoginFlow"]

FLOW_SECONDS = 600
CONTEXT = "login-flow"


@dataclass
class LoginFlow:
    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    state: str | None
    nonce: str | None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    expires: int = field(default_factory=lambda: int(time.time()) + FLOW_SECONDS)
    stage: str = "password"  # password | sso -> mfa | enroll -> recovery -> code issued
    tenant_id: str | None = None
    user_id: str | None = None
    username: str | None = None
    totp_secret: str | None = None  # only while enrolling
    has_passkey: bool = False
    challenge: str | None = None  # the WebAuthn challenge of the ceremony in progress
    amr: list[str] | None = None  # how the second factor was proven, once it was
    recovery_codes: list[str] | None = None  # shown once, right after enrollment
    first_factor: str = "pwd"  # or "fed": the tenant's own IdP vouched for the user
    federation: dict[str, str] | None = None  # state, PKCE verifier, nonce at the IdP
    mfa_failures: int = 0
    # Where the flow is stored; not part of the sealed state.
    handle: str | None = field(default=None, compare=False)
    version: int = field(default=0, compare=False)

    def csrf_ok(self, presented: str) -> bool:
        return secrets.compare_digest(self.csrf.encode(), presented.encode())


class FlowCodec:
    def __init__(self, secret_key: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"ramparts login flow"
        ).derive(secret_key)
        self._sealer = Sealer(key)

    def dump(self, flow: LoginFlow) -> str:
        state = asdict(flow)
        del state["handle"], state["version"]
        return self.seal(state, CONTEXT)

    def seal(self, value: dict[str, Any], context: str) -> str:
        """Sealed, URL-safe state: a flow's row, or a ticket a client hands back later."""
        return base64.urlsafe_b64encode(
            self._sealer.seal(json.dumps(value).encode(), context)
        ).decode()

    def open(self, value: str, context: str) -> dict[str, Any] | None:
        try:
            opened = json.loads(
                self._sealer.open(base64.urlsafe_b64decode(value.encode()), context)
            )
        except (SealError, ValueError, TypeError):
            return None
        return opened if isinstance(opened, dict) else None

    def load(self, value: str | None) -> LoginFlow | None:
        """The flow sealed in `value`, or None when it is missing, forged or expired."""
        opened = self.open(value, CONTEXT) if value else None
        try:
            flow = LoginFlow(**opened) if opened is not None else None
        except TypeError:
            return None
        return flow if flow is not None and flow.expires > time.time() else None


class FlowConflict(Exception):  # noqa: N818 - a condition, not an error to report
    """Another request moved the flow on first (a replay or a double submit)."""


class FlowStore:
    """Login flows in PostgreSQL, addressed by the SHA-256 of the browser's random id."""

    def __init__(self, database: Database, codec: FlowCodec) -> None:
        self._db = database
        self._codec = codec

    async def load(self, handle: str | None) -> LoginFlow | None:
        if not handle or len(handle) > 100:
            return None
        async with self._db.session() as session:
            row = (
                await session.execute(
                    text(
                        "SELECT sealed_state, version FROM login_flows "
                        "WHERE id_hash = :id AND expires_at > now()"
                    ),
                    {"id": token_digest(handle)},
                )
            ).first()
        if row is None:
            return None
        flow = self._codec.load(row[0].decode())
        if flow is None:
            return None
        flow.handle, flow.version = handle, row[1]
        return flow

    async def save(self, flow: LoginFlow) -> str:
        """Store a new flow, or advance an existing one; returns the id for the cookie."""
        sealed = self._codec.dump(flow).encode()
        async with self._db.session() as session:
            if flow.handle is None:
                handle = secrets.token_urlsafe(32)
                await session.execute(text("DELETE FROM login_flows WHERE expires_at < now()"))
                await session.execute(
                    text(
                        "INSERT INTO login_flows (id_hash, sealed_state, expires_at) "
                        "VALUES (:id, :state, to_timestamp(:expires))"
                    ),
                    {"id": token_digest(handle), "state": sealed, "expires": flow.expires},
                )
                return handle
            moved = await session.execute(
                text(
                    "UPDATE login_flows SET sealed_state = :state, version = version + 1 "
                    "WHERE id_hash = :id AND version = :version"
                ),
                {"id": token_digest(flow.handle), "state": sealed, "version": flow.version},
            )
            if not getattr(moved, "rowcount", 0):
                raise FlowConflict
            return flow.handle

    async def end(self, handle: str | None) -> None:
        if handle:
            async with self._db.session() as session:
                await session.execute(
                    text("DELETE FROM login_flows WHERE id_hash = :id"),
                    {"id": token_digest(handle)},
                )
