"""The dead-letter queue (PAY-4): jobs that failed on every attempt, and their replay.

A dead letter is a procrastinate job in status `failed` (`ramparts.payments.jobs`). Listing
shows its id, task, the PSP event it was for, how many times it ran, the error class of its
last failed attempt and when that was; never the event's payload. Replaying puts it back in
the queue for one more run; a job whose event was processed meanwhile does nothing when it
runs (processing is exactly once by event id). If it fails again it is a dead letter again,
with a new alert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from procrastinate import App

__all__ = ["DeadLetter", "NotDeadLetteredError", "dead_letters", "replay"]

_LIST = """
SELECT j.id, j.task_name, j.args, j.attempts, f.error,
       coalesce(f.failed_at, (SELECT max(e.at) FROM procrastinate_events e
                              WHERE e.job_id = j.id AND e.type = 'failed')) AS failed_at
FROM procrastinate_jobs j LEFT JOIN job_failures f ON f.job_id = j.id
WHERE j.status = 'failed' AND (%(ids)s::bigint[] IS NULL OR j.id = ANY(%(ids)s::bigint[]))
ORDER BY j.id
"""


class NotDeadLetteredError(Exception):
    """A job asked for is not in the dead-letter queue (no such job, or not failed)."""


@dataclass(frozen=True)
class DeadLetter:
    job_id: int
    task: str
    event_id: str | None
    attempts: int
    error: str | None  # the last failed attempt's error class
    failed_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "task": self.task,
            "event_id": self.event_id,
            "attempts": self.attempts,
            "error": self.error,
            "failed_at": self.failed_at.isoformat() if self.failed_at else None,
        }


def _dead_letter(row: dict[str, Any]) -> DeadLetter:
    args = row["args"] if isinstance(row["args"], dict) else {}
    event_id = args.get("event_id")
    return DeadLetter(
        job_id=row["id"],
        task=row["task_name"],
        event_id=event_id if isinstance(event_id, str) else None,
        attempts=row["attempts"],
        error=row["error"],
        failed_at=row["failed_at"],
    )


async def dead_letters(app: App, job_ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """The dead-lettered jobs (of `job_ids` only, when given), oldest first."""
    rows = await app.connector.execute_query_all_async(
        _LIST, ids=list(job_ids) if job_ids is not None else None
    )
    return [_dead_letter(row) for row in rows]


async def replay(app: App, job_ids: Sequence[int] | None = None) -> list[DeadLetter]:
    """Put dead-lettered jobs back in the queue: `job_ids` (every one must be a dead letter,
    else nothing is replayed), or all of them. The ones replayed."""
    wanted = await dead_letters(app, job_ids)
    if job_ids is not None:
        missing = sorted(set(job_ids) - {letter.job_id for letter in wanted})
        if missing:
            raise NotDeadLetteredError(
                "not in the dead-letter queue: " + ", ".join(str(job) for job in missing)
            )
    for letter in wanted:
        await app.job_manager.retry_job_by_id_async(letter.job_id, retry_at=datetime.now(UTC))
    return wanted
