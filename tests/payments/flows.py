"""Payments as the worker sees them, in tests: a payment at the PSP and in the runtime, signed
PSP events, a `ramparts worker` process, and loopback servers standing in for the PSP's
network (a proxy that holds or rewrites answers) and for an alert receiver."""

from __future__ import annotations

import http.server
import json
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import stripe
from pydantic import SecretStr
from sqlalchemy import text

from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.payments import records
from ramparts.payments.ledger_verify import verify_book
from ramparts.payments.psp import API_KEY_SECRET, StripePsp
from ramparts.payments.records import Payment
from ramparts.payments.sandbox import SANDBOX_API_KEY
from ramparts.payments.tenancy import tenant_metadata
from tests.conftest import cli_env, cli_kms
from tests.payments.helpers import card_payment_method
from tests.test_cli import RAMPARTS

VISA = "4242424242424242"
VISA_3DS = "4000002760003184"
DECLINED = "4000000000000341"  # declined when charged


def make_tenant(urls: DatabaseUrls) -> uuid.UUID:
    tenant = uuid.uuid4()
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tenants (id, slug, name, region) VALUES (%s, %s, 'Worker', 'eu')",
            (tenant, f"wk-{tenant.hex[:12]}"),
        )
    return tenant


async def new_payment(
    database: Database,
    psp: StripePsp,
    buyer: stripe.StripeClient,
    tenant: uuid.UUID,
    *,
    card: str | None,
    amount: int = 5000,
    currency: str = "eur",
) -> Payment:
    """A payment with its PaymentIntent at the PSP, paid with `card` (confirmed at once; a 3DS
    card then requires action), or waiting for a payment method; one attempt recorded."""
    async with database.tenant_session(tenant) as session:
        payment = await records.create(
            session,
            app="shop",
            subject=f"order-{secrets.token_hex(4)}",
            payer_id=uuid.uuid4(),
            requested_by=uuid.uuid4(),
            amount=amount,
            currency=currency,
        )
    intent = await psp.create_payment_intent(
        tenant,
        amount=amount,
        currency=currency,
        idempotency_key=str(payment.id),
        payment_method=card_payment_method(buyer, card) if card else None,
        confirm=card is not None,
    )
    async with database.tenant_session(tenant) as session:
        payment = await records.set_psp_id(session, payment, intent.id, intent.status)
        await session.execute(
            text(
                "INSERT INTO payment_attempts (tenant_id, payment_id, payer_id, amount, currency) "
                "VALUES (current_setting('app.tenant_id')::uuid, :payment, :payer, :amount, "
                ":currency)"
            ),
            {
                "payment": payment.id,
                "payer": payment.payer_id,
                "amount": amount,
                "currency": currency,
            },
        )
    return payment


def event(
    event_type: str,
    psp_object: dict[str, Any],
    *,
    created: int | None = None,
) -> dict[str, Any]:
    """A Stripe event about `psp_object` (which carries its tenant in its metadata)."""
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "api_version": "2024-06-20",
        "created": created or int(time.time()),
        "livemode": False,
        "type": event_type,
        "data": {"object": psp_object},
    }


def intent_event(
    event_type: str, tenant: uuid.UUID, payment: Payment, **fields: Any
) -> dict[str, Any]:
    """An event about `payment`'s PaymentIntent, saying what the caller wants it to say."""
    assert payment.psp_id is not None
    return event(
        event_type,
        {
            "id": payment.psp_id,
            "object": "payment_intent",
            "amount": payment.amount,
            "currency": payment.currency,
            "status": "succeeded",
            "metadata": tenant_metadata(tenant),
            **fields,
        },
    )


def signed(document: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and headers the PSP sends, signed by stripe-python's `WebhookSignature`."""
    body = json.dumps(document).encode()
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret)
    return body, {"Stripe-Signature": header, "Content-Type": "application/json"}


def deliver(client: httpx.Client, document: dict[str, Any], secret: str) -> dict[str, Any]:
    response = client.post("/webhooks/psp", **_as_post(*signed(document, secret)))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _as_post(body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    return {"content": body, "headers": headers}


# Reading what happened, as the owner.


def owner_query(urls: DatabaseUrls, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def payment_row(urls: DatabaseUrls, payment: Payment) -> tuple[str, bool, str | None]:
    """(status, paid, confirming event) of `payment` now."""
    rows = owner_query(
        urls,
        "SELECT status, confirmed_at IS NOT NULL, confirmed_by_event FROM payments WHERE id = %s",
        payment.id,
    )
    status, paid, confirmed_by = rows[0]
    return status, paid, confirmed_by


def attempt_outcome(urls: DatabaseUrls, payment: Payment) -> tuple[str, str | None]:
    rows = owner_query(
        urls,
        "SELECT outcome, decline_code FROM payment_attempts WHERE payment_id = %s",
        payment.id,
    )
    outcome, code = rows[0]
    return outcome, code


def event_state(urls: DatabaseUrls, event_id: str) -> str:
    return str(
        owner_query(urls, "SELECT state FROM psp_events WHERE event_id = %s", event_id)[0][0]
    )


def entries(urls: DatabaseUrls, payment: Payment) -> list[tuple[str, str]]:
    """(kind, reference) of every ledger entry of `payment`, in order."""
    return [
        (kind, reference)
        for kind, reference in owner_query(
            urls,
            "SELECT kind, reference FROM ledger_entries WHERE payment = %s ORDER BY seq",
            str(payment.id),
        )
    ]


def book_intact(urls: DatabaseUrls, tenant: uuid.UUID) -> bool:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
        report = verify_book(conn, tenant)
    assert report.intact, report.as_json()
    return True


def jobs_of(urls: DatabaseUrls, event_id: str) -> list[tuple[int, str, int]]:
    """(id, status, attempts) of the jobs of `event_id`."""
    return [
        (job_id, status, attempts)
        for job_id, status, attempts in owner_query(
            urls,
            "SELECT id, status::text, attempts FROM procrastinate_jobs WHERE lock = %s ORDER BY id",
            f"psp_event:{event_id}",
        )
    ]


def wait_for(check: Callable[[], bool], *, within: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within} s")
        time.sleep(0.1)


# A worker process.


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def worker_env(home: Path, urls: DatabaseUrls, **settings: str) -> dict[str, str]:
    """The environment of a CLI command on `urls`, its KMS holding the sandbox's API key."""
    cli_kms(home).write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    overrides = {f"RAMPARTS_{name.upper()}": value for name, value in settings.items()}
    return cli_env(home, RAMPARTS_DATABASE_URL=libpq(urls.owner), **overrides)


@contextmanager
def worker_running(
    home: Path, urls: DatabaseUrls, *args: str, **settings: str
) -> Iterator[WorkerProcess]:
    """`ramparts worker` on `urls`, started and ready; SIGTERM on the way out."""
    home.mkdir(parents=True, exist_ok=True)
    env = worker_env(home, urls, **settings)
    log = home / f"worker-{secrets.token_hex(3)}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [RAMPARTS, "worker", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = WorkerProcess(process, log)
    try:
        wait_for(
            lambda: "worker_started" in worker.output() or process.poll() is not None,
            within=60,
            what="the worker's start",
        )
        assert process.poll() is None, worker.output()
        yield worker
    finally:
        worker.stop()


# Loopback stand-ins.


@dataclass
class AlertReceiver:
    """An alert manager on loopback: the JSON bodies POSTed to it."""

    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PspProxy:
    """Forwards to the sandbox on loopback. Requests whose path starts with `hold` wait until
    `release()` (`held` is set when one arrives); `rewrite(path prefix, fields)` changes fields
    of the JSON answered for matching paths (what Stripe would answer and the sandbox cannot,
    such as a fee or a failed refund)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.hold: str | None = None
        self.held = threading.Event()
        self._released = threading.Event()
        self._rewrites: list[tuple[str, dict[str, Any]]] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("content-length", 0))))

            def _forward(self, body: bytes) -> None:
                if proxy.hold is not None and self.path.startswith(proxy.hold):
                    proxy.held.set()
                    proxy._released.wait(120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                content = proxy._rewritten(self.path, answer.content)
                try:
                    self.send_response(answer.status_code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the caller is gone (killed while we held its request)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rewrite(self, prefix: str, fields: dict[str, Any]) -> None:
        self._rewrites.append((prefix, fields))

    def _rewritten(self, path: str, content: bytes) -> bytes:
        found = [fields for prefix, fields in self._rewrites if path.startswith(prefix)]
        if not found:
            return content
        document = json.loads(content)
        for fields in found:
            _update(document, fields)
        return json.dumps(document).encode()

    def release(self) -> None:
        self.hold = None
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def _update(document: dict[str, Any], fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(document.get(key), dict):
            _update(document[key], value)
        else:
            document[key] = value
