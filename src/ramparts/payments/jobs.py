"""The durable job queue (PAY-4): procrastinate on the runtime's PostgreSQL.

`job_app` is the one procrastinate `App`; its tasks and periodic tasks are all declared here,
so a worker knows every task a job can name. Jobs live in the runtime's database (migration
0024_jobs) and the worker connects as the runtime role.

- A verified PSP event is deferred as a `process_psp_event` job in the transaction that stores
  it (`defer_psp_event`), under a savepoint: both commit together, and a failure to defer
  leaves the event stored for the sweep. Each event's job holds the lock `event_lock(id)` as
  its queueing lock and its job lock: one waiting and one running job per event at most.
- A failed job is retried with exponential backoff and jitter (`BackoffWithJitter`: the n-th
  retry waits a random time in [d/2, d], d = `job_retry_seconds` x 2^(n-1), at most an hour)
  until `job_max_attempts` runs. Then it stays `failed`: that is the dead-letter queue
  (`ramparts.payments.dead_letters`, `ramparts dlq`), and a `dead_letter` alert is raised
  (job id, task, event id, attempts, error class; never the event's payload).
- Each failed attempt's error class is kept in `job_failures` (never its message).
- A worker that dies mid-job (a crash, SIGKILL, a lost host) stops its heartbeat; every
  worker takes back, every `worker_stalled_seconds / 2`, the running jobs of workers silent
  for longer than `worker_stalled_seconds`, and retries them like a failed attempt (or
  dead-letters them when that was the last). Processing is exactly once by event id
  (`ramparts.payments.processing`), so a job run twice changes nothing the second time.
- Periodic tasks (`PERIODIC`, registered below, in this one place): the sweep of pending
  events no job holds, every minute; the removal of succeeded jobs older than 30 days, daily;
  the reconciliation of the previous day with the PSP, daily at 01:30 UTC (a worker given the
  owner's URL: `ramparts worker` and the demo's).
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
import structlog
from procrastinate import App, JobContext, PsycopgConnector
from procrastinate import exceptions as procrastinate_errors
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.worker import Worker
from psycopg.rows import dict_row
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.alerts import Alerter, AlertKind
from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, driver_of, libpq
from ramparts.payments.processing import process_event
from ramparts.payments.psp import StripePsp
from ramparts.payments.reconcile import reconcile_day

__all__ = [
    "EVENT_LOCK_PREFIX",
    "EVENT_TASK",
    "PERIODIC",
    "STALE_EVENT_SECONDS",
    "BackoffWithJitter",
    "WorkerLostError",
    "WorkerRuntime",
    "WorkerThread",
    "configure_retries",
    "defer_psp_event",
    "event_lock",
    "job_app",
    "opened_jobs",
    "process_psp_event",
    "recover_stalled_jobs",
    "run_worker",
    "sweep_psp_events",
]

log = structlog.get_logger(__name__)

#: The lock of a PSP event's job (migration 0024_jobs's sweep looks for the same prefix).
EVENT_LOCK_PREFIX: Final = "psp_event:"
EVENT_TASK: Final = "ramparts.payments.process_psp_event"
SWEEP_TASK: Final = "ramparts.payments.sweep_psp_events"
CLEANUP_TASK: Final = "ramparts.payments.remove_old_jobs"
RECONCILE_TASK: Final = "ramparts.payments.reconcile_yesterday"
QUEUE: Final = "payments"
#: The daily reconciliation's queue: only a worker given the owner's URL listens to it, so
#: every other worker holds no more than the runtime role.
OWNER_QUEUE: Final = "payments-owner"
#: A pending event older than this with no job is deferred by the sweep (the webhook route
#: defers in the storing transaction; only a crash or a refused defer leaves one behind).
STALE_EVENT_SECONDS: Final = 30.0
SWEEP_BATCH: Final = 500
#: How long succeeded jobs are kept (failed ones stay: they are the dead-letter queue).
KEEP_SUCCEEDED_HOURS: Final = 30 * 24
#: The longest wait between two attempts.
MAX_RETRY_SECONDS: Final = 3600.0
#: How long a stopping worker lets its running jobs finish before it cancels them (they are
#: then retried).
SHUTDOWN_SECONDS: Final = 30.0
#: The worker's PSP calls: a bounded wait (the event row and the payment are locked meanwhile).
PSP_TIMEOUT_SECONDS: Final = 10.0
#: Where a job finds the worker's services (procrastinate's `additional_context`).
RUNTIME_KEY: Final = "ramparts"


def event_lock(event_id: str) -> str:
    """The queueing lock and job lock of `event_id`'s job."""
    return EVENT_LOCK_PREFIX + event_id


class WorkerLostError(Exception):
    """The worker running the job stopped answering (its heartbeat is stale)."""


@dataclass
class BackoffWithJitter(BaseRetryStrategy):
    """Retry until `max_attempts` runs, waiting a random time in [d/2, d] before the n-th
    retry, d = `base_seconds` x 2^(n-1) capped at `cap_seconds`: exponential so a PSP outage
    is not hammered, jittered so jobs failed together do not retry together."""

    max_attempts: int = 8
    base_seconds: float = 15.0
    cap_seconds: float = MAX_RETRY_SECONDS
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False)

    def delay(self, attempts: int) -> float:
        """The wait after the `attempts`-th failed run (1 for the first)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(attempts - 1, 62))
        return self.uniform(ceiling / 2, ceiling)

    def is_final(self, job: Job) -> bool:
        """Whether the run of `job` going on now is its last."""
        return job.attempts + 1 >= self.max_attempts

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if self.is_final(job):
            return None
        wait = timedelta(seconds=self.delay(job.attempts + 1))
        return RetryDecision(retry_at=datetime.now(UTC) + wait)


job_app = App(connector=PsycopgConnector())


@dataclass
class WorkerRuntime:
    """What jobs use: the runtime-role database, the PSP (made on first use), alerts."""

    database: Database
    kms: Kms
    settings: Settings
    alerter: Alerter
    #: The owner's URL, for the daily reconciliation only (it reads every tenant's books and
    #: writes the owner-only report); None: this worker does not reconcile.
    owner_url: URL | None = None
    _psp: StripePsp | None = None

    def psp(self) -> StripePsp:
        if self._psp is None:
            self._psp = StripePsp.from_kms(
                self.kms, api_base=self.settings.psp_api_base, timeout=PSP_TIMEOUT_SECONDS
            )
        return self._psp

    async def aclose(self) -> None:
        psp, self._psp = self._psp, None
        if psp is not None:
            await psp.aclose()


def _runtime(context: JobContext) -> WorkerRuntime:
    runtime = context.additional_context.get(RUNTIME_KEY)
    if not isinstance(runtime, WorkerRuntime):
        raise TypeError("the job runs outside a ramparts worker (no WorkerRuntime)")
    return runtime


@job_app.task(name=EVENT_TASK, queue=QUEUE, pass_context=True, retry=BackoffWithJitter())
async def process_psp_event(context: JobContext, tenant_id: str, event_id: str) -> str:
    """Process one stored PSP event (`ramparts.payments.processing`); what became of it."""
    runtime = _runtime(context)
    outcome = await process_event(runtime.database, runtime.psp, uuid.UUID(tenant_id), event_id)
    return str(outcome)


def configure_retries(settings: Settings) -> BackoffWithJitter:
    """Retry PSP event jobs as `settings` says (the worker calls this once at start)."""
    strategy = BackoffWithJitter(settings.job_max_attempts, settings.job_retry_seconds)
    process_psp_event.retry_strategy = strategy
    return strategy


async def defer_psp_event(session: AsyncSession, tenant_id: uuid.UUID, event_id: str) -> int | None:
    """Defer `event_id`'s job in `session`'s transaction (the one that stored the event),
    under a savepoint: a refusal rolls back the defer only and is raised. None when a job of
    the event is already waiting."""
    driver = await driver_of(session)
    async with driver.transaction():  # a savepoint inside the storing transaction
        try:
            job_id: int = await process_psp_event.configure(
                lock=event_lock(event_id), queueing_lock=event_lock(event_id), connection=driver
            ).defer_async(tenant_id=str(tenant_id), event_id=event_id)
        except procrastinate_errors.AlreadyEnqueued:
            return None
    return job_id


async def _defer_now(tenant_id: uuid.UUID, event_id: str) -> int | None:
    """Defer `event_id`'s job on the open app's own connections."""
    try:
        job_id: int = await process_psp_event.configure(
            lock=event_lock(event_id), queueing_lock=event_lock(event_id)
        ).defer_async(tenant_id=str(tenant_id), event_id=event_id)
    except procrastinate_errors.AlreadyEnqueued:
        return None
    return job_id


_STALE_EVENTS = "SELECT tenant_id, event_id FROM ramparts_stale_psp_events(%(older)s, %(most)s)"


@job_app.periodic(cron="* * * * *", periodic_id="psp_events")
@job_app.task(name=SWEEP_TASK, queue=QUEUE, queueing_lock=SWEEP_TASK, pass_context=True)
async def sweep_psp_events(context: JobContext, timestamp: int) -> int:
    """Defer a job for every pending event older than `STALE_EVENT_SECONDS` that no job
    holds (stored, then the process died or the defer was refused); how many."""
    rows = await context.app.connector.execute_query_all_async(
        _STALE_EVENTS, older=STALE_EVENT_SECONDS, most=SWEEP_BATCH
    )
    deferred = 0
    for row in rows:
        if await _defer_now(row["tenant_id"], row["event_id"]) is not None:
            deferred += 1
    if deferred:
        log.warning("psp_events_swept", deferred=deferred, scheduled_at=timestamp)
    return deferred


@job_app.periodic(cron="17 3 * * *", periodic_id="old_jobs")
@job_app.task(name=CLEANUP_TASK, queue=QUEUE, queueing_lock=CLEANUP_TASK, pass_context=True)
async def remove_old_jobs(context: JobContext, timestamp: int) -> None:
    """Delete succeeded jobs finished more than `KEEP_SUCCEEDED_HOURS` ago (never a failed
    one: the dead-letter queue is emptied by replaying it)."""
    await context.app.job_manager.delete_old_jobs(nb_hours=KEEP_SUCCEEDED_HOURS)


@job_app.periodic(cron="30 1 * * *", periodic_id="reconciliation")
@job_app.task(
    name=RECONCILE_TASK, queue=OWNER_QUEUE, queueing_lock=RECONCILE_TASK, pass_context=True
)
async def reconcile_yesterday(context: JobContext, timestamp: int) -> str:
    """Reconcile the previous UTC day (at 01:30, once the day's events are processed): the
    report is stored and drift raises its alert (`ramparts.payments.reconcile`). A worker
    without the owner's URL cannot: the job fails, so its retries and the dead-letter alert
    say so instead of a silent gap (only such a worker listens to `OWNER_QUEUE`, so this is
    a wiring fault)."""
    runtime = _runtime(context)
    if runtime.owner_url is None:
        raise RuntimeError("this worker has no owner connection: it cannot reconcile")
    day = datetime.fromtimestamp(timestamp, UTC).date() - timedelta(days=1)
    report = await reconcile_day(runtime.owner_url, runtime.psp(), day, alerter=runtime.alerter)
    return "clean" if report.clean else f"{len(report.drift)} drift item(s)"


#: Every periodic task, by procrastinate's periodic id: a new one is declared above with
#: `@job_app.periodic` and named here.
PERIODIC: Final = {
    "psp_events": SWEEP_TASK,
    "old_jobs": CLEANUP_TASK,
    "reconciliation": RECONCILE_TASK,
}

# Dead letters: the failed attempt's error class, and the alert on the last one.

_RECORD_FAILURE = """
INSERT INTO job_failures (job_id, error, attempts) VALUES (%(job)s, %(error)s, %(attempts)s)
ON CONFLICT (job_id) DO UPDATE
SET error = EXCLUDED.error, attempts = EXCLUDED.attempts, failed_at = now()
"""


def _error_name(error: BaseException) -> str:
    return type(error).__name__


async def _dead_letter(app: App, runtime: WorkerRuntime, job: Job, error: BaseException) -> None:
    """Record the failed attempt of `job` and, if it was the last, raise the alert."""
    attempts = job.attempts + 1
    try:
        await app.connector.execute_query_async(
            _RECORD_FAILURE, job=job.id, error=_error_name(error), attempts=attempts
        )
    except Exception as exc:  # noqa: BLE001 - the failure itself is what matters
        log.warning("job_failure_not_recorded", job_id=job.id, error=_error_name(exc))
    task = app.tasks.get(job.task_name)
    if task is not None and task.get_retry_exception(error, job) is not None:
        return
    details: dict[str, Any] = {
        "job_id": job.id,
        "task": job.task_name,
        "attempts": attempts,
        "error": _error_name(error),
    }
    event_id = job.task_kwargs.get("event_id")
    if isinstance(event_id, str):
        details["event_id"] = event_id
    await runtime.alerter.raise_alert(
        AlertKind.DEAD_LETTER,
        f"job {job.id} ({job.task_name}) failed {attempts} time(s) and is dead-lettered",
        details,
    )


def _failure_middleware(runtime: WorkerRuntime) -> Callable[..., Awaitable[Any]]:
    async def record_failures(
        call_next: Callable[[], Awaitable[Any]], context: JobContext, _worker: Worker
    ) -> Any:
        try:
            return await call_next()
        except Exception as error:
            await _dead_letter(context.app, runtime, context.job, error)
            raise

    return record_failures


# Jobs of lost workers.

_STALLED = """
SELECT j.id, j.status, j.task_name, j.priority, j.lock, j.queueing_lock, j.args,
       j.scheduled_at, j.queue_name, j.attempts, j.worker_id
FROM procrastinate_jobs j LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
WHERE j.status = 'doing'
  AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(seconds)s))
ORDER BY j.id
FOR UPDATE OF j SKIP LOCKED
"""
_RETRY = "SELECT procrastinate_retry_job_v2(%(job)s, %(at)s, NULL, NULL, NULL)"
_FAIL = "SELECT procrastinate_finish_job_v1(%(job)s, 'failed', false)"


async def recover_stalled_jobs(app: App, runtime: WorkerRuntime, stalled_seconds: float) -> int:
    """Take back the running jobs of workers silent for more than `stalled_seconds` (or gone):
    each is retried as after a failed attempt, or dead-lettered when that was its last. One
    transaction, rows locked and skipped when another worker holds them: two workers never
    take back the same job. How many."""
    lost: list[Job] = []
    connector = app.connector
    if not isinstance(connector, PsycopgConnector):  # pragma: no cover - opened_jobs's
        raise TypeError("the job app is not on a psycopg connector")
    async with connector.pool.connection() as conn, conn.transaction():
        cursor = conn.cursor(row_factory=dict_row)
        await cursor.execute(_STALLED, {"seconds": stalled_seconds})
        for row in await cursor.fetchall():
            job = Job.from_row(row)
            task = app.tasks.get(job.task_name)
            decision = (
                task.get_retry_exception(WorkerLostError(), job) if task is not None else None
            )
            if decision is not None:
                at = decision.retry_decision.retry_at or datetime.now(UTC)
                await conn.execute(_RETRY, {"job": job.id, "at": at})
            else:
                await conn.execute(_FAIL, {"job": job.id})
            lost.append(job)
    for job in lost:
        log.warning("job_worker_lost", job_id=job.id, task=job.task_name, worker_id=job.worker_id)
        await _dead_letter(app, runtime, job, WorkerLostError())
    return len(lost)


async def _recover_forever(app: App, runtime: WorkerRuntime, stalled_seconds: float) -> None:
    while True:
        try:
            await recover_stalled_jobs(app, runtime, stalled_seconds)
        except Exception as exc:  # noqa: BLE001 - try again next round
            log.warning("stalled_jobs_recovery_failed", error=_error_name(exc))
        await asyncio.sleep(stalled_seconds / 2)


# Running a worker.


async def _autocommit(connection: psycopg.AsyncConnection[Any]) -> None:
    await connection.set_autocommit(True)


@asynccontextmanager
async def opened_jobs(app_url: URL, *, max_connections: int = 4) -> AsyncIterator[App]:
    """`job_app` on a pool of runtime-role connections (autocommit: each of procrastinate's
    queries is one statement), for the block."""
    connector = PsycopgConnector(
        conninfo=libpq(app_url),
        min_size=1,
        max_size=max_connections,
        configure=_autocommit,
        name="ramparts-jobs",
    )
    with job_app.replace_connector(connector):
        async with job_app.open_async():
            yield job_app


async def run_worker(
    settings: Settings,
    app_url: URL,
    kms: Kms,
    *,
    concurrency: int = 1,
    install_signal_handlers: bool = True,
    owner_url: URL | None = None,
) -> None:
    """Run a worker until it is stopped: by SIGINT or SIGTERM (with
    `install_signal_handlers`, from the moment it is called), or by cancelling the task
    running this. Running jobs then get `SHUTDOWN_SECONDS` to finish before they are
    cancelled and retried."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    stop = _StopOnSignals(enabled=install_signal_handlers)
    database = Database(app_url, pool_size=concurrency, max_overflow=1)
    runtime = WorkerRuntime(
        database, kms, settings, Alerter(settings.alert_webhook_url), owner_url=owner_url
    )
    stalled = settings.worker_stalled_seconds
    try:
        await database.verify_runtime_role()
        configure_retries(settings)
        async with opened_jobs(app_url, max_connections=concurrency + 3) as app:
            worker = Worker(
                app,
                name="ramparts",
                concurrency=concurrency,
                queues=[QUEUE, OWNER_QUEUE] if owner_url is not None else [QUEUE],
                additional_context={RUNTIME_KEY: runtime},
                worker_middleware=[_failure_middleware(runtime)],
                update_heartbeat_interval=stalled / 3,
                stalled_worker_timeout=stalled,
                shutdown_graceful_timeout=SHUTDOWN_SECONDS,
                install_signal_handlers=False,  # ours, installed earlier (`_StopOnSignals`)
            )
            recovery = asyncio.create_task(_recover_forever(app, runtime, stalled))
            try:
                if stop.bind(worker):
                    log.info("worker_started", concurrency=concurrency, periodic=sorted(PERIODIC))
                    await worker.run()  # type: ignore[no-untyped-call]
            finally:
                recovery.cancel()
                with suppress(asyncio.CancelledError):
                    await recovery
    finally:
        stop.uninstall()
        await runtime.aclose()
        await database.dispose()
        log.info("worker_stopped")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopOnSignals:
    """SIGINT and SIGTERM stop the worker gracefully, whenever they come: before it runs (it
    then never starts) or while it runs."""

    def __init__(self, *, enabled: bool) -> None:
        self._loop = asyncio.get_running_loop() if enabled else None
        self._requested = False
        self._worker: Worker | None = None
        # What to put back after: asyncio would leave the default handlers.
        self._previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
        if self._loop is not None:
            for signum in _STOP_SIGNALS:
                self._loop.add_signal_handler(signum, self._stop)

    def _stop(self) -> None:
        self._requested = True
        if self._worker is not None:
            self._worker.stop()  # type: ignore[no-untyped-call]

    def bind(self, worker: Worker) -> bool:
        """Stop `worker` on the next signal; False when one came already."""
        self._worker = worker
        return not self._requested

    def uninstall(self) -> None:
        if self._loop is not None:
            for signum, handler in self._previous.items():
                self._loop.remove_signal_handler(signum)
                signal.signal(signum, handler)


class WorkerThread:
    """A worker on a thread of its own (`ramparts demo`): started beside the server, stopped
    with it. Production runs `ramparts worker` processes instead."""

    def __init__(
        self, settings: Settings, app_url: URL, kms: Kms, *, owner_url: URL | None = None
    ) -> None:
        self._settings = settings
        self._app_url = app_url
        self._owner_url = owner_url
        self._kms = kms
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ramparts-worker", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            await run_worker(
                self._settings,
                self._app_url,
                self._kms,
                install_signal_handlers=False,
                owner_url=self._owner_url,
            )

        try:
            asyncio.run(main())
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("worker_thread_failed")
        finally:
            self._started.set()

    def start(self) -> WorkerThread:
        self._thread.start()
        self._started.wait(timeout=10)
        return self

    def stop(self, timeout: float = SHUTDOWN_SECONDS + 5) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(timeout)
