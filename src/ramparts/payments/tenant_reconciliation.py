"""What the reconciliation runs found about one tenant's books, as its runtime session reads
them (`tenant_reconciliation_runs`, migration 0028: only the tenant's own drift items)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.db.engine import driver_of

__all__ = ["MAX_RUNS", "TenantRun", "tenant_runs"]

#: The most runs one read returns (the function's own bound too).
MAX_RUNS = 100


@dataclass(frozen=True)
class TenantRun:
    """One run as the tenant sees it: `clean` when none of its items concerns the tenant."""

    id: uuid.UUID
    day: date
    started_at: datetime
    finished_at: datetime
    drift: list[dict[str, Any]]

    @property
    def status(self) -> str:
        return "drift" if self.drift else "clean"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "day": self.day.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "status": self.status,
            "drift_count": len(self.drift),
            "drift": self.drift,
        }


async def tenant_runs(session: AsyncSession, limit: int) -> list[TenantRun]:
    """The session tenant's view of the latest `limit` runs (at most `MAX_RUNS`), newest
    first."""
    driver = await driver_of(session)
    cursor = await driver.execute(
        "SELECT id, day, started_at, finished_at, drift FROM tenant_reconciliation_runs(%s)",
        (min(max(limit, 1), MAX_RUNS),),
    )
    return [TenantRun(*row) for row in await cursor.fetchall()]
