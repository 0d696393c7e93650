"""`Stripe-Signature` verification, against headers made by stripe-python's own signing code."""

from __future__ import annotations

import time

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from ramparts.payments.signatures import (
    TOLERANCE_SECONDS,
    SignatureRefusal,
    SignatureRefused,
    verify,
)

SECRET = "whsec_" + "a" * 32
OLD_SECRET = "whsec_" + "b" * 32
BODY = b'{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}'
NOW = 1_800_000_000


def stripe_header(body: bytes, secret: str, timestamp: int = NOW) -> str:
    """The header Stripe sends, made by stripe-python's `WebhookSignature`."""
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp)


def refusal(body: bytes, header: str | None, secrets: list[str], now: float = NOW) -> str:
    with pytest.raises(SignatureRefused) as refused:
        verify(body, header, [s.encode() for s in secrets], now=now)
    return refused.value.refusal.name


def test_a_header_stripe_signs_is_accepted_with_its_time() -> None:
    signed = verify(BODY, stripe_header(BODY, SECRET), [SECRET.encode()], now=NOW + 299)
    assert signed.timestamp == NOW
    assert signed.secret_index == 0


def test_each_active_secret_is_tried() -> None:
    """During a rotation the PSP signs with either secret: both are accepted."""
    secrets = [SECRET.encode(), OLD_SECRET.encode()]
    assert verify(BODY, stripe_header(BODY, OLD_SECRET), secrets, now=NOW).secret_index == 1
    assert verify(BODY, stripe_header(BODY, SECRET), secrets, now=NOW).secret_index == 0


def test_a_header_with_a_signature_per_secret_matches_on_any() -> None:
    """Stripe sends one v1 per secret while an endpoint's secret is rolled."""
    old = stripe_header(BODY, OLD_SECRET).split(",")[1]
    header = stripe_header(BODY, "whsec_" + "c" * 32) + "," + old
    assert verify(BODY, header, [OLD_SECRET.encode()], now=NOW).timestamp == NOW


@pytest.mark.parametrize("position", [0, 1, len(BODY) // 2, len(BODY) - 1])
def test_one_changed_byte_is_refused(position: int) -> None:
    header = stripe_header(BODY, SECRET)
    changed = bytearray(BODY)
    changed[position] ^= 0x01
    assert refusal(bytes(changed), header, [SECRET]) == "MISMATCH"


def test_an_added_or_removed_byte_is_refused() -> None:
    header = stripe_header(BODY, SECRET)
    assert refusal(BODY + b" ", header, [SECRET]) == "MISMATCH"
    assert refusal(BODY[:-1], header, [SECRET]) == "MISMATCH"


def test_a_wrong_secret_is_refused() -> None:
    assert refusal(BODY, stripe_header(BODY, OLD_SECRET), [SECRET]) == "MISMATCH"


@pytest.mark.parametrize("offset", [-(TOLERANCE_SECONDS + 1), TOLERANCE_SECONDS + 1, 10**6])
def test_a_timestamp_more_than_300_s_off_is_refused(offset: int) -> None:
    """Stale or from the future: Stripe's own check refuses only stale ones."""
    header = stripe_header(BODY, SECRET, NOW + offset)
    assert refusal(BODY, header, [SECRET]) == "STALE"


@pytest.mark.parametrize("offset", [-TOLERANCE_SECONDS, TOLERANCE_SECONDS])
def test_a_timestamp_at_the_edge_of_the_window_is_accepted(offset: int) -> None:
    header = stripe_header(BODY, SECRET, NOW + offset)
    assert verify(BODY, header, [SECRET.encode()], now=NOW).timestamp == NOW + offset


def test_the_signed_time_cannot_be_moved() -> None:
    """A captured delivery replayed later with a fresh `t` no longer matches."""
    old = stripe_header(BODY, SECRET, NOW - 3600)
    replayed = old.replace(f"t={NOW - 3600}", f"t={NOW}")
    assert refusal(BODY, replayed, [SECRET]) == "MISMATCH"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_header_is_refused(header: str | None) -> None:
    assert refusal(BODY, header, [SECRET]) == "MISSING"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "v1=abc",  # no timestamp
        "t=,v1=abc",
        "t=12x,v1=abc",
        "t=-5,v1=abc",
        f"t={NOW},t={NOW},v1=abc",  # two timestamps: which one was signed?
        f"t={NOW},,v1=abc",
        f"t={NOW};v1=abc",
        f"t={NOW}, v1=abc",  # Stripe sends no spaces
        f" t={NOW},v1=abc",
        "t=" + "1" * 5000,
        "t=\uff11\uff12\uff13,v1=abc",  # full-width digits: isdigit() yes, ASCII no
    ],
)
def test_a_malformed_header_is_refused(header: str) -> None:
    assert refusal(BODY, header, [SECRET]) == "MALFORMED"


def test_a_header_without_v1_is_refused() -> None:
    v0 = stripe_header(BODY, SECRET).replace("v1=", "v0=")
    assert refusal(BODY, v0, [SECRET]) == "NO_V1"


def test_no_active_secret_refuses_everything() -> None:
    assert refusal(BODY, stripe_header(BODY, SECRET), []) == "NO_SECRET"


def test_every_refusal_names_the_rule_not_the_secret() -> None:
    for kind in SignatureRefusal:
        assert "whsec_" not in kind.value


def stripe_accepts(body: bytes, header: str, secret: str, now: int) -> bool:
    """stripe-python's own verdict (its clock pinned to `now`)."""
    real = time.time
    time.time = lambda: float(now)
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE_SECONDS)
    except stripe.SignatureVerificationError:
        return False
    finally:
        time.time = real
    return True


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(min_size=0, max_size=64).map(lambda b: b.decode("latin-1").encode()),
    flip=st.one_of(st.none(), st.integers(min_value=0, max_value=200)),
    skew=st.integers(min_value=-700, max_value=0),
    use_wrong_secret=st.booleans(),
)
def test_the_verdict_is_stripe_pythons(
    body: bytes, flip: int | None, skew: int, use_wrong_secret: bool
) -> None:
    """For bodies, tamperings, secrets and (past) times alike, we accept exactly what
    stripe-python's `verify_header` accepts."""
    header = stripe_header(body, OLD_SECRET if use_wrong_secret else SECRET, NOW + skew)
    received = bytearray(body)
    if flip is not None and received:
        received[flip % len(received)] ^= 0x20
    received_body = bytes(received)
    try:
        received_body.decode("utf-8")
    except UnicodeDecodeError:
        return  # the edge refuses a body that is not UTF-8 before the route runs
    try:
        verify(received_body, header, [SECRET.encode()], now=NOW)
        ours = True
    except SignatureRefused:
        ours = False
    assert ours == stripe_accepts(received_body, header, SECRET, NOW)
