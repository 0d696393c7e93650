"""The sequencer: folds queued audit events into their tenants' hash chains.

`AuditLog.record` only queues an event, in the transaction it describes; `Sequencer.run`, a
task in every server process, calls the database's `audit_sequence` in short transactions,
at once again while batches come back full and otherwise every quarter of the lag bound
(`RAMPARTS_AUDIT_MAX_LAG_SECONDS`). The database skips, never waits for, a chain another
sequencer holds, so any number of processes share the work and none of them is needed for
an event to be safe: a queued event is committed, and whichever sequencer runs next chains it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog
from sqlalchemy import text

from ramparts.db.engine import Database

__all__ = ["BATCH_EVENTS", "Sequencer", "SequencerPass", "SequencerStalledError"]

log = structlog.get_logger(__name__)

#: Events chained per pass, in all: large enough that a pass's fixed costs vanish
#: (bench/audit.py: 1,000 to 20,000 chain at the same rate), small enough that the chains'
#: locks, which the checkpoint signer and an admin's search wait for, are held well under a
#: second.
BATCH_EVENTS = 5_000
#: How long `drain` waits for a held chain before it gives up.
DRAIN_PATIENCE_SECONDS = 30.0
#: The longest pause after repeated failures (the database down, a failover).
MAX_BACKOFF_SECONDS = 30.0
#: The least time between two warnings that the queue is behind, so a long outage is not
#: logged four times a second.
WARN_EVERY_SECONDS = 30.0


class SequencerStalledError(Exception):
    """`drain` made no progress for its whole patience while events were still queued."""


@dataclass(frozen=True)
class SequencerPass:
    """What one `audit_sequence` transaction did, and how old the oldest event left is."""

    sequenced: int
    full: bool  # a full batch: more may be waiting
    oldest_seconds: float | None  # None when nothing committed is queued


class Sequencer:
    """Calls `audit_sequence` for as long as the app runs (`run`), or until done (`drain`)."""

    def __init__(
        self, database: Database, *, max_lag_seconds: float, batch: int = BATCH_EVENTS
    ) -> None:
        if max_lag_seconds <= 0 or batch < 1:
            raise ValueError("the lag bound and the batch size must be positive")
        self._db = database
        self._max_lag = max_lag_seconds
        self._batch = batch
        # An event waits at most one interval for a pass, then one pass: well within the bound.
        self._interval = max_lag_seconds / 4
        self._warned_at = -WARN_EVERY_SECONDS

    async def sequence(self) -> SequencerPass:
        """One pass in one transaction: up to a batch in all, over the chains not held."""
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    text("SELECT sequenced FROM audit_sequence(:batch)"), {"batch": self._batch}
                )
            ).scalars()
            counts = list(rows)
            oldest = (
                await session.execute(
                    text(
                        "SELECT extract(epoch FROM clock_timestamp() - audit_queue_oldest())"
                        "::float8"
                    )
                )
            ).scalar_one()
        return SequencerPass(sum(counts), sum(counts) >= self._batch, oldest)

    async def drain(self, *, patience: float = DRAIN_PATIENCE_SECONDS) -> int:
        """Sequence until nothing committed is queued; how many events this chained.

        A chain another transaction holds (another sequencer, the checkpoint signer) is
        waited for, briefly and repeatedly, never skipped; `SequencerStalledError` after
        `patience` seconds without progress."""
        total = 0
        stalled_since: float | None = None
        while True:
            done = await self.sequence()
            total += done.sequenced
            if done.oldest_seconds is None:
                return total
            if done.sequenced:
                stalled_since = None
            else:
                now = time.monotonic()
                stalled_since = now if stalled_since is None else stalled_since
                if now - stalled_since > patience:
                    raise SequencerStalledError(
                        f"audit events are still queued after {patience:g} s without progress: "
                        "a chain is held by an open transaction, or cannot be chained "
                        "(see the database log)"
                    )
            if not done.full:
                await asyncio.sleep(0.01)

    async def run(self) -> None:
        """Sequence until cancelled; a failing database is logged and retried with backoff."""
        failures = 0
        while True:
            try:
                done = await self.sequence()
            except Exception:
                failures += 1
                log.exception("audit_sequencer_failed", failures=failures)
                await asyncio.sleep(min(self._interval * 2**failures, MAX_BACKOFF_SECONDS))
                continue
            failures = 0
            self._warn_when_behind(done.oldest_seconds)
            if not done.full:
                await asyncio.sleep(self._interval)

    def _warn_when_behind(self, oldest_seconds: float | None) -> None:
        if oldest_seconds is None or oldest_seconds <= self._max_lag:
            return
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            log.warning(
                "audit_sequencer_behind",
                oldest_queued_seconds=round(oldest_seconds, 3),
                max_lag_seconds=self._max_lag,
            )
