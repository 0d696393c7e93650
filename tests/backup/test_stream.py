"""The encrypted stream and the atomic write, on their own: every way a stream can be cut,
reordered, altered or moved to another backup is refused; a failed write leaves no file."""

from __future__ import annotations

import hashlib
import io
import secrets
from pathlib import Path

import pytest

from ramparts.backup.manifest import write_atomically
from ramparts.backup.stream import (
    CHUNK_BYTES,
    LENGTH_BYTES,
    TAG_BYTES,
    CorruptBackupError,
    decrypt_stream,
    encrypt_stream,
)

KEY = secrets.token_bytes(32)
BACKUP = "20261207T000000Z-0000abcd"
RECORD = LENGTH_BYTES + CHUNK_BYTES + TAG_BYTES  # a full chunk's record


def _seal(plain: bytes, key: bytes = KEY, backup: str = BACKUP) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), sink, key, backup)
    return sink.getvalue()


def _open(sealed: bytes, key: bytes = KEY, backup: str = BACKUP) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(sealed), key, backup))


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES, 2 * CHUNK_BYTES + 7])
def test_round_trip_reports_the_digest_and_size_of_the_ciphertext(size: int) -> None:
    plain = secrets.token_bytes(size)
    sink = io.BytesIO()
    digest, written = encrypt_stream(io.BytesIO(plain), sink, KEY, BACKUP)
    sealed = sink.getvalue()
    assert written == len(sealed)
    assert digest == hashlib.sha256(sealed).hexdigest()
    assert _open(sealed) == plain


def test_the_plaintext_is_not_in_the_ciphertext() -> None:
    plain = b"buyer@acme.test " * 10_000
    assert b"acme.test" not in _seal(plain)


def _refused(sealed: bytes, match: str, **kwargs: object) -> None:
    with pytest.raises(CorruptBackupError, match=match):
        _open(sealed, **kwargs)  # type: ignore[arg-type]


def test_one_changed_byte_anywhere_is_refused() -> None:
    sealed = bytearray(_seal(secrets.token_bytes(CHUNK_BYTES + 100)))
    for position in (LENGTH_BYTES + 3, RECORD + LENGTH_BYTES + 10, len(sealed) - 1):
        changed = bytearray(sealed)
        changed[position] ^= 0x01
        _refused(bytes(changed), "does not open")


def test_a_cut_stream_is_refused_even_at_a_chunk_boundary() -> None:
    sealed = _seal(secrets.token_bytes(2 * CHUNK_BYTES + 7))
    _refused(sealed[:RECORD], "ends before its last chunk")  # whole records, no final one
    _refused(sealed[: 2 * RECORD], "ends before its last chunk")
    _refused(sealed[:-1], "ends inside chunk 2")
    _refused(sealed[:2], "ends before")


def test_a_full_last_chunk_cut_off_is_refused() -> None:
    """Two full chunks: the first is not final, so the stream cut after it is refused."""
    sealed = _seal(secrets.token_bytes(2 * CHUNK_BYTES))
    assert len(sealed) == 2 * RECORD
    _refused(sealed[:RECORD], "ends before its last chunk")


def test_reordered_repeated_and_trailing_records_are_refused() -> None:
    sealed = _seal(secrets.token_bytes(2 * CHUNK_BYTES + 7))
    first, second, last = sealed[:RECORD], sealed[RECORD : 2 * RECORD], sealed[2 * RECORD :]
    _refused(second + first + last, "chunk 0 does not open")
    _refused(first + first + last, "chunk 1 does not open")
    _refused(first + second + last + last, "data after its last chunk")
    _refused(first + second + last + b"\0", "data after its last chunk")


def test_another_backup_or_key_is_refused() -> None:
    sealed = _seal(b"archive")
    _refused(sealed, "does not open", backup="20261207T000000Z-ffffffff")
    _refused(sealed, "does not open", key=secrets.token_bytes(32))


def test_an_impossible_record_length_is_refused() -> None:
    _refused((CHUNK_BYTES + TAG_BYTES + 1).to_bytes(4, "big") + b"\0" * 32, "impossible length")


def test_a_failed_write_leaves_no_file_that_looks_whole(tmp_path: Path) -> None:
    target = tmp_path / "archive.enc"

    def crash(file: object) -> None:
        file.write(b"half an archive")  # type: ignore[attr-defined]
        raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError):
        write_atomically(target, crash)
    assert list(tmp_path.iterdir()) == []
    assert write_atomically(target, lambda file: file.write(b"whole")) == 5
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["archive.enc"]
