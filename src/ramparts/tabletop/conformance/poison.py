"""A poison job through the instance's durable queue (PAY-3's retries, PAY-4's dead letters).

The drill defers, as the runtime role the webhook route defers with, a PSP event job whose
tenant is not a tenant id: every run of it fails. Its worker retries it with its own backoff;
the drill, as an operator who will not wait half an hour, moves each retry's time to now
(and wakes the worker) once the worker has chosen it, so the waits the worker chose are
measured and every attempt really runs. After the last one the job is a dead letter: the
dead-letter list shows it and the instance's alert counter rises. Replayed (what `ramparts dlq
replay` does), it runs once more and is dead again, with a new alert. The drill then deletes
its job, so the queue is as it found it."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ramparts.payments.dead_letters import DeadLetter, dead_letters, replay
from ramparts.payments.jobs import EVENT_TASK, QUEUE, event_lock, opened_jobs, process_psp_event
from ramparts.tabletop.target import DrillError, Target

__all__ = ["PoisonRun", "alerts_raised", "poison_run"]

#: How long the whole run may take: every attempt runs at once when woken.
RUN_SECONDS = 60.0
_ALERTS = re.compile(r'^ramparts_alerts_total\{kind="dead_letter"\} (\S+)$', re.MULTILINE)
_CHANNELS = (f"procrastinate_queue_v1#{QUEUE}", "procrastinate_any_queue_v1")


@dataclass
class PoisonRun:
    """What the queue did with the poison job."""

    job_id: int
    event_id: str
    #: the waits the worker chose before each retry, in seconds, in order
    waits: list[float] = field(default_factory=list)
    attempts: int = 0
    letter: DeadLetter | None = None
    alerts_before: float | None = None
    alerts_dead: float | None = None
    replayed: bool = False
    attempts_after_replay: int = 0
    alerts_after_replay: float | None = None
    removed: bool = False

    def backoff_problem(self) -> str | None:
        """Why the waits are not an exponential backoff with jitter, or None when they are:
        each wait is drawn from [d/2, d] with d doubling, so every wait divided by 2^(n-1)
        lies within a factor of two of the others, and they are not all alike."""
        if len(self.waits) < 2:
            return f"{len(self.waits)} retry(ies) before the dead letter: no backoff to see"
        uncapped = [w / 2**n for n, w in enumerate(self.waits) if w < 1800]
        if len(uncapped) >= 2 and max(uncapped) > 2.05 * min(uncapped):
            return "the waits do not double from one retry to the next"
        if len({round(w, 3) for w in uncapped}) < len(uncapped):
            return "the waits are exactly proportional: no jitter"
        return None


def alerts_raised(target: Target) -> float | None:
    """The instance's `dead_letter` alert count from its metrics (None: not readable)."""
    with target.client() as client:
        answer = client.get("/metrics")
    if answer.status_code != 200:
        return None
    found = _ALERTS.search(answer.text)
    return float(found.group(1)) if found else 0.0


def _wake(conn: Any, job_id: int) -> None:
    """What the insert trigger does for a new job: tell the listening workers."""
    payload = json.dumps({"type": "job_inserted", "job_id": job_id})
    for channel in _CHANNELS:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def _state(conn: Any, job_id: int) -> tuple[str, int, datetime | None, datetime | None]:
    row = conn.execute(
        "SELECT j.status::text, j.attempts, j.scheduled_at, f.failed_at "
        "FROM procrastinate_jobs j LEFT JOIN job_failures f ON f.job_id = j.id WHERE j.id = %s",
        (job_id,),
    ).fetchone()
    if row is None:
        raise DrillError(f"job {job_id} left the queue")
    return row[0], row[1], row[2], row[3]


def _until_dead(target: Target, job_id: int, deadline: float, waits: list[float]) -> int:
    """Fast-forward each retry the worker schedules for `job_id` (its chosen wait goes to
    `waits`) until the job is dead-lettered; its attempts then."""
    with target.runtime() as conn:
        seen = _state(conn, job_id)[1]
        while time.monotonic() < deadline:
            status, attempts, scheduled, failed_at = _state(conn, job_id)
            if status == "failed":
                return attempts
            if status == "todo" and attempts > seen and scheduled and failed_at:
                waits.append((scheduled - failed_at).total_seconds())
                seen = attempts
                conn.execute(
                    "UPDATE procrastinate_jobs SET scheduled_at = now() "
                    "WHERE id = %s AND status = 'todo'",
                    (job_id,),
                )
                _wake(conn, job_id)
            time.sleep(0.05)
    raise DrillError(f"job {job_id} was not dead-lettered within {RUN_SECONDS:.0f} s")


def _wait_alert(target: Target, above: float | None, deadline: float) -> float | None:
    while True:
        count = alerts_raised(target)
        if count is None or above is None or count > above or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


async def _defer(target: Target, event_id: str) -> int:
    if target.urls is None:
        raise DrillError("the instance's database is not reachable from here")
    async with opened_jobs(target.urls.app, max_connections=1):
        job_id: int = await process_psp_event.configure(
            lock=event_lock(event_id), queueing_lock=event_lock(event_id)
        ).defer_async(tenant_id=f"drill-poison-{secrets.token_hex(4)}", event_id=event_id)
    return job_id


async def _letters(target: Target, job_id: int, *, again: bool) -> list[DeadLetter]:
    if target.urls is None:
        raise DrillError("the instance's database is not reachable from here")
    async with opened_jobs(target.urls.app, max_connections=1) as app:
        if again:
            return await replay(app, [job_id])
        return await dead_letters(app, [job_id])


def poison_run(target: Target) -> PoisonRun:
    """Run the poison job through retries, the dead-letter queue and a replay (see the
    module docstring); the job is removed afterwards whatever happened."""
    deadline = time.monotonic() + RUN_SECONDS
    event_id = f"evt_drill_poison_{secrets.token_hex(8)}"
    alerts = alerts_raised(target)
    run = PoisonRun(asyncio.run(_defer(target, event_id)), event_id, alerts_before=alerts)
    try:
        run.attempts = _until_dead(target, run.job_id, deadline, run.waits)
        letters = asyncio.run(_letters(target, run.job_id, again=False))
        run.letter = letters[0] if letters else None
        run.alerts_dead = _wait_alert(target, run.alerts_before, deadline)
        run.replayed = bool(asyncio.run(_letters(target, run.job_id, again=True)))
        if run.replayed:
            # The replayed run is woken like a new job (`retry_at` now): no wait to measure.
            with target.runtime() as conn:
                _wake(conn, run.job_id)
            run.attempts_after_replay = _until_dead(target, run.job_id, deadline, [])
            run.alerts_after_replay = _wait_alert(target, run.alerts_dead, deadline)
    finally:
        with target.runtime() as conn:
            removed = conn.execute(
                "DELETE FROM procrastinate_jobs WHERE id = %s AND task_name = %s "
                "AND status <> 'doing'",
                (run.job_id, EVENT_TASK),
            )
            run.removed = removed.rowcount == 1
    return run
