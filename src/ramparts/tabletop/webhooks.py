"""PSP webhook deliveries as the drills send them: signed the way Stripe signs
(`Stripe-Signature: t=<unix>,v1=<HMAC-SHA256 of "t.body">`), or forged, stale, replayed or
altered by one byte, to the instance's `POST /webhooks/psp`."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from typing import Any

import httpx

from ramparts.tabletop.target import Target

__all__ = ["DRILL_EVENT", "WEBHOOK_PATH", "altered_byte", "deliver", "event", "signature"]

WEBHOOK_PATH = "/webhooks/psp"
#: How the ids of the drills' own events begin (a PSP's never do).
DRILL_EVENT = "evt_drill_"
_AMOUNT = re.compile(rb'"amount"\s*:\s*-?([0-9])')


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header of `body` under `secret` at `timestamp` (now)."""
    moment = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{moment}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={moment},v1={mac}"


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """A Stripe event object of type `kind` carrying `obj`."""
    return {
        "id": event_id or f"{DRILL_EVENT}{secrets.token_hex(12)}",
        "object": "event",
        "type": kind,
        "created": int(time.time()),
        "livemode": False,
        "api_version": "2024-06-20",
        "data": {"object": obj},
    }


def altered_byte(body: bytes) -> bytes:
    """`body` with one byte changed, still valid JSON where it can be: a digit of the first
    `"amount"` value (what a tamperer would change), else of the first number, else the last
    byte."""
    amount = _AMOUNT.search(body)
    start = (
        amount.start(1)
        if amount
        else next((i for i, byte in enumerate(body) if 0x30 <= byte <= 0x39), None)
    )
    if start is None:
        return body[:-1] + bytes([body[-1] ^ 0x01])
    digit = body[start] - 0x30
    return body[:start] + bytes([0x30 + (digit + 1) % 10]) + body[start + 1 :]


def deliver(
    target: Target,
    body: bytes | dict[str, Any],
    *,
    header: str | None = None,
    secret: str | None = None,
    timestamp: int | None = None,
    signed: bool = True,
) -> httpx.Response:
    """POST `body` to the webhook endpoint, signed with `header` when given, else with
    `secret` (default: the instance's own webhook secret) at `timestamp`; with no
    `Stripe-Signature` header at all when not `signed`."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["Stripe-Signature"] = (
            header
            if header is not None
            else signature(secret if secret is not None else target.webhook_secret, raw, timestamp)
        )
    with target.client() as client:
        return client.post(WEBHOOK_PATH, content=raw, headers=headers)
