"""The KMS port: wraps and unwraps data keys under a key that never leaves the KMS.

`Kms` is the protocol every backend satisfies. `LocalKms` keeps its key-encryption keys in
`RAMPARTS_HOME/keys/kms/` (files of mode 0600, outside the repository): for development and
stage only, and the production guard refuses it (RAMPARTS_KMS_BACKEND=local).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["Kms", "KmsError", "LocalKms"]

NONCE_BYTES = 12


class KmsError(Exception):
    """A key could not be wrapped or unwrapped: unknown key, wrong context, or tampering."""


class Kms(Protocol):
    def wrap(self, plaintext: bytes, *, context: str) -> tuple[str, bytes]:
        """Encrypt under the current key; returns (key id, wrapped bytes)."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes, *, context: str) -> bytes: ...

    def rotate(self) -> str:
        """Make a new current key; earlier ones still unwrap. Returns the new key id."""
        ...


class LocalKms:
    """Key-encryption keys in files under `directory`, one per version (k0001, k0002, …)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._ids():
            self.rotate()

    @classmethod
    def from_home(cls, home: Path) -> LocalKms:
        return cls(home / "keys" / "kms")

    def _ids(self) -> list[str]:
        return sorted(p.stem for p in self._directory.glob("k*.key"))

    def _key(self, key_id: str) -> AESGCM:
        path = self._directory / f"{key_id}.key"
        if not key_id.startswith("k") or not key_id[1:].isdigit() or not path.is_file():
            raise KmsError(f"unknown KMS key {key_id!r}")
        return AESGCM(path.read_bytes())

    def rotate(self) -> str:
        ids = self._ids()
        key_id = f"k{int(ids[-1][1:]) + 1 if ids else 1:04d}"
        fd = os.open(self._directory / f"{key_id}.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        return key_id

    def wrap(self, plaintext: bytes, *, context: str) -> tuple[str, bytes]:
        key_id = self._ids()[-1]
        nonce = secrets.token_bytes(NONCE_BYTES)
        return key_id, nonce + self._key(key_id).encrypt(nonce, plaintext, context.encode())

    def unwrap(self, key_id: str, wrapped: bytes, *, context: str) -> bytes:
        try:
            return self._key(key_id).decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context.encode()
            )
        except InvalidTag:
            raise KmsError(f"key wrapped under {key_id} does not unwrap here") from None
