"""The daily reconciliation job: the worker's periodic task reconciles the previous UTC day
with the PSP and stores the run; a worker without the owner's URL refuses (the job fails, so
its retries and the dead-letter alert say so) instead of leaving a silent gap."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from procrastinate import JobContext
from procrastinate.jobs import Job

from ramparts.alerts import Alerter
from ramparts.config import Settings
from ramparts.db.engine import Database, libpq
from ramparts.payments.jobs import (
    PERIODIC,
    RUNTIME_KEY,
    WorkerRuntime,
    job_app,
    reconcile_yesterday,
)
from tests.conftest import cli_kms
from tests.payments.reconciliation import World

pytestmark = pytest.mark.anyio


def _context(runtime: WorkerRuntime) -> JobContext:
    return JobContext(
        app=job_app,
        job=Job(
            queue="ramparts", lock=None, queueing_lock=None, task_name=reconcile_yesterday.name
        ),
        start_timestamp=time.time(),
        additional_context={RUNTIME_KEY: runtime},
        abort_reason=lambda: None,
    )


async def test_the_daily_job_reconciles_yesterday_with_the_owner_only(
    world: World, tmp_path: object
) -> None:
    assert PERIODIC["reconciliation"] == reconcile_yesterday.name
    database = Database(world.urls.app, pool_size=1)
    kms = cli_kms(tmp_path)  # type: ignore[arg-type]
    try:
        runtime = WorkerRuntime(
            database, kms, Settings(), Alerter(None), owner_url=None, _psp=world.psp
        )
        now = int(datetime.now(UTC).timestamp())
        with pytest.raises(RuntimeError, match="no owner connection"):
            await reconcile_yesterday.func(_context(runtime), now)

        runtime.owner_url = world.urls.owner
        assert await reconcile_yesterday.func(_context(runtime), now) == "clean"
    finally:
        await database.dispose()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with psycopg.connect(libpq(world.urls.owner)) as owner:
        runs = owner.execute("SELECT day, status FROM reconciliation_runs").fetchall()
    assert runs == [(yesterday, "clean")]
