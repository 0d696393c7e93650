"""Ed25519 signatures: made inside the KMS, checked anywhere with the public key alone.

A KMS signing key is named and versioned like its encryption keys (`release:v2`); its private
half never leaves the KMS. Its public half travels as PEM (SubjectPublicKeyInfo, what
`openssl pkey -pubout` writes), and is named by its fingerprint: the SHA-256, in hex, of the
32 raw public key bytes (RFC 8032), which is also the last 32 bytes of the DER form.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ALGORITHM",
    "PublicKey",
    "Signature",
    "SigningKeyError",
    "load_public_key_pem",
    "public_key_fingerprint",
    "signature_verifies",
]

ALGORITHM = "Ed25519"
RAW_PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# One PEM public key and nothing else: a file of several keys (or text around one) would be
# checked against its first key alone, whichever that is.
ONE_PEM_PUBLIC_KEY = re.compile(
    rb"\s*-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PUBLIC KEY-----\s*"
)


class SigningKeyError(ValueError):
    """A public key that is not an Ed25519 public key in PEM."""


@dataclass(frozen=True)
class Signature:
    """A signature, and the version of the key that made it (`key:vN`)."""

    ref: str
    value: bytes


@dataclass(frozen=True)
class PublicKey:
    """The public half of one version of a KMS signing key."""

    ref: str
    raw: bytes

    @property
    def fingerprint(self) -> str:
        return public_key_fingerprint(self.raw)

    def pem(self) -> bytes:
        return Ed25519PublicKey.from_public_bytes(self.raw).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def public_key_fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def load_public_key_pem(data: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key that `data`, one PEM public key and nothing else, holds."""
    if data.count(b"-----BEGIN") > 1:
        raise SigningKeyError("more than one PEM block: give the one release public key")
    if not ONE_PEM_PUBLIC_KEY.fullmatch(data):
        raise SigningKeyError("not a PEM public key alone")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):  # not PEM, or a key type this build does not know
        raise SigningKeyError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("a public key, but not an Ed25519 one")
    return key


def signature_verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
