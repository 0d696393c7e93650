"""PAY-4's webhook half on a running instance: which deliveries `POST /webhooks/psp` takes
(signed with its secret, fresh) and which it refuses (forged, stale, from the future, unsigned,
malformed, one byte altered), and a rotation of its secrets done as its operator: a second
secret is made current, deliveries signed with either are taken, the list is then put back
as it was, and the drill's secret is refused again.

The deliveries that are taken carry an event type the runtime does not act on: it answers
them (`ignored`) and stores nothing, so the instance keeps no trace of them."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ramparts.payments.webhook_secrets import (
    DEFAULT_OVERLAP_SECONDS,
    PREFIX,
    REFRESH_SECONDS,
    SECRET_NAME,
    WebhookSecrets,
)
from ramparts.tabletop.conformance.answers import problem_type, said
from ramparts.tabletop.target import DrillError, Operator, Target
from ramparts.tabletop.webhooks import WEBHOOK_PATH, altered_byte, deliver, event, signature

__all__ = ["REFUSED", "Rotation", "Seen", "deliveries", "rotation"]

REFUSED = "signature-refused"
#: How long a server may take to see the KMS's new list (it re-reads it every few seconds).
SEEN_WITHIN = 2 * REFRESH_SECONDS + 2
_TOLERANCE = 300  # seconds: Stripe's, and the runtime's


def _harmless() -> dict[str, Any]:
    """An event the runtime takes and acts on in no way (a type it does not keep)."""
    return event(
        "customer.created", {"id": f"cus_drill{secrets.token_hex(6)}", "object": "customer"}
    )


def _raw(target: Target, body: bytes, header: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    with target.client() as client:
        return client.post(WEBHOOK_PATH, content=body, headers=headers)


def _stranger() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass
class Seen:
    """Deliveries and what they got: `held` when the answer was the expected one."""

    held: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)

    def expect(self, answer: httpx.Response, what: str, *, accepted: bool) -> None:
        ok = (
            answer.is_success
            if accepted
            else (answer.status_code == 400 and problem_type(answer) == REFUSED)
        )
        (self.held if ok else self.broken).append(said(answer, f"{what}: POST {WEBHOOK_PATH}"))


def deliveries(target: Target) -> Seen:
    """One delivery of each kind, signed or not as its name says."""
    seen = Seen()
    now = int(time.time())
    secret = target.webhook_secret
    body = json.dumps(_harmless()).encode()
    seen.expect(deliver(target, body), "signed with its secret", accepted=True)
    seen.expect(
        deliver(target, body, secret=_stranger()), "forged (another secret)", accepted=False
    )
    stale, ahead = now - 2 * _TOLERANCE, now + 2 * _TOLERANCE
    seen.expect(deliver(target, body, timestamp=stale), "stale (10 min old)", accepted=False)
    seen.expect(deliver(target, body, timestamp=ahead), "from 10 min ahead", accepted=False)
    seen.expect(_raw(target, body, None), "no Stripe-Signature", accepted=False)
    seen.expect(_raw(target, body, "not a signature"), "malformed header", accepted=False)
    seen.expect(_raw(target, body, f"t={now}"), "no v1 signature", accepted=False)
    money = json.dumps(
        event(
            "payment_intent.succeeded",
            {"id": f"pi_drill{secrets.token_hex(6)}", "object": "payment_intent", "amount": 15000},
        )
    ).encode()
    header = signature(secret, money, now)
    seen.expect(
        _raw(target, altered_byte(money), header), "one byte altered (the amount)", accepted=False
    )
    return seen


@dataclass
class Rotation:
    """What a rotation done as the operator showed."""

    seen: Seen = field(default_factory=Seen)
    waited: list[float] = field(default_factory=list)
    restored: bool = False


def _until(check: Callable[[], httpx.Response], *, accepted: bool) -> tuple[httpx.Response, float]:
    """Deliver until the answer is the expected one (the server re-reads its secrets every
    few seconds), for at most `SEEN_WITHIN`; the last answer and the seconds it took."""
    began = time.monotonic()
    while True:
        answer = check()
        if answer.is_success == accepted or time.monotonic() - began > SEEN_WITHIN:
            return answer, time.monotonic() - began
        time.sleep(0.25)


def rotation(target: Target, operator: Operator) -> Rotation:
    """Rotate the instance's webhook secrets in its KMS, deliver under both, put the list
    back (see the module docstring)."""
    found = Rotation()
    store = WebhookSecrets(operator.kms)
    before = operator.kms.read_secret(SECRET_NAME)
    current = store.current()
    if before is None or current is None:
        raise DrillError("the operator's KMS holds no webhook secret")
    if not secrets.compare_digest(current.get_secret_value(), target.webhook_secret):
        raise DrillError("the operator's KMS is not this instance's (its current secret differs)")
    old = current.get_secret_value()

    def signed(secret: str) -> Callable[[], httpx.Response]:
        return lambda: deliver(target, json.dumps(_harmless()).encode(), secret=secret)

    fresh, _ = store.rotate(overlap_seconds=DEFAULT_OVERLAP_SECONDS)
    new = fresh.get_secret_value()
    try:
        answer, waited = _until(signed(new), accepted=True)
        found.waited.append(waited)
        found.seen.expect(answer, "rotated: signed with the new secret", accepted=True)
        found.seen.expect(signed(old)(), "rotated: signed with the previous one", accepted=True)
        both = json.dumps(_harmless()).encode()
        now = int(time.time())
        header = f"{signature(new, both, now)},v1={signature(old, both, now).split('v1=')[1]}"
        found.seen.expect(_raw(target, both, header), "rotated: one v1 per secret", accepted=True)
        found.seen.expect(signed(_stranger())(), "rotated: another secret", accepted=False)
    finally:
        operator.kms.write_secret(SECRET_NAME, before)
        found.restored = True
    answer, waited = _until(signed(new), accepted=False)
    found.waited.append(waited)
    found.seen.expect(answer, "put back: signed with the drill's secret", accepted=False)
    found.seen.expect(signed(old)(), "put back: signed with the instance's", accepted=True)
    return found
