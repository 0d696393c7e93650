"""The operations gauges /metrics reports from the database: one round trip, cached.

`ramparts_operations_gauges()` (migration 0029) reads, across every tenant and with the
owner's rights, the approvals pending, the dead-letter queue, the latest reconciliation run,
the kill-switches and the audit queue's lag: counts and ages only. A scrape reads it at most
once per `max_age` seconds per process, and concurrent scrapes share the one read, so a
scrape storm cannot load the database.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import text

from ramparts.db.engine import Database

__all__ = ["GAUGES_MAX_AGE", "OperationsGauges", "OperationsSnapshot"]

#: How long one reading serves the scrapes of a process.
GAUGES_MAX_AGE = 5.0

_READ = text("SELECT * FROM ramparts_operations_gauges()")


@dataclass(frozen=True)
class OperationsSnapshot:
    """The database's operational state at one moment. A `None` age: nothing to be old."""

    approvals_pending: int
    approval_oldest_seconds: float | None
    dead_letters: int
    reconciliation_drift: int | None  # None: no run yet
    reconciliation_finished: float | None  # the latest run's end, Unix time
    killswitch_global: bool
    killswitch_tenants: int
    killswitch_tools: int
    audit_lag_seconds: float


class OperationsGauges:
    """Reads the snapshot, at most once per `max_age` seconds."""

    def __init__(self, database: Database, *, max_age: float = GAUGES_MAX_AGE) -> None:
        self._db = database
        self._max_age = max_age
        self._lock = asyncio.Lock()
        self._read_at = float("-inf")
        self._snapshot: OperationsSnapshot | None = None

    async def snapshot(self) -> OperationsSnapshot:
        """The latest reading, read again once it is older than `max_age`."""
        async with self._lock:  # scrapes that arrive together wait for one read
            if self._snapshot is None or time.monotonic() - self._read_at >= self._max_age:
                async with self._db.session() as session:
                    row = (await session.execute(_READ)).one()
                self._snapshot = OperationsSnapshot(*row)
                self._read_at = time.monotonic()
            return self._snapshot
