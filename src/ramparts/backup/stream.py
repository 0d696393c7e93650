"""A backup's bytes, encrypted as a stream: AES-256-GCM in chunks, never all in memory.

Each chunk is one record: its ciphertext length (4 bytes, big-endian), then the ciphertext
with its tag. The nonce is the chunk's index (the key is fresh for every backup, so a counter
never repeats), and the associated data names the backup, the index and whether this is the
last chunk: a record moved, dropped, repeated or taken from another backup fails to open, and
a file cut after any record lacks its final chunk and is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import IO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["CHUNK_BYTES", "CorruptBackupError", "decrypt_stream", "derive_key", "encrypt_stream"]

CHUNK_BYTES = 1 << 20
TAG_BYTES = 16
LENGTH_BYTES = 4


class CorruptBackupError(Exception):
    """The encrypted stream does not open: tampered, truncated, reordered, or another key."""


def derive_key(data_key: bytes, purpose: bytes) -> bytes:
    """A key for one purpose (the stream, the manifest's MAC) from the backup's data key."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"ramparts-backup:" + purpose).derive(data_key)


def _aad(backup_id: str, index: int, final: bool) -> bytes:
    return f"{backup_id}:{index}:{int(final)}".encode()


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _read_full(source: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes: fewer only at the end (a pipe may hand over less per read)."""
    parts: list[bytes] = []
    wanted = size
    while wanted:
        part = source.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


def encrypt_stream(
    source: IO[bytes],
    sink: IO[bytes],
    key: bytes,
    backup_id: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """Encrypt `source` to `sink` until its end; the SHA-256 (hex) and size of what was written.

    One chunk is read ahead, so the last one is known as it is sealed."""
    aead = AESGCM(key)
    digest = hashlib.sha256()
    written = 0
    index = 0
    chunk = _read_full(source, CHUNK_BYTES)
    while True:
        following = _read_full(source, CHUNK_BYTES) if len(chunk) == CHUNK_BYTES else b""
        final = not following
        sealed = aead.encrypt(_nonce(index), chunk, _aad(backup_id, index, final))
        record = len(sealed).to_bytes(LENGTH_BYTES, "big") + sealed
        sink.write(record)
        digest.update(record)
        written += len(record)
        if progress is not None:
            progress(len(chunk))
        if final:
            return digest.hexdigest(), written
        chunk, index = following, index + 1


def decrypt_stream(source: IO[bytes], key: bytes, backup_id: str) -> Iterator[bytes]:
    """The plaintext chunks of a stream from `encrypt_stream`, each checked before it is
    yielded; raises CorruptBackupError at the first chunk that does not open, at a missing
    final chunk, and at anything after it."""
    aead = AESGCM(key)
    index = 0
    while True:
        header = _read_full(source, LENGTH_BYTES)
        if len(header) < LENGTH_BYTES:
            raise CorruptBackupError(f"the backup ends before its last chunk (after {index})")
        length = int.from_bytes(header, "big")
        if not TAG_BYTES <= length <= CHUNK_BYTES + TAG_BYTES:
            raise CorruptBackupError(f"chunk {index} has an impossible length")
        sealed = _read_full(source, length)
        if len(sealed) < length:
            raise CorruptBackupError(f"the backup ends inside chunk {index}")
        # Only a full chunk may be followed by another; a short one can only be the last.
        for final in (False, True) if length == CHUNK_BYTES + TAG_BYTES else (True,):
            try:
                plain = aead.decrypt(_nonce(index), sealed, _aad(backup_id, index, final))
            except InvalidTag:
                continue
            break
        else:
            raise CorruptBackupError(f"chunk {index} does not open (tampered or another key)")
        yield plain
        if final:
            if source.read(1):
                raise CorruptBackupError("the backup has data after its last chunk")
            return
        index += 1
