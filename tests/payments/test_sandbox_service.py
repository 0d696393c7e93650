"""The sandbox PSP beside `ramparts serve` and `ramparts demo`: a localstripe child started,
told the KMS's webhook secret and the server's address, and stopped with the server."""

from __future__ import annotations

import json
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import stripe
from pydantic import SecretStr

from ramparts.config import PspBackend, Settings
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.payments import sandbox as sandbox_module
from ramparts.payments.psp import API_KEY_SECRET
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox, SandboxError
from ramparts.payments.sandbox_service import sandbox_psp
from ramparts.payments.signatures import verify
from ramparts.payments.tenancy import tenant_metadata
from ramparts.payments.webhook_secrets import WebhookSecrets
from tests.conftest import free_port
from tests.live import temporary_kms
from tests.test_cli import RAMPARTS, owner_env, run, running

LOG_STARTED = re.compile(r"psp_sandbox_started\s+api_base=(\S+)\s+pid=(\d+)")


def _localstripe_children(process: psutil.Process) -> list[psutil.Process]:
    return [
        child
        for child in process.children(recursive=True)
        if any(part.endswith("localstripe") for part in child.cmdline())
    ]


def _gone(pid: int, within: float = 10) -> bool:
    """The process has exited and been reaped (not merely orphaned or a zombie)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                time.sleep(0.1)
                continue
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def _paid_intent(api_base: str, tenant: uuid.UUID) -> str:
    """A PaymentIntent of `tenant`'s paid at the sandbox with the visa test card, as the
    buyer's browser would pay it."""
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": api_base})
    intent = client.v1.payment_intents.create(
        params={
            "amount": 240_300,
            "currency": "eur",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": tenant_metadata(tenant),
        }
    )
    assert intent.status == "succeeded"
    return intent.id


def _stored_events(urls: DatabaseUrls, object_id: str, within: float = 20) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + within
    while True:
        with psycopg.connect(libpq(urls.owner), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tenant_id, event_type, state FROM psp_events WHERE object_id = %s "
                "ORDER BY event_type",
                (object_id,),
            ).fetchall()
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


# In-process: the context manager itself.


def test_under_stripe_nothing_is_started(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    settings = Settings(psp=PspBackend.STRIPE, home=tmp_path)  # type: ignore[call-arg]
    before = psutil.Process().children()
    with sandbox_psp(settings, kms) as used:
        assert used is settings
        assert psutil.Process().children() == before
    assert kms.read_secret(API_KEY_SECRET) is None  # the operator's to store
    assert WebhookSecrets(kms).current() is None


def test_the_sandbox_runs_for_the_block_and_stops_even_on_failure(tmp_path: Path) -> None:
    # Other tests of the run may keep sandboxes of their own (a session fixture): only the
    # children started here count.
    others = {child.pid for child in _localstripe_children(psutil.Process())}

    def started_here() -> list[psutil.Process]:
        return [c for c in _localstripe_children(psutil.Process()) if c.pid not in others]

    kms = temporary_kms(tmp_path)
    settings = Settings(home=tmp_path)  # type: ignore[call-arg]
    assert settings.psp is PspBackend.SANDBOX
    assert settings.psp_api_base is None
    with sandbox_psp(settings, kms) as used:
        assert used.psp_api_base is not None
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", used.psp_api_base)
        assert used.model_copy(update={"psp_api_base": None}) == settings
        (child,) = started_here()
        assert f"--port {used.psp_api_base.rsplit(':', 1)[1]}" in " ".join(child.cmdline())
        # The key the runtime reads is the sandbox's, and the webhook secret exists.
        assert kms.read_secret(API_KEY_SECRET) == SecretStr(SANDBOX_API_KEY)
        assert WebhookSecrets(kms).current() is not None
        answer = httpx.get(f"{used.psp_api_base}/v1/balance", auth=(SANDBOX_API_KEY, ""))
        assert answer.status_code == 200
    assert _gone(child.pid)

    class BoomError(Exception):
        pass

    children: list[psutil.Process] = []

    def fail_inside() -> None:
        with sandbox_psp(settings, kms):
            children.extend(started_here())
            raise BoomError

    with pytest.raises(BoomError):
        fail_inside()
    assert len(children) == 1
    assert _gone(children[0].pid)


def test_a_key_already_in_the_kms_is_kept(tmp_path: Path) -> None:
    kms = temporary_kms(tmp_path)
    theirs = SecretStr("sk_test_" + secrets.token_hex(12))
    kms.write_secret(API_KEY_SECRET, theirs)
    with sandbox_psp(Settings(home=tmp_path), kms):  # type: ignore[call-arg]
        assert kms.read_secret(API_KEY_SECRET) == theirs


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str | None]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers.get("Stripe-Signature")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, str | None]]]]:
    """A stand-in for the server's webhook endpoint: what reaches `{base}/webhooks/psp`."""
    received: list[tuple[bytes, str | None]] = []
    handler = type("Handler", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_a_sandbox_started_elsewhere_is_used_not_owned(
    tmp_path: Path, receiver: tuple[str, list[tuple[bytes, str | None]]]
) -> None:
    """RAMPARTS_PSP_API_BASE names a running sandbox: none is started, and that one is given
    the key's place in the KMS and the webhook, signed with the KMS's secret."""
    base, received = receiver
    kms = temporary_kms(tmp_path)
    with Sandbox() as theirs:
        settings = Settings(  # type: ignore[call-arg]
            home=tmp_path, psp_api_base=theirs.api_base, public_url=base
        )
        before = {child.pid for child in psutil.Process().children()}
        with sandbox_psp(settings, kms) as used:
            assert used is settings
            assert {child.pid for child in psutil.Process().children()} == before
            intent = _paid_intent(theirs.api_base, uuid.uuid4())
            deadline = time.monotonic() + 15
            while not any(intent.encode() in body for body, _ in received):
                assert time.monotonic() < deadline, "no delivery from the sandbox"
                time.sleep(0.1)
        assert theirs.running  # not ours to stop
    secret = WebhookSecrets(kms).active()
    body, header = next((body, header) for body, header in received if intent.encode() in body)
    verify(body, header, secret, now=time.time())  # raises when refused
    assert json.loads(body)["data"]["object"]["id"] == intent


def test_an_unreachable_sandbox_is_one_clear_error(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        home=tmp_path, psp_api_base=f"http://127.0.0.1:{free_port()}"
    )
    with (
        pytest.raises(SandboxError, match="does not answer"),
        sandbox_psp(settings, temporary_kms(tmp_path)),
    ):
        pass


# The real commands.


def test_serve_runs_the_sandbox_whose_signed_events_reach_it(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = owner_env(tmp_path, urls, RAMPARTS_PUBLIC_URL=base)
    assert run("migrate", env=env).returncode == 0
    seeded = run("seed-demo", "--json", env=env)
    assert seeded.returncode == 0, seeded.stderr
    report = json.loads(seeded.stdout)
    acme = uuid.UUID(next(t["id"] for t in report["tenants"] if t["slug"] == "acme"))
    with running("serve", "--port", str(port), env=env, url=f"{base}/readyz") as started:
        (child,) = _localstripe_children(psutil.Process(started.process.pid))
        api_base = "http://127.0.0.1:" + child.cmdline()[child.cmdline().index("--port") + 1]
        intent = _paid_intent(api_base, acme)
        events = _stored_events(urls, intent)
        assert "payment_intent.succeeded" in {row[1] for row in events}, events
        assert {(row[0], row[2]) for row in events} == {(acme, "pending")}
    assert started.process.returncode == 128 + signal.SIGTERM
    logged = LOG_STARTED.search(re.sub(r"\x1b\[[0-9;]*m", "", started.output))
    assert logged is not None, started.output
    assert (logged[1], int(logged[2])) == (api_base, child.pid)
    assert _gone(child.pid), "the sandbox outlived the server"
    # The webhook was signed with the secret seed-demo printed (the one the KMS holds).
    assert report["webhook_secret"].startswith("whsec_")


def test_serve_under_stripe_starts_no_sandbox(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    port = free_port()
    env = owner_env(tmp_path, urls, RAMPARTS_PSP="stripe")
    with running("serve", "--port", str(port), env=env, url=f"http://127.0.0.1:{port}/healthz") as (
        started
    ):
        assert _localstripe_children(psutil.Process(started.process.pid)) == []
    assert "psp_sandbox_started" not in started.output


def test_a_failed_start_stops_the_sandbox(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), env=owner_env(tmp_path, urls))
    assert result.returncode != 0
    logged = LOG_STARTED.search(re.sub(r"\x1b\[[0-9;]*m", "", result.stderr + result.stdout))
    assert logged is not None, result.stderr
    assert _gone(int(logged[2])), "the sandbox outlived a server that could not start"


def test_demo_prints_the_sandbox_and_stops_it_on_ctrl_c(
    tmp_path: Path, make_database: Callable[..., DatabaseUrls]
) -> None:
    urls = make_database(migrate=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [RAMPARTS, "demo", "--port", str(port)],
        env=owner_env(tmp_path, urls),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "demo did not answer"
            time.sleep(0.2)
        (child,) = _localstripe_children(psutil.Process(process.pid))
        api_base = "http://127.0.0.1:" + child.cmdline()[child.cmdline().index("--port") + 1]
        process.send_signal(signal.SIGINT)  # Ctrl-C
        output = process.communicate(timeout=30)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert f"Sandbox PSP (localstripe) at {api_base}\n" in output
    assert f"delivering signed events to {base}/webhooks/psp\n" in output
    assert _gone(child.pid), "the sandbox outlived the demo"


def test_the_sandbox_never_takes_the_port_the_server_is_about_to_bind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server's port is picked before the sandbox starts and bound after it: the OS may
    offer that port to the sandbox as free, and the server would then fail to bind."""
    server_port = 40_737
    offered = iter([server_port, server_port])
    real = sandbox_module._free_loopback_port
    monkeypatch.setattr(
        sandbox_module, "_free_loopback_port", lambda: next(offered, None) or real()
    )
    with Sandbox(avoid=frozenset({server_port})) as sandbox:
        assert sandbox.port not in (server_port, 0)
        assert httpx.get(f"{sandbox.api_base}/v1/balance", auth=(SANDBOX_API_KEY, "")).is_success
