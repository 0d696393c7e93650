"""The restore drill: back up, restore into a scratch database, verify what came back, and
measure the recovery point and time objectives achieved against their targets.

- Restored: every table holds the rows the manifest counted at the dump's snapshot, the
  schema is stamped at the same revisions, every audit chain verifies (hashes, links,
  checkpoint signatures) and every ledger book balances with its guards in place.
- RPO: the age of the snapshot the drill restored and verified, on the server's clock: the
  recovery point the drilled path (a pg_dump and its restore) reaches, and no better.
- RTO: the time the restore and its verification took, end to end.
- PITR lag, apart and informational: the WAL archive's state (archiving on, the newest
  archived segment's age, the last failure). The drill replays no WAL, so this recovery
  point is not drilled and counts toward neither the RPO nor the verdict.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from ramparts.audit.verify import ChainReport, chain_tenants, verify_chain
from ramparts.backup.manifest import BackupRefusedError, Manifest
from ramparts.backup.services import RestoreReport
from ramparts.db.engine import libpq
from ramparts.payments.ledger_verify import (
    BookReport,
    LedgerProblem,
    guard_problems,
    ledger_books,
    unlisted_books,
    verify_book,
)

__all__ = [
    "DrillReport",
    "Objective",
    "PitrLag",
    "achieved_rpo",
    "elapsed_since",
    "parse_duration",
    "pitr_lag",
    "require_same_database",
    "scratch_database",
    "verify_restored",
]

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
ARCHIVER = """
SELECT current_setting('archive_mode') <> 'off',
       last_archived_wal,
       extract(epoch FROM now() - last_archived_time),
       last_failed_wal,
       extract(epoch FROM now() - last_failed_time)
FROM pg_stat_archiver
"""


def parse_duration(text: str) -> float:
    """Seconds in `15m`, `90s`, `500ms`, `1h`, `1.5h`; ValueError otherwise."""
    matched = _DURATION.fullmatch(text.strip())
    if matched is None:
        raise ValueError(f"not a duration: {text!r} (say 15m, 90s, 500ms or 1h)")
    return float(matched[1]) * _UNIT_SECONDS[matched[2]]


@dataclass(frozen=True)
class Objective:
    """An achieved recovery objective against its target, in seconds."""

    achieved: float
    target: float
    source: str  # what it was measured from

    @property
    def met(self) -> bool:
        # A negative age (a snapshot after "now") is a wrong clock or a wrong fact, not a
        # small recovery point.
        return 0 <= self.achieved <= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "achieved_seconds": round(self.achieved, 3),
            "target_seconds": self.target,
            "met": self.met,
            "source": self.source,
        }


@dataclass(frozen=True)
class PitrLag:
    """The WAL archive's state, ages in seconds on the server's clock: how far behind a
    point-in-time recovery from the archive would be. Not drilled (the drill restores a
    pg_dump and replays no WAL), so it is reported for information and judged against nothing."""

    archiving: bool  # archive_mode is not off
    last_archived_wal: str | None
    last_archived_age: float | None
    last_failed_wal: str | None
    last_failed_age: float | None

    @property
    def healthy(self) -> bool:
        """Archiving is on and its last archived segment is newer than its last failure."""
        if not self.archiving or self.last_archived_age is None:
            return False
        return self.last_failed_age is None or self.last_failed_age > self.last_archived_age

    def as_json(self) -> dict[str, Any]:
        return {
            "drilled": False,
            "archiving": self.archiving,
            "healthy": self.healthy,
            "last_archived_wal": self.last_archived_wal,
            "last_archived_age_seconds": _rounded(self.last_archived_age),
            "last_failed_wal": self.last_failed_wal,
            "last_failed_age_seconds": _rounded(self.last_failed_age),
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


@dataclass
class DrillReport:
    restore: RestoreReport
    chains: list[ChainReport]
    books: list[BookReport]
    ledger_guards: list[LedgerProblem]
    rpo: Objective
    rto: Objective
    pitr: PitrLag  # informational: not part of `passed`

    @property
    def restored_intact(self) -> bool:
        return (
            self.restore.intact
            and all(chain.intact for chain in self.chains)
            and not self.ledger_guards
            and all(book.intact for book in self.books)
        )

    @property
    def passed(self) -> bool:
        return self.restored_intact and self.rpo.met and self.rto.met

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "restore": self.restore.as_json(),
            "audit": {
                "intact": all(chain.intact for chain in self.chains),
                "chains": [chain.as_json() for chain in self.chains],
            },
            "ledger": {
                "intact": not self.ledger_guards and all(book.intact for book in self.books),
                "guards": [problem.as_json() for problem in self.ledger_guards],
                "books": [book.as_json() for book in self.books],
            },
            "rpo": self.rpo.as_json(),
            "rto": self.rto.as_json(),
            "pitr_lag": self.pitr.as_json(),
        }


@contextmanager
def scratch_database(owner: URL) -> Iterator[URL]:
    """A fresh, empty database on the owner's server, dropped on the way out whatever happens."""
    name = f"ramparts_drill_{secrets.token_hex(6)}"
    maintenance = libpq(owner.set(database="postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield owner.set(database=name)
    finally:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def verify_restored(
    restored: URL,
) -> tuple[list[ChainReport], list[LedgerProblem], list[BookReport]]:
    """Every audit chain, and the ledger's guards and books, of the restored database."""
    with psycopg.connect(libpq(restored), autocommit=True) as conn:
        chains = [verify_chain(conn, tenant) for tenant in chain_tenants(conn)]
        guards = guard_problems(conn) + (unlisted_books(conn) or [])
        books = [verify_book(conn, tenant) for tenant in ledger_books(conn)]
    return chains, guards, books


def achieved_rpo(source: URL, snapshot_at: datetime, target: float) -> Objective:
    """The recovery point the drill reached: the age of the snapshot it restored and verified.

    Not the WAL archive's lag, however healthy the archive: the drill replays no WAL, and an
    RPO it reports must be one a path it tested reaches (`pitr_lag` reports the archive)."""
    with psycopg.connect(libpq(source), autocommit=True) as conn:
        # The server's clock stamped the snapshot: measure its age on that clock, not on the
        # machine running the drill, whose skew would shrink the RPO.
        age = conn.execute(
            "SELECT extract(epoch FROM now() - %s::timestamptz)", (snapshot_at,)
        ).fetchone()
    return Objective(float(age[0]) if age else float("inf"), target, "backup-snapshot")


def pitr_lag(source: URL) -> PitrLag:
    """The source server's WAL archive as `pg_stat_archiver` sees it."""
    with psycopg.connect(libpq(source), autocommit=True) as conn:
        row = conn.execute(ARCHIVER).fetchone()
    if row is None:  # the view always has its one row; an empty answer is no archiving
        return PitrLag(False, None, None, None, None)
    archiving, archived_wal, archived_age, failed_wal, failed_age = row
    return PitrLag(
        archiving=bool(archiving),
        last_archived_wal=archived_wal,
        last_archived_age=None if archived_age is None else float(archived_age),
        last_failed_wal=failed_wal,
        last_failed_age=None if failed_age is None else float(failed_age),
    )


def require_same_database(source: URL, manifest: Manifest) -> None:
    """Refuse to drill a backup of another database: restoring it proves nothing of this one,
    and its age is not what this one would lose."""
    with psycopg.connect(libpq(source), autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_database(), system_identifier::text FROM pg_control_system()"
        ).fetchone()
    drilled = (str(row[0]), str(row[1])) if row else (str(source.database), "")
    backed_up = (manifest.database.name, manifest.database.system_identifier)
    if drilled != backed_up:
        raise BackupRefusedError(
            f"backup {manifest.backup_id} is of database {backed_up[0]!r} of cluster "
            f"{backed_up[1]}, not of {drilled[0]!r} of cluster {drilled[1]} (the one drilled)"
        )


def elapsed_since(started: float, target: float) -> Objective:
    return Objective(time.monotonic() - started, target, "restore-and-verify")
