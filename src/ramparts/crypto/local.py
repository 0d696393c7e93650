"""The local sealing key: AES-256-GCM under RAMPARTS_HOME, for development and stage.

Until the KMS issue lands this is what seals private signing keys and TOTP secrets at rest. The
production guard refuses it (RAMPARTS_KMS_BACKEND=local) in prod.
"""

from __future__ import annotations

import os
import secrets
from contextlib import suppress
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["LocalSealer", "SealError"]

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong context, or tampered."""


class LocalSealer:
    """Seal and open small secrets; `context` (AAD) binds each one to where it belongs."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_home(cls, home: Path) -> LocalSealer:
        """Load the key from `home/keys/seal.key`, creating it (mode 0600) on first use."""
        directory = home / "keys"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / "seal.key"
        with suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        return cls(path.read_bytes())

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
        except InvalidTag:
            kind = context.split(":", maxsplit=1)[0]
            raise SealError(f"cannot open sealed value for {kind}") from None
