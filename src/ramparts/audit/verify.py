"""Verifying the chains and exporting them, as the database owner (`ramparts audit ...`).

Verification trusts nothing in the database but the rows themselves: it recomputes every hash,
checks every link and every sequence number, and checks each checkpoint's Ed25519 signature and
that the chain still holds the hash it signed. Checkpoints kept outside the database (an export
from `ramparts audit checkpoint --json`) are checked the same way, which is what catches a
rewrite that also rewrote the checkpoints table, or a tail cut after the last checkpoint.

Events still queued (recorded, not yet chained by the sequencer) are not in any chain yet:
every report counts them and gives the age of the oldest, so none goes unseen.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from psycopg.types.string import ByteaBinaryLoader

from ramparts.audit.chain import GENESIS, event_hash, names_its_row
from ramparts.audit.events import SYSTEM_TENANT
from ramparts.audit.services import TIME_FORMAT, Checkpoint

__all__ = [
    "ChainReport",
    "Problem",
    "QueueLag",
    "chain_length",
    "chain_tenants",
    "export_events",
    "load_checkpoints",
    "queue_lag",
    "verify_chain",
]

FETCH_ROWS = 5_000
MAX_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    """One finding. `seq` locates it; `expected`/`found` are hex hashes where they apply."""

    kind: str
    seq: int
    message: str
    expected: str | None = None
    found: str | None = None


@dataclass
class ChainReport:
    tenant: str
    events: int = 0
    head_seq: int = 0
    head_hash: str | None = None
    checkpoints: int = 0
    last_checkpoint_seq: int | None = None  # the newest checkpoint's position in the chain
    problems: list[Problem] = field(default_factory=list)
    queued: int = 0  # recorded, not yet in the chain
    oldest_queued_seconds: float | None = None

    @property
    def intact(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_json(self) -> dict[str, Any]:
        first = min(self.problems, key=lambda p: p.seq) if self.problems else None
        return {
            "tenant": self.tenant,
            "intact": self.intact,
            "events": self.events,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints": self.checkpoints,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "queued": self.queued,
            "oldest_queued_seconds": self.oldest_queued_seconds,
            "first_break": asdict(first) if first else None,
            "problems": [asdict(p) for p in sorted(self.problems, key=lambda p: p.seq)],
        }


def load_checkpoints(lines: Iterable[str], source: str) -> list[Checkpoint]:
    """Parse checkpoints exported by `ramparts audit checkpoint --json` (one per line)."""
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            found.append(
                Checkpoint(
                    tenant=uuid.UUID(item["tenant"]),
                    seq=int(item["seq"]),
                    head_hash=bytes.fromhex(item["hash"]),
                    signed_at=datetime.strptime(item["signed_at"], TIME_FORMAT).replace(tzinfo=UTC),
                    key_id=str(item["key_id"]),
                    signature=bytes.fromhex(item["signature"]),
                    public_key=bytes.fromhex(item["public_key"])
                    if item.get("public_key")
                    else None,
                    source=source,
                )
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}:{number}: not a checkpoint ({exc})") from None
    return found


def chain_tenants(conn: psycopg.Connection) -> list[uuid.UUID]:
    """Every chain that exists or should: started chains, tenants, chains with queued events,
    and the system chain."""
    rows = conn.execute(
        "SELECT tenant FROM audit_chains UNION SELECT id FROM tenants "
        "UNION SELECT tenant FROM audit_queue UNION SELECT %s ORDER BY 1",
        (SYSTEM_TENANT,),
    ).fetchall()
    return [row[0] for row in rows]


def _as_tenant(conn: psycopg.Connection, tenant: uuid.UUID) -> None:
    # Row-level security for an owner without BYPASSRLS; every query also names the tenant,
    # because a superuser owner sees all rows whatever the setting says.
    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))


def chain_length(conn: psycopg.Connection, tenant: uuid.UUID) -> int:
    with conn.transaction():
        _as_tenant(conn, tenant)
        row = conn.execute(
            "SELECT coalesce(max(seq), 0) FROM audit_events WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    return int(row[0]) if row else 0


def verify_chain(
    conn: psycopg.Connection,
    tenant: uuid.UUID,
    *,
    external: Iterable[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
    count_queued: bool = True,
) -> ChainReport:
    """Walk one tenant's chain from its first event; every problem found, located.

    As the owner, or as the runtime role for its own tenant (the admin's verification page),
    which may not read the queue: it passes `count_queued=False`."""
    report = ChainReport(tenant=str(tenant))
    with conn.transaction():
        _as_tenant(conn, tenant)
        keys = {
            key_id: bytes(public)
            for key_id, public in conn.execute("SELECT key_id, public_key FROM audit_signing_keys")
        }
        checkpoints = [
            Checkpoint(tenant, seq, bytes(digest), signed_at, key_id, bytes(sig))
            for seq, digest, signed_at, key_id, sig in conn.execute(
                "SELECT seq, head_hash, signed_at, key_id, signature FROM audit_checkpoints "
                "WHERE tenant_id = %s",
                (tenant,),
            )
        ] + [c for c in external if c.tenant == tenant]
        report.checkpoints = len(checkpoints)
        report.last_checkpoint_seq = max((c.seq for c in checkpoints), default=None)
        _check_signatures(report, checkpoints, keys)
        wanted = {c.seq for c in checkpoints}
        hashes_at: dict[int, bytes] = {}
        _walk(conn, report, wanted, hashes_at, progress)
        # Through the function the runtime role may call too (the same rows as the table).
        started = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM audit_chain_tenants() AS t WHERE t = %s)", (tenant,)
        ).fetchone()
        if report.events == 0 and started and started[0]:
            report.add(Problem("missing_events", 1, "the chain was started; no event is left"))
        if count_queued:
            report.queued, report.oldest_queued_seconds = _queued(conn, tenant)
    _check_checkpoints(report, checkpoints, hashes_at)
    return report


@dataclass(frozen=True)
class QueueLag:
    """Events of one chain waiting for the sequencer, and how long the oldest has waited."""

    tenant: uuid.UUID
    queued: int
    oldest_seconds: float


def _queued(conn: psycopg.Connection, tenant: uuid.UUID) -> tuple[int, float | None]:
    row = conn.execute(
        "SELECT count(*), extract(epoch FROM clock_timestamp() - min(queued_at))::float8 "
        "FROM audit_queue WHERE tenant = %s",
        (tenant,),
    ).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def queue_lag(conn: psycopg.Connection) -> list[QueueLag]:
    """Every chain with queued events, the longest waiting first."""
    rows = conn.execute(
        "SELECT tenant, count(*), extract(epoch FROM clock_timestamp() - min(queued_at))::float8 "
        "FROM audit_queue GROUP BY tenant ORDER BY 3 DESC, 1"
    ).fetchall()
    return [QueueLag(tenant, int(count), float(age)) for tenant, count, age in rows]


def _walk(
    conn: psycopg.Connection,
    report: ChainReport,
    wanted: set[int],
    hashes_at: dict[int, bytes],
    progress: Callable[[int], None] | None,
) -> None:
    expected_seq, prev = 1, GENESIS
    named = names_its_row(report.tenant)
    with conn.cursor(binary=True) as cursor, ThreadPoolExecutor(1) as reader:
        # The body as the exact bytes that were hashed: no decoding and re-encoding per row.
        cursor.adapters.register_loader("text", ByteaBinaryLoader)

        def page(after: int) -> list[tuple[int, bytes, bytes]]:
            """Rows after `after`, along the primary key: bounded memory, no server cursor.

            Not the stored prev_hash: an intact row's is the previous row's hash, which the
            walk already holds, and a row that fails is looked at again in full."""
            return cursor.execute(
                "SELECT seq, body, hash FROM audit_events WHERE tenant_id = %s "
                "AND seq > %s ORDER BY seq LIMIT %s",
                (report.tenant, after, FETCH_ROWS),
            ).fetchall()

        # The database reads the next page while this thread checks the current one.
        pending = reader.submit(page, 0)
        while rows := pending.result():
            pending = reader.submit(page, rows[-1][0])
            for seq, body, digest in rows:
                # One test for the common case; _diagnose says what is wrong when it fails.
                if not (
                    seq == expected_seq and event_hash(body, prev) == digest and named(body, seq)
                ):
                    _diagnose(conn, report, expected_seq, prev, (seq, body, digest), named)
                if seq in wanted:
                    hashes_at[seq] = digest
                expected_seq, prev = seq + 1, digest
            report.events += len(rows)
            if progress is not None:
                progress(len(rows))
    report.head_seq = expected_seq - 1
    report.head_hash = prev.hex() if report.events else None


def _diagnose(  # noqa: PLR0917 - the walk's state, passed as it stands
    conn: psycopg.Connection,
    report: ChainReport,
    expected_seq: int,
    prev: bytes,
    row: tuple[int, bytes, bytes],
    named: Callable[[bytes, int], bool],
) -> None:
    seq, body, digest = row
    stored = conn.execute(
        "SELECT prev_hash FROM audit_events WHERE tenant_id = %s AND seq = %s",
        (report.tenant, seq),
    ).fetchone()
    prev_hash = bytes(stored[0]) if stored else b""
    if seq != expected_seq:
        report.add(
            Problem("missing_events", expected_seq, f"events {expected_seq}..{seq - 1} are missing")
        )
    if prev_hash != prev:
        report.add(
            Problem(
                "broken_link",
                seq,
                f"event {seq} does not follow the event before it",
                expected=prev.hex(),
                found=bytes(prev_hash).hex(),
            )
        )
    computed = event_hash(body, prev_hash)
    if computed != digest:
        report.add(
            Problem(
                "hash_mismatch",
                seq,
                f"event {seq} was changed after it was written",
                expected=computed.hex(),
                found=bytes(digest).hex(),
            )
        )
    if not named(body, seq):
        report.add(Problem("misplaced_event", seq, f"event {seq} names another position"))


def _check_signatures(
    report: ChainReport, checkpoints: list[Checkpoint], keys: dict[str, bytes]
) -> None:
    for checkpoint in checkpoints:
        public = keys.get(checkpoint.key_id) or checkpoint.public_key
        if checkpoint.public_key is not None and keys.get(checkpoint.key_id) not in {
            None,
            checkpoint.public_key,
        }:
            report.add(
                Problem(
                    "checkpoint_key_mismatch",
                    checkpoint.seq,
                    f"{checkpoint.source}: key {checkpoint.key_id} differs from the database's",
                )
            )
        if public is None:
            report.add(
                Problem(
                    "unknown_key",
                    checkpoint.seq,
                    f"{checkpoint.source}: checkpoint signed by unknown key {checkpoint.key_id}",
                )
            )
            continue
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                checkpoint.signature, checkpoint.statement()
            )
        except (InvalidSignature, ValueError):
            report.add(
                Problem(
                    "bad_signature",
                    checkpoint.seq,
                    f"{checkpoint.source}: checkpoint at {checkpoint.seq} has a bad signature",
                )
            )


def _check_checkpoints(
    report: ChainReport, checkpoints: list[Checkpoint], hashes_at: dict[int, bytes]
) -> None:
    for checkpoint in checkpoints:
        found = hashes_at.get(checkpoint.seq)
        if checkpoint.seq > report.head_seq:
            report.add(
                Problem(
                    "truncated",
                    checkpoint.seq,
                    f"{checkpoint.source}: a checkpoint covers event {checkpoint.seq} but the "
                    f"chain ends at {report.head_seq}",
                    expected=checkpoint.head_hash.hex(),
                )
            )
        elif found != checkpoint.head_hash:
            report.add(
                Problem(
                    "checkpoint_mismatch",
                    checkpoint.seq,
                    f"{checkpoint.source}: event {checkpoint.seq} is not the one checkpointed",
                    expected=checkpoint.head_hash.hex(),
                    found=found.hex() if found else None,
                )
            )


def export_events(
    conn: psycopg.Connection,
    tenant: uuid.UUID,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """One tenant's events, oldest first, each with its hash and link, for a SIEM."""
    with conn.transaction():
        _as_tenant(conn, tenant)
        with conn.cursor(name="audit_export", binary=True) as cursor:
            cursor.itersize = FETCH_ROWS
            cursor.execute(
                "SELECT body, prev_hash, hash FROM audit_events WHERE tenant_id = %(tenant)s "
                "AND (%(since)s::timestamptz IS NULL OR audit_time(body) >= %(since)s) "
                "AND (%(until)s::timestamptz IS NULL OR audit_time(body) < %(until)s) ORDER BY seq",
                {"tenant": tenant, "since": since, "until": until},
            )
            for body, prev_hash, digest in cursor:
                yield {
                    **json.loads(body),
                    "prev_hash": bytes(prev_hash).hex(),
                    "hash": bytes(digest).hex(),
                }
