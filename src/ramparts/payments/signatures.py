"""Stripe's `Stripe-Signature` scheme, checked on the raw body before anything parses it.

The header is `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…][,v0=…]`: the PSP signs
`"<t>." + body` with the endpoint's secret, one `v1` per secret it signs with while a secret
is rolled. This is stripe-python's own check (`stripe.WebhookSignature.verify_header`: the
same signed string, the same HMAC, a constant-time comparison) with three differences, each
stricter: the body is compared as bytes (no decoding first), a header that is not exactly
`key=value` pairs with one integer `t` is refused rather than half-read, and a timestamp too
far in the future is refused as well as a stale one (a replay window in both directions).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from hashlib import sha256

__all__ = [
    "MAX_HEADER_CHARS",
    "TOLERANCE_SECONDS",
    "SignatureRefusal",
    "SignatureRefused",
    "verify",
]

#: Stripe's default tolerance (`stripe.Webhook.DEFAULT_TOLERANCE`).
TOLERANCE_SECONDS = 300
#: Far more than a header signed with a few secrets needs; a longer one is refused unread.
MAX_HEADER_CHARS = 2048
SCHEME = "v1"
_HEX = frozenset("0123456789abcdef")


class SignatureRefusal(Enum):
    """Why a delivery was refused, in words the sender can act on (the values are `detail`)."""

    MISSING = "the Stripe-Signature header is missing"
    MALFORMED = "the Stripe-Signature header is malformed: expected t=<unix time>,v1=<hex>"
    NO_V1 = "the Stripe-Signature header has no v1 signature"
    STALE = f"the Stripe-Signature timestamp is more than {TOLERANCE_SECONDS} s from now"
    MISMATCH = "no v1 signature matches the body under any active webhook secret"
    NO_SECRET = "no webhook secret is active; run `ramparts psp webhook-secret rotate`"  # noqa: S105


class SignatureRefused(Exception):  # noqa: N818 - a refusal, not a fault
    def __init__(self, refusal: SignatureRefusal) -> None:
        super().__init__(refusal.value)
        self.refusal = refusal


@dataclass(frozen=True)
class Signed:
    """A verified delivery: when the PSP signed it, and the index of the secret that did."""

    timestamp: int
    secret_index: int


def _parse(header: str) -> tuple[int, list[str]]:
    if len(header) > MAX_HEADER_CHARS:
        raise SignatureRefused(SignatureRefusal.MALFORMED)
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        # No whitespace is allowed around items: Stripe sends none, and its own parser would
        # not read " v1" as v1 either.
        key, equals, value = item.partition("=")
        if not equals or not value or not (key.isascii() and key.isalnum()):
            raise SignatureRefused(SignatureRefusal.MALFORMED)
        if key == "t":
            timestamps.append(value)
        elif key == SCHEME:
            signatures.append(value)
        # Other schemes (v0, Stripe's test-mode one) are not ours to trust: skipped.
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise SignatureRefused(SignatureRefusal.MALFORMED)
    if len(timestamps[0]) > 12:  # far beyond any real clock: refused before int()
        raise SignatureRefused(SignatureRefusal.STALE)
    if not signatures:
        raise SignatureRefused(SignatureRefusal.NO_V1)
    return int(timestamps[0]), signatures


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[bytes],
    *,
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> Signed:
    """The delivery's signature time if one `v1` signature in `header` is the HMAC of
    `t.body` under one of `secrets` and `t` is within `tolerance` of `now`; else
    `SignatureRefused` naming the first rule broken (header, time, then signature)."""
    if header is None or not header.strip():
        raise SignatureRefused(SignatureRefusal.MISSING)
    timestamp, signatures = _parse(header)
    if abs(now - timestamp) > tolerance:
        raise SignatureRefused(SignatureRefusal.STALE)
    if not secrets:
        raise SignatureRefused(SignatureRefusal.NO_SECRET)
    # Only well-formed candidates are compared; the comparison itself is constant-time.
    candidates = [s.encode() for s in signatures if len(s) == 64 and set(s) <= _HEX]
    signed = str(timestamp).encode() + b"." + body
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret, signed, sha256).hexdigest().encode()
        # Every candidate is compared (no early exit), so timing tells nothing about which.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
        if matched:
            return Signed(timestamp, index)
    raise SignatureRefused(SignatureRefusal.MISMATCH)
