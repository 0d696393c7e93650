"""The sandbox PSP: localstripe, a stateful fake Stripe, run as a child process.

localstripe is GPL-3.0, so it is never imported: it runs as its own program (`localstripe
--port N`, from the `sandbox` extra) and the Stripe SDK talks to it over HTTP exactly as it
talks to Stripe, only its API base differs. This module starts it on a free port, waits until
it answers, registers webhooks with it and stops it.

Two properties of localstripe shape what this module does:

- It keeps its state in one fixed file (`/tmp/localstripe.pickle`) shared by every instance on
  the machine. It is always started with `--from-scratch`, so an instance never loads what
  another left there (it still writes the file; nothing here reads it).
- It binds `::` (every interface; it has no option for the address). The SDK and the tests
  reach it on 127.0.0.1 only, but the port is open to the network too: run the sandbox only on
  a development or test machine (it holds nothing but test data, and `RAMPARTS_PSP=sandbox` is
  a dev setting).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

__all__ = [
    "SANDBOX_API_KEY",
    "SANDBOX_PUBLISHABLE_KEY",
    "TEST_CARDS",
    "Sandbox",
    "SandboxError",
    "authenticate",
    "register_webhook",
]

#: The API key the sandbox is called with: localstripe accepts any `sk_test_` key.
SANDBOX_API_KEY = "sk_test_ramparts_sandbox"
#: The publishable key the payer's page hands the sandbox's Stripe.js (any `pk_` key).
SANDBOX_PUBLISHABLE_KEY = "pk_test_ramparts_sandbox"
#: Stripe's public test cards, by what they do (the sandbox knows the same numbers). Only
#: ever sent to the sandbox, the way the payer's browser sends a card to the PSP; never to
#: Ramparts, which refuses any request holding one (PAY-1). `declined` is declined when
#: charged (Stripe's "decline after attaching"): localstripe accepts its best-known declined
#: card, 4000000000000002, and charges it.
TEST_CARDS = {
    "visa": "4242424242424242",
    "declined": "4000000000000341",
    "3ds": "4000002760003184",
}
_LOOPBACK = "127.0.0.1"
_PROGRAM = "localstripe"


class SandboxError(RuntimeError):
    """The sandbox could not be started, reached or configured."""


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _program() -> str:
    """localstripe's executable: beside this interpreter (the virtualenv that has the extra),
    else on PATH."""
    beside = Path(sys.executable).with_name(_PROGRAM)
    if beside.is_file():
        return str(beside)
    found = shutil.which(_PROGRAM)
    if found is None:
        raise SandboxError("localstripe is not installed (the `sandbox` extra)")
    return found


def register_webhook(
    api_base: str, webhook_id: str, url: str, secret: str, *, events: list[str] | None = None
) -> None:
    """Have the sandbox at `api_base` (this module's child, or one started elsewhere) deliver
    its events to `url`, signed with `secret`. Registering an id again replaces that webhook;
    the sandbox keeps them in memory only, so a restarted sandbox is told again."""
    data: dict[str, str | list[str]] = {"url": url, "secret": secret}
    if events is not None:
        data["events[]"] = events
    try:
        response = httpx.post(
            f"{api_base}/_config/webhooks/{webhook_id}",
            data=data,
            auth=(SANDBOX_API_KEY, ""),
            timeout=5,
        )
    except httpx.TransportError:
        raise SandboxError(f"the sandbox at {api_base} does not answer") from None
    if response.status_code != 200:
        raise SandboxError(f"localstripe refused the webhook ({response.status_code})")


class Sandbox:
    """One localstripe process: `start()` (or `with Sandbox() as sandbox:`), then `api_base`
    for the SDK, `register_webhook` for deliveries, `stop()`."""

    def __init__(self, *, start_timeout: float = 15.0, avoid: frozenset[int] = frozenset()) -> None:
        self._start_timeout = start_timeout
        # Ports picked but not bound yet, such as the server's own: the OS may hand one of
        # them out again as "free" before its owner binds it.
        self._avoid = avoid
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def api_base(self) -> str:
        """The sandbox's API base, for `StripeClient(base_addresses={"api": ...})`."""
        if self._process is None:
            raise SandboxError("the sandbox is not running")
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it is started (None before and after)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Sandbox:
        if self._process is not None:
            raise SandboxError("the sandbox is already started")
        # The port is free when picked and localstripe binds it at once; a race with another
        # program taking it in between shows as the child exiting, reported below.
        self.port = _free_loopback_port()
        while self.port in self._avoid:
            self.port = _free_loopback_port()
        self._process = subprocess.Popen(  # noqa: S603 - a fixed program and arguments
            [_program(), "--port", str(self.port), "--from-scratch"],
            stdin=subprocess.DEVNULL,
            # Its access log names every request; nothing reads it, and a full pipe would
            # block the child.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        with httpx.Client(auth=(SANDBOX_API_KEY, ""), timeout=2) as client:
            while True:
                process = self._process
                if process is None or process.poll() is not None:
                    status = process.returncode if process is not None else None
                    raise SandboxError(f"localstripe exited with status {status} on start")
                try:
                    # An authenticated read of the balance: the API itself is up, not only the
                    # socket.
                    if client.get(f"{self.api_base}/v1/balance").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SandboxError(
                        f"localstripe did not answer within {self._start_timeout:g} s"
                    )
                time.sleep(0.05)

    def register_webhook(
        self, webhook_id: str, url: str, secret: str, *, events: list[str] | None = None
    ) -> None:
        """Have the sandbox deliver its events to `url`, signed with `secret` (Stripe's
        `Stripe-Signature` scheme). Registering an id again replaces that webhook."""
        register_webhook(self.api_base, webhook_id, url, secret, events=events)

    def authenticate(self, payment_intent_id: str) -> None:
        """Complete a 3D Secure challenge as the cardholder would (see `authenticate`)."""
        authenticate(self.api_base, payment_intent_id)

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 5 s) and reap it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.stop()


def authenticate(api_base: str, payment_intent_id: str, *, success: bool = True) -> None:
    """Complete (or, with `success=False`, fail) the 3D Secure challenge of an intent in
    `requires_action`, as the cardholder would: localstripe's own endpoint, reached at the
    sandbox's `api_base` (with Stripe the cardholder does this on the bank's page)."""
    response = httpx.post(
        f"{api_base}/v1/payment_intents/{payment_intent_id}/_authenticate",
        data={
            "success": "true" if success else "false",
            "client_secret": _client_secret(api_base, payment_intent_id),
        },
        auth=(SANDBOX_API_KEY, ""),
        timeout=5,
    )
    if response.status_code != 200:
        raise SandboxError(f"localstripe refused the authentication ({response.status_code})")


def _client_secret(api_base: str, payment_intent_id: str) -> str:
    response = httpx.get(
        f"{api_base}/v1/payment_intents/{payment_intent_id}",
        auth=(SANDBOX_API_KEY, ""),
        timeout=5,
    )
    if response.status_code != 200:
        raise SandboxError(f"no such payment intent in the sandbox ({response.status_code})")
    secret: str = response.json()["client_secret"]
    return secret
