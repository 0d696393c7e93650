"""`ramparts psp webhook-secret`: the secrets PSP webhooks are signed with, kept in the KMS."""

from __future__ import annotations

import hashlib
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from ramparts.cli.common import JsonOption, UsageError, print_result
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.payments.webhook_secrets import (
    DEFAULT_OVERLAP_SECONDS,
    MAX_OVERLAP_SECONDS,
    WebhookSecret,
    WebhookSecrets,
)

__all__ = ["webhook_secret_app"]

webhook_secret_app = typer.Typer(
    help="The secrets PSP webhooks are signed with (kept in the KMS).", no_args_is_help=True
)


def _listed(stored: list[WebhookSecret], now: float) -> list[dict[str, Any]]:
    """Each secret as a fingerprint (never its value), its expiry, and whether it is active."""
    return [
        {
            "fingerprint": hashlib.sha256(s.value.get_secret_value().encode()).hexdigest()[:16],
            "expires_at": (
                None
                if s.expires_at is None
                else datetime.fromtimestamp(s.expires_at, UTC).isoformat()
            ),
            "active": s.active(now),
        }
        for s in stored
    ]


def _line(listed: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{s['fingerprint']}  "
        + ("current" if s["expires_at"] is None else f"valid until {s['expires_at']}")
        + ("" if s["active"] else " (expired)")
        for s in listed
    )


@webhook_secret_app.command("rotate")
def rotate(
    overlap: Annotated[
        int,
        typer.Option(
            "--overlap",
            help="Seconds the previous secret stays valid (0: refused at once; at most "
            f"{MAX_OVERLAP_SECONDS}).",
        ),
    ] = DEFAULT_OVERLAP_SECONDS,
    from_stdin: Annotated[
        bool,
        typer.Option(
            "--from-stdin",
            help="Read the new secret from standard input (the one the PSP made when its "
            "endpoint's secret was rolled); without it, one is made and printed once.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Make a new webhook secret current; the previous one is still accepted for --overlap
    seconds. Every server sees the change within seconds."""
    if not 0 <= overlap <= MAX_OVERLAP_SECONDS:
        raise UsageError(f"--overlap must be between 0 and {MAX_OVERLAP_SECONDS} seconds")
    given = SecretStr(sys.stdin.readline().strip()) if from_stdin else None
    store = WebhookSecrets(open_kms(load_settings()))
    now = time.time()
    fresh, stored = store.rotate(given, overlap_seconds=overlap, now=now)
    listed = _listed(stored, now)
    result: dict[str, Any] = {"secrets": listed}
    line = _line(listed)
    if given is None:  # made here: the operator must hand it to the PSP, so it is shown once
        result["secret"] = fresh.get_secret_value()
        line = f"new webhook secret (give it to the PSP): {fresh.get_secret_value()}\n{line}"
    print_result(result, as_json, line)


@webhook_secret_app.command("list")
def list_secrets(as_json: JsonOption = False) -> None:
    """The stored webhook secrets by fingerprint, newest first, with their expiry."""
    listed = _listed(WebhookSecrets(open_kms(load_settings())).stored(), time.time())
    print_result({"secrets": listed}, as_json, _line(listed) or "no webhook secret")
