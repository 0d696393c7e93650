"""`take_backup` and `restore_backup`: a database to an encrypted, signed archive and back.

A backup is two files in one directory: `ramparts-<id>.dump.enc` (a `pg_dump` custom-format
archive, encrypted as a stream: `backup.stream`) and `ramparts-<id>.manifest.json` (what it
holds, signed: `backup.manifest`). Each is written through a temporary file, synced and renamed;
the manifest comes last, so a backup without one was never finished and cannot be restored.

The dump and the row counts in the manifest come from one snapshot: the backup opens a
repeatable-read transaction, exports its snapshot, counts every table in it, and hands it to
`pg_dump --snapshot`. A restore can therefore check that it holds exactly those rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import IsolationLevel, sql
from sqlalchemy.engine import URL

from ramparts.backup.manifest import (
    BACKUP_KEY,
    BackupRefusedError,
    DatabaseIdentity,
    Manifest,
    read_manifest,
    write_atomically,
)
from ramparts.backup.pgtools import (
    BackupToolError,
    count_rows,
    find_tool,
    require_every_row,
    server_major,
    tool_connection,
)
from ramparts.backup.stream import CorruptBackupError, decrypt_stream, derive_key, encrypt_stream
from ramparts.backup.target import leftovers, not_owned_by_restorer
from ramparts.config import APP_ROLE
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, derive_app_url, libpq
from ramparts.db.migrate import ExpectedSchema, current_revisions, ensure_app_role

__all__ = [
    "Meter",
    "RestoreReport",
    "manifest_path",
    "restore_backup",
    "take_backup",
    "verify_backup",
]

DATA_PURPOSE = b"data"
READ_BYTES = 1 << 20
SNAPSHOT = """
SELECT pg_export_snapshot(), now(),
       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn()
       END::text,
       current_database(), current_setting('server_version'),
       (SELECT system_identifier::text FROM pg_control_system()),
       pg_database_size(current_database())
"""
#: Called with the expected total of bytes (0: unknown), then with each step's bytes.
Meter = Callable[[int | None, int], None]


def _no_meter(_total: int | None, _step: int) -> None:
    return None


def manifest_path(directory: Path, backup_id: str) -> Path:
    return directory / f"ramparts-{backup_id}.manifest.json"


def _first_line(stream: IO[bytes], fallback: str) -> str:
    """The tool's first error line (or first line) of what it wrote to `stream`."""
    stream.seek(0)
    lines = [line for line in stream.read().decode(errors="replace").splitlines() if line]
    errors = [line for line in lines if "error" in line.lower()] or lines or [fallback]
    return errors[0][:300]


@dataclass(frozen=True)
class _Snapshot:
    """What the backup reads in the exported snapshot the dump is taken from."""

    id: str
    taken_at: datetime
    wal_lsn: str
    identity: DatabaseIdentity
    size: int  # the database's size on disk: the progress bar's estimate
    tables: dict[str, int]
    heads: tuple[str, ...]


def _export_snapshot(conn: psycopg.Connection) -> _Snapshot:
    """Open a read-only repeatable-read transaction on `conn`, export its snapshot, and read
    in it what the manifest records. The transaction must stay open while pg_dump runs."""
    conn.isolation_level = IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    row = conn.execute(SNAPSHOT).fetchone()  # the first statement: the snapshot is taken here
    require_every_row(conn, "a backup")
    if row is None:  # pragma: no cover - the query always answers
        raise BackupToolError("the server did not export a snapshot")
    snapshot, taken_at, wal_lsn, name, version, system_id, size = row
    return _Snapshot(
        id=snapshot,
        taken_at=taken_at,
        wal_lsn=wal_lsn,
        identity=DatabaseIdentity(name=name, system_identifier=system_id, server_version=version),
        size=int(size),
        tables=count_rows(conn),
        heads=tuple(sorted(_stamped(conn))),
    )


def _dump(
    pg_dump: Path,
    owner: URL,
    snapshot: str,
    sink: IO[bytes],
    *,
    key: bytes,
    backup_id: str,
    meter: Meter,
) -> tuple[str, int]:
    """pg_dump of `snapshot`, encrypted into `sink` as it comes; its SHA-256 and size."""
    dbname, env = tool_connection(owner)
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - pg_dump, no shell
            [
                str(pg_dump),
                "--format=custom",
                f"--snapshot={snapshot}",
                "--no-password",
                f"--dbname={dbname}",
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=env,
        )
        assert process.stdout is not None  # noqa: S101 - asked for above
        try:
            sealed = encrypt_stream(
                process.stdout, sink, key, backup_id, progress=lambda n: meter(None, n)
            )
        finally:
            process.stdout.close()  # a dump cut short by an error here ends with EPIPE
            code = process.wait()
        if code != 0:
            raise BackupToolError(f"pg_dump failed: {_first_line(errors, str(code))}")
        return sealed


def take_backup(owner: URL, kms: Kms, directory: Path, *, meter: Meter = _no_meter) -> Path:
    """Back up the database at `owner` into `directory`; the path of the signed manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    backup_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    data_key = secrets.token_bytes(32)
    wrapped = kms.wrap(BACKUP_KEY, data_key, context=Manifest.context(backup_id))
    data_file = directory / f"ramparts-{backup_id}.dump.enc"
    with psycopg.connect(libpq(owner)) as conn:
        snapshot = _export_snapshot(conn)
        pg_dump = find_tool("pg_dump", server_major(conn))
        meter(snapshot.size, 0)
        # A failed dump raises inside the write, which then removes its partial file.
        digest, size = write_atomically(
            data_file,
            lambda sink: _dump(
                pg_dump,
                owner,
                snapshot.id,
                sink,
                key=derive_key(data_key, DATA_PURPOSE),
                backup_id=backup_id,
                meter=meter,
            ),
        )
        conn.rollback()  # a read-only snapshot: nothing to keep
    manifest = Manifest(
        backup_id=backup_id,
        created_at=datetime.now(UTC).isoformat(),
        snapshot_at=snapshot.taken_at.astimezone(UTC).isoformat(),
        wal_lsn=snapshot.wal_lsn,
        database=snapshot.identity,
        schema_heads=snapshot.heads,
        tables=snapshot.tables,
        data_file=data_file.name,
        data_sha256=digest,
        data_bytes=size,
        wrapped_key=wrapped,
    ).signed(data_key)
    path = manifest_path(directory, backup_id)
    text = json.dumps(manifest.as_json(), indent=2) + "\n"
    # Last: until the manifest is in place, the backup does not exist for `restore`.
    write_atomically(path, lambda file: file.write(text.encode()))
    return path


def _stamped(conn: psycopg.Connection) -> list[str]:
    present = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()
    if present is None or present[0] is None:
        return []
    return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def verify_backup(path: Path, kms: Kms, *, meter: Meter = _no_meter) -> tuple[Manifest, bytes]:
    """The manifest and the archive's data key, once the manifest's signature and the
    archive's size and SHA-256 all check out; BackupRefusedError otherwise."""
    manifest = read_manifest(path)
    data_key = manifest.data_key(kms)
    data = path.parent / manifest.data_file
    digest = hashlib.sha256()
    size = 0
    meter(manifest.data_bytes, 0)
    try:
        # A device or a FIFO (/dev/zero, a pipe) would be read, or waited on, forever.
        if not stat.S_ISREG(data.stat().st_mode):
            raise BackupRefusedError(f"{data}: not a regular file")
        with data.open("rb") as file:
            # One byte past the recorded size is enough to refuse a file that kept growing.
            while size <= manifest.data_bytes and (block := file.read(READ_BYTES)):
                digest.update(block)
                size += len(block)
                meter(None, len(block))
    except FileNotFoundError:
        raise BackupRefusedError(f"{data}: the archive is missing") from None
    if size != manifest.data_bytes or not hmac.compare_digest(
        digest.hexdigest(), manifest.data_sha256
    ):
        raise BackupRefusedError(f"{data}: its size or SHA-256 differs from the manifest's")
    return manifest, data_key


@dataclass
class RestoreReport:
    """What a restore produced, checked against the manifest."""

    manifest: Manifest
    database: str
    tables: dict[str, int]
    schema_heads: frozenset[str]
    count_mismatches: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    #: Heads this code's migrations reach that the restored schema lacks: `ramparts migrate`
    #: brings it there (a backup taken before an upgrade). Not a fault of the restore.
    schema_missing: frozenset[str] = frozenset()

    @property
    def heads_match(self) -> bool:
        return self.schema_heads == frozenset(self.manifest.schema_heads)

    @property
    def intact(self) -> bool:
        return not self.count_mismatches and self.heads_match

    def as_json(self) -> dict[str, Any]:
        return {
            "backup_id": self.manifest.backup_id,
            "source": asdict(self.manifest.database),
            "snapshot_at": self.manifest.snapshot_at,
            "database": self.database,
            "tables": len(self.tables),
            "rows": sum(self.tables.values()),
            "count_mismatches": {
                name: {"expected": expected, "found": found}
                for name, (expected, found) in sorted(self.count_mismatches.items())
            },
            "schema_heads": sorted(self.schema_heads),
            "schema_heads_match": self.heads_match,
            "schema_missing": sorted(self.schema_missing),
        }


def restore_backup(
    path: Path,
    target: URL,
    kms: Kms,
    *,
    expected: ExpectedSchema | None = None,
    meter: Meter = _no_meter,
) -> RestoreReport:
    """Verify the backup at `path`, then restore it into the empty database at `target` (as
    its owner, who becomes the owner of everything restored) and check what it holds.

    The runtime role is created when the server lacks it, and gets back the grants it had;
    the restore runs in one transaction, so a failure leaves the target empty."""
    manifest, data_key = verify_backup(path, kms, meter=meter)
    with psycopg.connect(libpq(target), autocommit=True) as conn:
        require_every_row(conn, "a restore")
        if leftovers(conn):
            raise BackupRefusedError(
                f"database {target.database!r} is not empty; restore only into a fresh one"
            )
        owner = not_owned_by_restorer(conn)
        if owner is not None:
            raise BackupRefusedError(
                f"database {target.database!r} is owned by {owner}; restore as its owner"
            )
        pg_restore = find_tool("pg_restore", server_major(conn))
    ensure_app_role(DatabaseUrls(owner_url=target, app=derive_app_url(target)))
    _load(path.parent / manifest.data_file, manifest, data_key, pg_restore, target, meter=meter)
    with psycopg.connect(libpq(target), autocommit=True) as conn:
        _grant_database(conn)
        with conn.transaction():
            found = count_rows(conn)
    mismatches = {
        name: (manifest.tables.get(name), found.get(name))
        for name in manifest.tables.keys() | found.keys()
        if manifest.tables.get(name) != found.get(name)
    }
    heads = current_revisions(target)
    return RestoreReport(
        manifest=manifest,
        database=str(target.database),
        tables=found,
        schema_heads=heads,
        count_mismatches=mismatches,
        schema_missing=expected.missing(heads) if expected is not None else frozenset(),
    )


def _load(
    data: Path, manifest: Manifest, data_key: bytes, pg_restore: Path, target: URL, *, meter: Meter
) -> None:
    """Decrypt the archive into `pg_restore`, one checked chunk at a time."""
    dbname, env = tool_connection(target)
    meter(manifest.data_bytes, 0)
    with tempfile.TemporaryFile() as errors, data.open("rb") as archive:
        process = subprocess.Popen(  # noqa: S603 - pg_restore, no shell
            [
                str(pg_restore),
                "--no-owner",
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                f"--dbname={dbname}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
        )
        assert process.stdin is not None  # noqa: S101 - asked for above
        read = 0
        try:
            for chunk in decrypt_stream(
                archive,
                derive_key(data_key, DATA_PURPOSE),
                manifest.backup_id,
            ):
                process.stdin.write(chunk)
                meter(None, archive.tell() - read)
                read = archive.tell()
            process.stdin.close()
        except BrokenPipeError:
            pass  # pg_restore stopped early: its exit code and message say why
        except CorruptBackupError as exc:
            # Killed inside its single transaction: nothing it loaded is committed.
            process.kill()
            process.wait()
            raise BackupRefusedError(f"{data}: {exc}; nothing was restored") from None
        code = process.wait()
        if code != 0:
            raise BackupToolError(f"pg_restore failed: {_first_line(errors, str(code))}")


def _grant_database(conn: psycopg.Connection) -> None:
    """The database-level grants of migration 0001, which a dump does not carry: only the
    runtime role may connect, and nobody may create temporary tables."""
    name = sql.Identifier(conn.info.dbname)
    conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(name))
    conn.execute(
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(name, sql.Identifier(APP_ROLE))
    )
