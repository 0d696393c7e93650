"""The KMS port: the one way Ramparts code reaches a key or a secret.

A KMS holds named key-encryption keys that never leave it: `system` (signing keys, the audit
key) and one per tenant (`tenant-<hex>`, wrapping that tenant's data keys, destroyed when the
tenant is deleted, which crypto-shreds it even in database backups). It also stores named
secrets (API keys of PSPs and model endpoints, webhook secrets), and named Ed25519 signing
keys (`release`, which signs release manifests) whose private half never leaves it either.
Encryption and signing keys share one namespace: a name is one kind or the other.

Backends: `LocalKms` (`crypto.keystore`, a passphrase- or file-protected keystore under
RAMPARTS_HOME, dev and stage only) and `VaultKms` (`crypto.vault`, HashiCorp Vault Transit and
KV v2). A wrapped blob names its key and version (`<key>:v<n>:…`), so it unwraps wherever it
was stored and a rotation leaves every earlier blob readable.
"""

from __future__ import annotations

import re
import uuid
from typing import Protocol

from pydantic import SecretStr

from ramparts.crypto.signing import PublicKey, Signature

__all__ = [
    "RELEASE_KEY",
    "SYSTEM_KEY",
    "Kms",
    "KmsError",
    "check_key_name",
    "check_secret_name",
    "join_wrapped",
    "key_ref",
    "split_wrapped",
    "tenant_key",
]

SYSTEM_KEY = "system"
RELEASE_KEY = "release"  # the Ed25519 key that signs release manifests
KEY_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
SECRET_NAME = re.compile(r"[a-z0-9][a-z0-9/_.-]{0,127}")
WRAPPED = re.compile(rb"([a-z0-9][a-z0-9-]{0,63}):v([1-9][0-9]{0,8}):")


class KmsError(Exception):
    """A key or secret could not be used: unknown or destroyed key, wrong context, tampering,
    or the KMS refused. The message never carries key material or secret values."""


class Kms(Protocol):
    def wrap(self, key: str, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt under the newest version of `key` (made on first use), bound to `context`."""
        ...

    def unwrap(self, wrapped: bytes, *, context: str) -> bytes:
        """Decrypt a blob from `wrap`, under whichever version of its key made it."""
        ...

    def rotate(self, key: str) -> str:
        """Add a new newest version of `key`; returns its reference (`key:vN`)."""
        ...

    def current(self, key: str) -> str | None:
        """The reference of the newest version of `key`, or None if it does not exist."""
        ...

    def destroy(self, key: str) -> bool:
        """Delete every version of `key`; whatever it wrapped is unreadable for good."""
        ...

    def read_secret(self, name: str) -> SecretStr | None: ...

    def write_secret(self, name: str, value: SecretStr, *, create_only: bool = False) -> bool:
        """Store `value`; with `create_only`, only if `name` holds nothing yet. True if written."""
        ...

    def rotate_signing_key(self, key: str) -> str:
        """Add a new newest version of the Ed25519 signing key `key` (made if absent); returns
        its reference (`key:vN`). Earlier versions stay, so their public keys stay readable."""
        ...

    def public_key(self, key: str) -> PublicKey | None:
        """The public half of the newest version of signing key `key`, or None if none exists."""
        ...

    def sign(self, key: str, message: bytes) -> Signature:
        """Sign `message` (Ed25519, RFC 8032, the message itself, not a digest) with the newest
        version of `key`; a missing key is an error, never made here."""
        ...


def tenant_key(tenant: uuid.UUID) -> str:
    return f"tenant-{tenant.hex}"


def check_key_name(key: str) -> str:
    if not KEY_NAME.fullmatch(key):
        raise KmsError(f"bad KMS key name {key[:80]!r}")
    return key


def check_secret_name(name: str) -> str:
    if not SECRET_NAME.fullmatch(name) or ".." in name:
        raise KmsError(f"bad secret name {name[:80]!r}")
    return name


def split_wrapped(wrapped: bytes) -> tuple[str, int, bytes]:
    """(key, version, backend payload) of a blob from `Kms.wrap`."""
    found = WRAPPED.match(wrapped)
    if found is None:
        raise KmsError("not a wrapped key")
    return found[1].decode(), int(found[2]), wrapped[found.end() :]


def join_wrapped(key: str, version: int, payload: bytes) -> bytes:
    return f"{key}:v{version}:".encode() + payload


def key_ref(wrapped: bytes) -> str:
    """`key:vN` of a wrapped blob: the key version it needs to stay readable."""
    key, version, _ = split_wrapped(wrapped)
    return f"{key}:v{version}"
