"""The durable queue end to end: PSP events delivered over HTTP (by localstripe itself, or
signed with stripe-python's scheme), stored and deferred by the webhook route, processed by a
real `ramparts worker` process, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import stripe
from alembic import command
from procrastinate import App, JobContext
from procrastinate import sql as procrastinate_sql
from procrastinate.jobs import Job
from pydantic import SecretStr

from ramparts.alerts import Alerter
from ramparts.apps import installed_apps, migration_branches
from ramparts.config import Settings
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.db.migrate import _config, upgrade
from ramparts.payments.jobs import (
    EVENT_TASK,
    PERIODIC,
    BackoffWithJitter,
    WorkerRuntime,
    event_lock,
    job_app,
    opened_jobs,
    recover_stalled_jobs,
    sweep_psp_events,
)
from ramparts.payments.psp import StripePsp
from ramparts.payments.psp_events import PspEvents, parse_event
from ramparts.payments.records import Payment
from ramparts.payments.sandbox import Sandbox
from ramparts.payments.webhook_secrets import WebhookSecrets
from tests.payments.flows import (
    VISA,
    VISA_3DS,
    PspProxy,
    WorkerProcess,
    attempt_outcome,
    book_intact,
    deliver,
    entries,
    event_state,
    intent_event,
    jobs_of,
    make_tenant,
    new_payment,
    owner_query,
    payment_row,
    wait_for,
    worker_running,
)

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + secrets.token_urlsafe(24)
#: Short enough for a test to see a dead worker's jobs taken back within seconds.
FAST = {"worker_stalled_seconds": "2", "job_retry_seconds": "0.2"}


@pytest.fixture(scope="module")
def db(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    return make_database()


@pytest.fixture(scope="module")
def client(
    db: DatabaseUrls, kms: Kms, serve_module_app: Callable[..., httpx.Client]
) -> httpx.Client:
    WebhookSecrets(kms).rotate(SecretStr(SECRET), overlap_seconds=0)
    return serve_module_app(database_urls=db)


@pytest.fixture(scope="module")
def quiet_db(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    """A database no long-running worker serves: tests that start and stop their own."""
    return make_database()


@pytest.fixture(scope="module")
def quiet_client(
    quiet_db: DatabaseUrls, client: httpx.Client, serve_module_app: Callable[..., httpx.Client]
) -> httpx.Client:
    return serve_module_app(database_urls=quiet_db)


@pytest.fixture(scope="module")
def delivered(client: httpx.Client, sandbox: Sandbox) -> Iterator[None]:
    """The sandbox delivers its own signed events to the live server while the module runs."""
    hook = f"worker-{secrets.token_hex(4)}"
    sandbox.register_webhook(hook, f"{client.base_url}/webhooks/psp", SECRET)
    yield
    sandbox.register_webhook(hook, f"{client.base_url}/webhooks/psp", SECRET, events=["none"])


@pytest.fixture
async def database(db: DatabaseUrls) -> AsyncIterator[Database]:
    database = Database(db.app, pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def worker(
    db: DatabaseUrls, sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One worker for the module's flows, on the sandbox."""
    home = tmp_path_factory.mktemp("worker")
    with worker_running(
        home, db, "--concurrency", "4", psp_api_base=sandbox.api_base, **FAST
    ) as running:
        yield running


def paid_within(db: DatabaseUrls, payment: Payment, seconds: float = 30) -> None:
    wait_for(lambda: payment_row(db, payment)[1], within=seconds, what="the payment paid")


async def test_a_payment_delivered_by_the_psp_is_confirmed_by_the_worker(
    db: DatabaseUrls,
    client: httpx.Client,
    delivered: None,
    worker: WorkerProcess,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    tenant = make_tenant(db)
    # Paid at once: the sandbox sends `payment_intent.succeeded` to the live server itself.
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    try:
        paid_within(db, payment)
    except AssertionError:
        print(worker.output(), owner_query(db, "SELECT * FROM procrastinate_jobs"))
        raise
    status, paid, confirmed_by = payment_row(db, payment)
    assert (status, paid) == ("succeeded", True)
    assert confirmed_by is not None
    assert event_state(db, confirmed_by) == "processed"
    assert [status for _, status, _ in jobs_of(db, confirmed_by)] == ["succeeded"]
    charge = (await psp.retrieve_payment_intent(tenant, str(payment.psp_id))).latest_charge
    assert entries(db, payment) == [("deposit", charge)]
    assert attempt_outcome(db, payment) == ("succeeded", None)
    assert book_intact(db, tenant)


async def test_a_duplicate_delivery_is_processed_once(
    db: DatabaseUrls,
    client: httpx.Client,
    worker: WorkerProcess,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    tenant = make_tenant(db)
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    document = intent_event("payment_intent.succeeded", tenant, payment)
    answers = [deliver(client, document, SECRET)["status"] for _ in range(5)]
    assert answers == ["stored"] + ["duplicate"] * 4
    paid_within(db, payment)
    wait_for(lambda: event_state(db, document["id"]) == "processed", what="processed")
    assert [status for _, status, _ in jobs_of(db, document["id"])] == ["succeeded"]
    assert [kind for kind, _ in entries(db, payment)] == ["deposit"]
    assert book_intact(db, tenant)


async def test_a_signed_succeeded_event_for_an_unpaid_intent_pays_nothing(
    db: DatabaseUrls,
    client: httpx.Client,
    worker: WorkerProcess,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
) -> None:
    tenant = make_tenant(db)
    unpaid = await new_payment(database, psp, buyer, tenant, card=None)
    lie = intent_event("payment_intent.succeeded", tenant, unpaid)
    assert deliver(client, lie, SECRET)["status"] == "stored"
    wait_for(lambda: event_state(db, lie["id"]) == "processed", what="processed")
    assert payment_row(db, unpaid) == ("requires_payment_method", False, None)
    assert entries(db, unpaid) == []


async def test_a_3ds_payment_is_paid_only_after_authentication(
    db: DatabaseUrls,
    client: httpx.Client,
    delivered: None,
    worker: WorkerProcess,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    sandbox: Sandbox,
) -> None:
    tenant = make_tenant(db)
    payment = await new_payment(database, psp, buyer, tenant, card=VISA_3DS)
    # The sandbox sends nothing for a challenge; Stripe sends `requires_action`, and a
    # forged `succeeded` is answered by what the PSP says.
    for event_type in ("payment_intent.requires_action", "payment_intent.succeeded"):
        document = intent_event(event_type, tenant, payment, status="requires_action")
        assert deliver(client, document, SECRET)["status"] == "stored"
        wait_for(lambda: event_state(db, document["id"]) == "processed", what="processed")  # noqa: B023
    assert payment_row(db, payment) == ("requires_action", False, None)
    assert attempt_outcome(db, payment) == ("requires_action", None)
    sandbox.authenticate(str(payment.psp_id))  # the sandbox then sends `succeeded` itself
    paid_within(db, payment)
    assert attempt_outcome(db, payment) == ("succeeded", None)
    assert [kind for kind, _ in entries(db, payment)] == ["deposit"]
    assert book_intact(db, tenant)


async def test_a_worker_killed_mid_job_is_replaced_and_the_deposit_is_posted_once(
    quiet_db: DatabaseUrls,
    quiet_client: httpx.Client,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    sandbox: Sandbox,
    tmp_path: Path,
) -> None:
    tenant = make_tenant(quiet_db)
    database = Database(quiet_db.app, pool_size=1)
    try:
        payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    finally:
        await database.dispose()
    proxy = PspProxy(sandbox.api_base)
    # The job confirms the payment, then asks the PSP for the charge: held there, mid-job.
    proxy.hold = "/v1/charges/"
    try:
        with worker_running(tmp_path / "first", quiet_db, psp_api_base=proxy.url, **FAST) as first:
            document = intent_event("payment_intent.succeeded", tenant, payment)
            assert deliver(quiet_client, document, SECRET)["status"] == "stored"
            assert proxy.held.wait(30), first.output()
            [(job_id, status, _)] = jobs_of(quiet_db, document["id"])
            assert status == "doing"
            first.kill()  # SIGKILL: no goodbye, its transaction never commits
        assert first.process.returncode == -9
        assert payment_row(quiet_db, payment)[:2] == ("processing", False)
        assert event_state(quiet_db, document["id"]) == "pending"
        proxy.release()
        with worker_running(tmp_path / "second", quiet_db, psp_api_base=proxy.url, **FAST):
            paid_within(quiet_db, payment)
            wait_for(lambda: jobs_of(quiet_db, document["id"])[0][1] == "succeeded", what="done")
    finally:
        proxy.close()
    assert [job for job, _, _ in jobs_of(quiet_db, document["id"])] == [
        job_id
    ]  # the same job, again
    history = [
        row[0]
        for row in owner_query(
            quiet_db,
            "SELECT type::text FROM procrastinate_events "
            "WHERE job_id = %s AND type <> 'scheduled' ORDER BY id",
            job_id,
        )
    ]
    assert history == ["deferred", "started", "deferred_for_retry", "started", "succeeded"]
    assert [kind for kind, _ in entries(quiet_db, payment)] == ["deposit"]
    assert book_intact(quiet_db, tenant)


async def test_an_event_stored_without_its_job_is_deferred_by_the_sweep(
    quiet_db: DatabaseUrls,
    quiet_client: httpx.Client,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    psp_kms: Kms,
) -> None:
    tenant = make_tenant(quiet_db)
    database = Database(quiet_db.app, pool_size=1)
    payment = await new_payment(database, psp, buyer, tenant, card=VISA)
    # The runtime role may not defer for a moment: the delivery still succeeds, the event is
    # stored, no job is made.
    with psycopg.connect(libpq(quiet_db.owner), autocommit=True) as conn:
        conn.execute("REVOKE INSERT ON procrastinate_jobs FROM ramparts_app")
        try:
            document = intent_event("payment_intent.succeeded", tenant, payment)
            assert deliver(quiet_client, document, SECRET)["status"] == "stored"
        finally:
            conn.execute("GRANT INSERT ON procrastinate_jobs TO ramparts_app")
        # A second one, as if the process died between storing and deferring.
        crashed = intent_event("payment_intent.succeeded", tenant, payment)
        await PspEvents(database).store(parse_event(crashed), signed_at=int(time.time()))
        await database.dispose()
        assert jobs_of(quiet_db, document["id"]) == jobs_of(quiet_db, crashed["id"]) == []
        async with opened_jobs(quiet_db.app) as app:
            context = _context(app)
            assert await sweep_psp_events(context, timestamp=0) == 0  # too recent to sweep
            conn.execute(
                "UPDATE psp_events SET received_at = received_at - interval '1 minute' "
                "WHERE event_id = ANY(%s)",
                ([document["id"], crashed["id"]],),
            )
            assert await sweep_psp_events(context, timestamp=0) == 2
            assert await sweep_psp_events(context, timestamp=0) == 0  # each has its job now
    for event_id in (document["id"], crashed["id"]):
        [(_, status, _)] = jobs_of(quiet_db, event_id)
        assert status == "todo"


def _context(app: App) -> JobContext:
    job = Job(id=0, queue="payments", lock=None, queueing_lock=None, task_name="sweep")
    return JobContext(app=app, job=job, start_timestamp=time.time(), abort_reason=lambda: None)


def test_the_retry_strategy_backs_off_exponentially_with_jitter() -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    strategy = BackoffWithJitter(max_attempts=5, base_seconds=2, cap_seconds=10, uniform=uniform)
    job = Job(queue="payments", lock=None, queueing_lock=None, task_name=EVENT_TASK)
    for attempts in range(4):
        decision = strategy.get_retry_decision(
            exception=RuntimeError(), job=job.evolve(attempts=attempts)
        )
        assert decision is not None
        assert decision.retry_at is not None
    assert draws == [(1, 2), (2, 4), (4, 8), (5, 10)]  # doubling, capped, from half to all
    assert strategy.get_retry_decision(exception=RuntimeError(), job=job.evolve(attempts=4)) is None
    real = BackoffWithJitter(base_seconds=8)
    waits = {round(real.delay(3), 6) for _ in range(50)}
    assert len(waits) > 40  # jittered
    assert all(16 <= wait <= 32 for wait in waits)


def test_the_job_app_knows_its_tasks_and_periodic_tasks() -> None:
    assert EVENT_TASK in job_app.tasks
    periodic = {task.task.name for task in job_app.periodic_registry.periodic_tasks.values()}
    assert periodic == {
        "ramparts.payments.sweep_psp_events",
        "ramparts.payments.remove_old_jobs",
        "ramparts.payments.reconcile_yesterday",
    }
    assert set(PERIODIC.values()) == periodic  # the one place that names them
    # Only a worker given the owner's URL listens to the reconciliation's queue.
    assert job_app.tasks["ramparts.payments.reconcile_yesterday"].queue == "payments-owner"
    assert event_lock("evt_1") == "psp_event:evt_1"


async def test_jobs_of_a_lost_worker_are_taken_back_once(
    quiet_db: DatabaseUrls, psp_kms: Kms
) -> None:
    """Two workers recovering at once take back a dead worker's job once."""
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(quiet_db.owner), autocommit=True) as conn:
        worker_id = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()
        assert worker_id is not None
        job = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args, status, "
            "worker_id) VALUES ('payments', %s, %s, %s, 'doing', %s) RETURNING id",
            (
                EVENT_TASK,
                event_lock("evt_lost"),
                psycopg.types.json.Jsonb({"tenant_id": str(tenant), "event_id": "evt_lost"}),
                worker_id[0],
            ),
        ).fetchone()
        assert job is not None
    database = Database(quiet_db.app, pool_size=1)
    runtime = WorkerRuntime(database, psp_kms, Settings(), Alerter(None))
    async with opened_jobs(quiet_db.app) as app:
        taken = await asyncio.gather(
            recover_stalled_jobs(app, runtime, 30), recover_stalled_jobs(app, runtime, 30)
        )
    await database.dispose()
    assert sorted(taken) == [0, 1]
    assert owner_query(
        quiet_db, "SELECT status::text, attempts FROM procrastinate_jobs WHERE id = %s", job[0]
    ) == [("todo", 1)]


def test_the_runtime_role_holds_only_what_the_queue_needs(quiet_db: DatabaseUrls) -> None:
    # What procrastinate's own queries call, read from the installed package.
    called = {
        name
        for query in procrastinate_sql.queries.values()
        for name in re.findall(r"\b(procrastinate_\w+)\(", query)
    }
    functions = owner_query(
        quiet_db,
        "SELECT proname::text, has_function_privilege('ramparts_app', oid, 'EXECUTE'), "
        "has_function_privilege('public', oid, 'EXECUTE') FROM pg_proc "
        "WHERE proname LIKE 'procrastinate%%'",
    )
    assert {name for name, _, _ in functions} > called  # triggers' functions too
    for name, runtime, public in functions:
        assert runtime == (name in called), name
        assert not public, name
    with psycopg.connect(libpq(quiet_db.app), autocommit=True) as conn:
        for statement in (
            "TRUNCATE procrastinate_jobs",
            "DELETE FROM procrastinate_events",
            "UPDATE procrastinate_events SET type = 'failed'",
            "DELETE FROM job_failures",
            "SELECT procrastinate_retry_job_v1(1, now(), NULL, NULL, NULL)",
            "DROP TABLE procrastinate_jobs",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_jobs_migration_goes_down_and_up_again(
    make_database: Callable[..., DatabaseUrls],
) -> None:
    urls = make_database()
    config = _config(urls.owner, migration_branches(installed_apps().values()))
    command.downgrade(config, "0023_payment_records")
    left = owner_query(
        urls,
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'procrastinate%%' "
        "UNION ALL SELECT count(*) FROM pg_proc WHERE proname LIKE 'procrastinate%%' "
        "UNION ALL SELECT count(*) FROM pg_type WHERE typname LIKE '%%procrastinate%%'",
    )
    assert left == [(0,), (0,), (0,)]
    upgrade(urls, migration_branches(installed_apps().values()))
    assert owner_query(urls, "SELECT to_regclass('procrastinate_jobs') IS NOT NULL") == [(True,)]
