"""Field-level encryption and blind indexes, under a tenant's data key.

A sealed field is `version (4 bytes) || nonce (12) || AES-256-GCM ciphertext+tag`. The AAD
binds it to tenant, table, column and row, so a ciphertext copied to another row, column or
tenant does not decrypt. The version names the data key that sealed it, so a rotation adds a
key and old fields still open. A blind index is a per-tenant keyed HMAC, for equality search
without storing a plain hash of low-entropy values (tax ids, IBANs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
import uuid
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["DataKey", "FieldCipher", "FieldDecryptionError"]

NONCE_BYTES = 12
HEADER = struct.Struct(">I")
BODY_START = HEADER.size + NONCE_BYTES
MIN_SEALED = BODY_START + 16  # an empty value still carries its 16-byte tag


class FieldDecryptionError(Exception):
    """The field does not open here: another row, column or tenant, a lost key, or tampering."""


@dataclass(frozen=True)
class DataKey:
    """One version of a tenant's data key, in the clear: keep it in memory only, briefly.

    The cipher and the tenant's part of every AAD are made once here: the hot path of sealing
    a field is then one AES-GCM call and a few byte joins."""

    tenant: uuid.UUID
    version: int
    secret: bytes
    aead: AESGCM = field(init=False, repr=False, compare=False)
    header: bytes = field(init=False, repr=False, compare=False)
    aad_prefix: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != 32:  # AES-256
            raise ValueError("a data key is 32 bytes")
        object.__setattr__(self, "aead", AESGCM(self.secret))
        object.__setattr__(self, "header", HEADER.pack(self.version))
        object.__setattr__(self, "aad_prefix", f"ramparts-field:{self.tenant}:".encode())

    def __repr__(self) -> str:  # never print the key
        return f"DataKey(tenant={self.tenant}, version={self.version}, secret=**********)"


def _aad(key: DataKey, table: str, column: str, row: str) -> bytes:
    if ":" in table or ":" in column:  # the row comes last, so only these could be ambiguous
        raise ValueError("table and column names cannot hold ':'")
    return key.aad_prefix + f"{table}:{column}:{row}".encode()


class FieldCipher:
    """Seals and opens fields with the data keys it is given (see `crypto.keys.DataKeys`)."""

    @staticmethod
    def seal(key: DataKey, *, table: str, column: str, row: str | uuid.UUID, value: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = _aad(key, table, column, str(row))
        return key.header + nonce + key.aead.encrypt(nonce, value, aad)

    @staticmethod
    def version_of(sealed: bytes) -> int:
        """Which data key version sealed this field (to fetch that key before opening)."""
        if len(sealed) < MIN_SEALED:
            raise FieldDecryptionError("not a sealed field")
        (version,) = HEADER.unpack_from(sealed)
        return int(version)

    @staticmethod
    def open(
        key: DataKey, *, table: str, column: str, row: str | uuid.UUID, sealed: bytes
    ) -> bytes:
        if len(sealed) < MIN_SEALED or not sealed.startswith(key.header):
            raise FieldDecryptionError("not sealed under this key version")
        nonce = sealed[HEADER.size : BODY_START]
        aad = _aad(key, table, column, str(row))
        try:
            return key.aead.decrypt(nonce, sealed[BODY_START:], aad)
        except InvalidTag:
            raise FieldDecryptionError(f"{table}.{column} does not open for this row") from None

    @staticmethod
    def blind_index(index_key: bytes, *, column: str, value: str) -> bytes:
        """Equal values give equal indexes within a tenant and column; nothing else leaks."""
        normal = "".join(value.split()).upper()
        return hmac.new(index_key, f"{column}:{normal}".encode(), hashlib.sha256).digest()
