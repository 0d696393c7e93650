"""Dead letters: a job that fails on every attempt (the PSP unreachable) lands in the queue's
dead letters, raises an alert on a loopback alert receiver, is listed and replayed with
`ramparts dlq`, run as an operator runs it, against a real worker process."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from pydantic import SecretStr

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments.jobs import EVENT_TASK
from ramparts.payments.processing import EventState, process_event
from ramparts.payments.psp import StripePsp
from ramparts.payments.sandbox import Sandbox
from ramparts.payments.webhook_secrets import WebhookSecrets
from tests.payments.flows import (
    VISA,
    AlertReceiver,
    book_intact,
    deliver,
    entries,
    event_state,
    intent_event,
    jobs_of,
    make_tenant,
    new_payment,
    payment_row,
    wait_for,
    worker_env,
    worker_running,
)
from tests.test_cli import RAMPARTS

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def db(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    return make_database()


@pytest.fixture(scope="module")
def client(
    db: DatabaseUrls, kms: Kms, serve_module_app: Callable[..., httpx.Client]
) -> httpx.Client:
    WebhookSecrets(kms).rotate(SecretStr(SECRET), overlap_seconds=0)
    return serve_module_app(database_urls=db)


@pytest.fixture
async def database(db: DatabaseUrls) -> AsyncIterator[Database]:
    database = Database(db.app, pool_size=2)
    yield database
    await database.dispose()


@pytest.fixture
def alerts() -> Iterator[AlertReceiver]:
    receiver = AlertReceiver()
    yield receiver
    receiver.close()


def closed_port() -> int:
    """A loopback port nothing listens on: the PSP, unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dlq(home: Path, db: DatabaseUrls, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RAMPARTS, "dlq", *args],
        env=worker_env(home, db),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def listed(home: Path, db: DatabaseUrls) -> list[dict[str, Any]]:
    result = dlq(home, db, "list", "--json")
    assert result.returncode == 0, result.stderr
    letters: list[dict[str, Any]] = json.loads(result.stdout)["dead_letters"]
    return letters


async def test_a_job_failing_every_attempt_is_dead_lettered_alerted_and_replayed(
    db: DatabaseUrls,
    client: httpx.Client,
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    alerts: AlertReceiver,
    sandbox: Sandbox,
    tmp_path: Path,
) -> None:
    tenant = make_tenant(db)
    first = await new_payment(database, psp, buyer, tenant, card=VISA)
    second = await new_payment(database, psp, buyer, tenant, card=VISA)
    documents = [intent_event("payment_intent.succeeded", tenant, p) for p in (first, second)]
    unreachable = f"http://127.0.0.1:{closed_port()}"
    with worker_running(
        tmp_path,
        db,
        psp_api_base=unreachable,
        job_max_attempts="2",
        job_retry_seconds="0.1",
        alert_webhook_url=alerts.url,
    ) as worker:
        for document in documents:
            assert deliver(client, document, SECRET)["status"] == "stored"
        wait_for(
            lambda: all(
                [status for _, status, _ in jobs_of(db, d["id"])] == ["failed"] for d in documents
            ),
            within=90,
            what="both jobs dead-lettered",
        )
        wait_for(lambda: len(alerts.received) == 2, within=10, what="two alerts")
    assert "PspError" in worker.output()  # the failed attempts, logged
    jobs = {d["id"]: jobs_of(db, d["id"])[0][0] for d in documents}
    # The alerts: one per dead letter, naming ids and counts, never the event's payload.
    by_event = {alert["details"]["event_id"]: alert for alert in alerts.received}
    assert set(by_event) == set(jobs)
    for event_id, alert in by_event.items():
        assert alert["kind"] == "dead_letter"
        assert alert["details"] == {
            "job_id": jobs[event_id],
            "task": EVENT_TASK,
            "attempts": 2,
            "error": "PspError",
            "event_id": event_id,
        }
        assert str(first.psp_id) not in json.dumps(alert)
        assert str(tenant) not in json.dumps(alert)
    for payment in (first, second):
        assert payment_row(db, payment)[:2] == ("processing", False)
        assert entries(db, payment) == []
    letters = listed(tmp_path, db)
    assert [(d["job_id"], d["event_id"]) for d in letters] == [
        (jobs[d["id"]], d["id"]) for d in documents
    ]
    for letter in letters:
        assert (letter["task"], letter["attempts"], letter["error"]) == (EVENT_TASK, 2, "PspError")
        assert letter["failed_at"]
    table = dlq(tmp_path, db, "list")
    assert table.returncode == 0
    assert "2 dead letter(s)" in table.stdout

    # Meanwhile the second event was processed another way (an operator, another job).
    state = await process_event(database, lambda: psp, tenant, documents[1]["id"])
    assert state is EventState.PROCESSED
    replayed = dlq(tmp_path, db, "replay", "--all", "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"replayed": sorted(jobs.values())}
    assert listed(tmp_path, db) == []
    with worker_running(tmp_path, db, psp_api_base=sandbox.api_base):
        wait_for(
            lambda: all(jobs_of(db, d["id"])[0][1] == "succeeded" for d in documents),
            what="both replays run",
        )
    assert payment_row(db, first)[:2] == ("succeeded", True)
    assert payment_row(db, first)[2] == documents[0]["id"]
    for payment in (first, second):
        assert [kind for kind, _ in entries(db, payment)] == ["deposit"]  # once each
    assert all(event_state(db, d["id"]) == "processed" for d in documents)
    assert book_intact(db, tenant)
    assert len(alerts.received) == 2  # nothing failed again


def test_replay_names_dead_letters_or_all_and_refuses_others(
    db: DatabaseUrls, tmp_path: Path
) -> None:
    for args, message in (
        ((), "name the jobs to replay, or --all (not both)"),
        (("1", "--all"), "name the jobs to replay, or --all (not both)"),
        (("987654321",), "not in the dead-letter queue: 987654321"),
    ):
        result = dlq(tmp_path, db, "replay", *args)
        assert result.returncode == 2, result
        assert result.stderr.strip() == f"ramparts: error: {message}"
    not_a_number = dlq(tmp_path, db, "replay", "abc")
    assert not_a_number.returncode == 2
    for command in (("--help",), ("list", "--help"), ("replay", "--help")):
        helped = dlq(tmp_path, db, *command)
        assert helped.returncode == 0
        assert "dead" in helped.stdout.lower()


def test_worker_help_and_bad_concurrency(tmp_path: Path) -> None:
    helped = subprocess.run(
        [RAMPARTS, "worker", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert helped.returncode == 0
    assert "--concurrency" in helped.stdout
    refused = subprocess.run(
        [RAMPARTS, "worker", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2


def test_the_worker_stops_on_sigterm(db: DatabaseUrls, tmp_path: Path, sandbox: Sandbox) -> None:
    with worker_running(tmp_path, db, psp_api_base=sandbox.api_base) as worker:
        pass
    assert worker.process.returncode == 0, worker.output()
    assert "worker_stopped" in worker.output()
