"""The sandbox PSP that `ramparts demo` and `ramparts serve` run beside the server
(`ramparts.runtime.serve(beside=sandbox_psp)`: entered once the server's checks have passed).

Under `RAMPARTS_PSP=sandbox` (the default outside prod) `sandbox_psp` starts localstripe as a
child process on loopback (`ramparts.payments.sandbox`), unless `RAMPARTS_PSP_API_BASE` already
names a sandbox, and makes it one the server can use as it uses Stripe:

- the KMS holds the sandbox's API key (`psp/stripe/api-key`) when it held none (a key already
  there is kept: it is the operator's);
- the sandbox signs its events with the KMS's current webhook secret (the one `seed-demo
  --json` prints as `webhook_secret`) and delivers them to `{public_url}/webhooks/psp`;
- the settings it yields point the runtime at the sandbox (`psp_api_base`); `serve` hands them
  to every worker process.

The child is stopped when the block ends: the server stopped, Ctrl-C (SIGINT), SIGTERM (the
CLI turns it into an exit that unwinds) or a start that failed. Under `RAMPARTS_PSP=stripe`
nothing is started and the settings are yielded as they are.

A rotation of the webhook secret (`ramparts psp webhook-secret rotate`) while the server runs
is not told to the sandbox: it signs with the previous secret, accepted for the rotation's
overlap; restart the server to give it the new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr

from ramparts.config import PspBackend, Settings
from ramparts.crypto.backends import open_kms
from ramparts.crypto.kms import Kms
from ramparts.payments.psp import API_KEY_SECRET
from ramparts.payments.sandbox import SANDBOX_API_KEY, Sandbox, register_webhook
from ramparts.payments.webhook_secrets import WebhookSecrets

__all__ = ["WEBHOOK_ID", "sandbox_psp"]

#: The sandbox's name for the server's webhook endpoint (registering it again replaces it).
WEBHOOK_ID = "ramparts"
#: Where the server takes the PSP's events (`ramparts.payments.webhooks.WEBHOOK_PATH`).
_WEBHOOK_PATH = "/webhooks/psp"

log = structlog.get_logger(__name__)


def _prepare(settings: Settings, kms: Kms, api_base: str) -> None:
    """The key in the KMS and the webhook registered, for the sandbox at `api_base`."""
    # create_only: a key already stored (or stored meanwhile by another process) is kept.
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY), create_only=True)
    secret = WebhookSecrets(kms).ensure()
    register_webhook(
        api_base,
        WEBHOOK_ID,
        f"{settings.public_url}{_WEBHOOK_PATH}",
        secret.get_secret_value(),
    )


@contextmanager
def sandbox_psp(settings: Settings, kms: Kms | None = None) -> Iterator[Settings]:
    """Run the sandbox PSP for as long as the block runs (see the module docstring); yields
    the settings the server must use. `kms` defaults to the one the settings name."""
    if settings.psp is not PspBackend.SANDBOX:
        yield settings
        return
    if kms is None:
        kms = open_kms(settings)
    if settings.psp_api_base is not None:  # one started elsewhere: used, not owned
        _prepare(settings, kms, settings.psp_api_base)
        yield settings
        return
    # The server binds its public port after this starts: never take that one.
    with Sandbox(avoid=frozenset({urlsplit(settings.public_url).port or 0})) as sandbox:
        _prepare(settings, kms, sandbox.api_base)
        log.info("psp_sandbox_started", api_base=sandbox.api_base, pid=sandbox.pid)
        try:
            yield settings.model_copy(update={"psp_api_base": sandbox.api_base})
        finally:
            log.info("psp_sandbox_stopping", api_base=sandbox.api_base)
