"""PSP webhook deliveries as the drills send them: signed the way Stripe signs
(`Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`), or forged, stale, replayed or
altered by one byte, to the instance's `POST /webhooks/psp`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

import httpx

from ramparts.tabletop.target import Target

__all__ = ["WEBHOOK_PATH", "altered_byte", "deliver", "event", "signature"]

WEBHOOK_PATH = "/webhooks/psp"


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header of `body` under `secret` at `timestamp` (now)."""
    moment = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={mac}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """A Stripe event object of type `kind` carrying `obj`."""
    return {
        "id": event_id or f"evt_drill_{secrets.token_hex(12)}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def altered_byte(body: bytes) -> bytes:
    """`body` with one byte changed (a digit of the first number, else the last byte), still
    valid JSON where it can be: what a tamperer would change, an amount."""
    for index, byte in enumerate(body):
        if 0x30 <= byte <= 0x39:
            return body[:index] + bytes([0x30 + (byte - 0x30 + 1) % 10]) + body[index + 1 :]
    return body[:-1] + bytes([body[-1] ^ 0x01])


def deliver(
    target: Target,
    body: bytes | dict[str, Any],
    *,
    header: str | None = None,
    secret: str | None = None,
    timestamp: int | None = None,
) -> httpx.Response:
    """POST `body` to the webhook endpoint, signed with `header` when given, else with
    `secret` (default: the instance's own webhook secret) at `timestamp`."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if header is None:
        header = signature(secret if secret is not None else target.webhook_secret, raw, timestamp)
    with target.client() as client:
        return client.post(
            WEBHOOK_PATH,
            content=raw,
            headers={"Stripe-Signature": header, "Content-Type": "application/json"},
        )
