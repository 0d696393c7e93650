"""The login flow's state, kept in a sealed cookie between the authorize request and the code.

AES-GCM (key derived from RAMPARTS_SECRET_KEY) makes it confidential and tamper-proof; it
expires after ten minutes and carries the CSRF token the forms must echo.
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

from ramparts.crypto.local import LocalSealer, SealError

__all__ = ["FLOW_SECONDS", "FlowCodec", "LoginFlow"]

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

    def csrf_ok(self, presented: str) -> bool:
        return secrets.compare_digest(self.csrf.encode(), presented.encode())


class FlowCodec:
    def __init__(self, secret_key: bytes) -> None:
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"ramparts login flow"
        ).derive(secret_key)
        self._sealer = LocalSealer(key)

    def dump(self, flow: LoginFlow) -> str:
        return self.seal(asdict(flow), CONTEXT)

    def seal(self, value: dict[str, Any], context: str) -> str:
        """Sealed, URL-safe state for a client to hand back (a flow cookie, a ceremony)."""
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
        """The flow, or None when the cookie is missing, forged, or expired."""
        opened = self.open(value, CONTEXT) if value else None
        try:
            flow = LoginFlow(**opened) if opened is not None else None
        except TypeError:
            return None
        return flow if flow is not None and flow.expires > time.time() else None
