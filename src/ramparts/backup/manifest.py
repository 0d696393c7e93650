"""A backup's manifest: what the archive holds and how to open it, signed.

The archive's data key is wrapped by the KMS under the `backup` key with a context naming the
backup id, and the manifest is signed with an HMAC-SHA256 under a key derived from that data
key. Only a holder of the KMS key can therefore sign a manifest that verifies: an edited
manifest, one re-signed under another key, or a backup made under another KMS is refused
before a byte of it is restored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from ramparts.backup.stream import derive_key
from ramparts.crypto.kms import Kms, KmsError, split_wrapped

__all__ = [
    "BACKUP_KEY",
    "FORMAT",
    "BackupRefusedError",
    "DatabaseIdentity",
    "Manifest",
    "read_manifest",
    "write_atomically",
]

T = TypeVar("T")

FORMAT = "ramparts-backup/1"
#: The KMS key that wraps every backup's data key.
BACKUP_KEY = "backup"
MAC_PURPOSE = b"manifest"
_BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_MANIFEST_BYTES = 1 << 20


class BackupRefusedError(Exception):
    """The backup cannot be trusted or used: unsigned, tampered, incomplete, or unreadable
    with this KMS. Nothing was restored."""


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which database was backed up: the cluster's system identifier, the database's name and
    the server's version."""

    name: str
    system_identifier: str
    server_version: str


@dataclass(frozen=True)
class Manifest:
    backup_id: str
    created_at: str  # when the backup finished (ISO 8601, UTC)
    snapshot_at: str  # the server's time at the dump's snapshot: the newest data it holds
    wal_lsn: str  # the server's WAL position at the snapshot
    database: DatabaseIdentity
    schema_heads: tuple[str, ...]  # the Alembic revisions the database was stamped at
    tables: dict[str, int]  # rows per table at the snapshot
    data_file: str  # the encrypted archive, beside the manifest
    data_sha256: str
    data_bytes: int
    wrapped_key: bytes  # the data key, wrapped by the KMS's `backup` key
    signature: bytes = b""

    @staticmethod
    def context(backup_id: str) -> str:
        """The KMS context the data key is wrapped under: it names the backup."""
        return f"backup:{backup_id}"

    def _signed_part(self) -> bytes:
        body = self.as_json()
        del body["signature"]
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, data_key: bytes) -> Manifest:
        mac = hmac.new(derive_key(data_key, MAC_PURPOSE), self._signed_part(), hashlib.sha256)
        return _replace_signature(self, mac.digest())

    def data_key(self, kms: Kms) -> bytes:
        """The archive's data key, once the KMS unwrapped it and the signature checks out."""
        try:
            data_key = _unwrap_backup_key(kms, self.wrapped_key, self.context(self.backup_id))
        except KmsError:
            raise BackupRefusedError(
                "the backup's key does not open with this KMS: made under another KMS, "
                "or its manifest was changed"
            ) from None
        expected = hmac.new(
            derive_key(data_key, MAC_PURPOSE), self._signed_part(), hashlib.sha256
        ).digest()
        if not hmac.compare_digest(expected, self.signature):
            raise BackupRefusedError("the manifest's signature does not verify")
        return data_key

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["format"] = FORMAT
        body["schema_heads"] = sorted(self.schema_heads)
        body["wrapped_key"] = base64.b64encode(self.wrapped_key).decode()
        body["signature"] = {"alg": "HMAC-SHA256", "value": self.signature.hex()}
        return body


def _unwrap_backup_key(kms: Kms, wrapped: bytes, context: str) -> bytes:
    """Only the backup key opens a backup: a blob under another key (a tenant's, the
    system's) belongs to another protocol, whatever context it was wrapped with."""
    if split_wrapped(wrapped)[0] != BACKUP_KEY:
        raise KmsError("not wrapped under the backup key")
    return kms.unwrap(wrapped, context=context)


def _replace_signature(manifest: Manifest, signature: bytes) -> Manifest:
    fields = {**manifest.__dict__, "signature": signature}
    return Manifest(**fields)


def read_manifest(path: Path) -> Manifest:
    """Parse a manifest file strictly; a malformed one is refused (its signature is checked
    later, with the KMS: `Manifest.data_key`)."""
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BackupRefusedError(f"{path}: too large for a manifest")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackupRefusedError(f"{path}: no such manifest") from None
    try:
        return _parse(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupRefusedError(f"{path}: not a valid {FORMAT} manifest ({exc})") from None


def _parse(body: dict[str, Any]) -> Manifest:
    if body.pop("format") != FORMAT:
        raise ValueError("another format")
    signature = body.pop("signature")
    if signature["alg"] != "HMAC-SHA256":
        raise ValueError("unknown signature algorithm")
    manifest = Manifest(
        backup_id=_checked(body.pop("backup_id"), _BACKUP_ID, "backup_id"),
        created_at=str(body.pop("created_at")),
        snapshot_at=str(body.pop("snapshot_at")),
        wal_lsn=str(body.pop("wal_lsn")),
        database=DatabaseIdentity(**body.pop("database")),
        schema_heads=tuple(str(head) for head in body.pop("schema_heads")),
        tables={str(name): int(rows) for name, rows in body.pop("tables").items()},
        data_file=_plain_name(body.pop("data_file")),
        data_sha256=_checked(body.pop("data_sha256"), _HEX64, "data_sha256"),
        data_bytes=int(body.pop("data_bytes")),
        wrapped_key=base64.b64decode(body.pop("wrapped_key"), validate=True),
        signature=bytes.fromhex(signature["value"]),
    )
    if body:
        raise ValueError(f"unknown fields {sorted(body)}")
    return manifest


def _checked(value: object, pattern: re.Pattern[str], name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {name}")
    return value


def _plain_name(value: object) -> str:
    """A file name beside the manifest: never a path that leads elsewhere."""
    if not isinstance(value, str) or value != Path(value).name or value in {"", ".", ".."}:
        raise ValueError("data_file is not a plain file name")
    return value


def write_atomically(path: Path, write: Callable[[IO[bytes]], T]) -> T:
    """Write `path` through a temporary file beside it: `write(file)` fills it, then it is
    flushed to disk and renamed into place, and the directory entry is synced too. A crash
    leaves at most a `.partial` file, never a `path` that looks whole."""
    partial = path.with_name(path.name + ".partial")
    try:
        # Created for its owner only (O_EXCL: never through a link left in its place).
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            result = write(file)
            file.flush()
            os.fsync(file.fileno())
        partial.rename(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return result
