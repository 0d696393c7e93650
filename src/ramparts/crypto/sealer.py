"""AES-256-GCM with a context bound as AAD, under a key the caller derives: for short-lived
server state (sealed login flows and tickets). Secrets at rest go through the KMS instead."""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SealError", "Sealer"]

NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value could not be opened: wrong key, wrong context, or tampered."""


class Sealer:
    """Seal and open small secrets; `context` (AAD) binds each one to where it belongs."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
        except InvalidTag:
            kind = context.split(":", maxsplit=1)[0]
            raise SealError(f"cannot open sealed value for {kind}") from None
