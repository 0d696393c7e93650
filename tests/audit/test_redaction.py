"""Personal data and secrets never reach the audit table, and what replaces them is useful."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.db.engine import Database, DatabaseUrls, libpq
from ramparts.detectors import Kind, Redactor, find_sensitive, is_secret_name
from tests.audit.trail import sequence
from tests.identity.helpers import TEST_REDACTOR

# Each raw value must not appear anywhere in the stored row; the placeholder kind it becomes.
CORPUS: list[tuple[str, Kind]] = [
    ("4242 4242 4242 4242", Kind.CARD),
    ("4000-0566-5566-5556", Kind.CARD),
    ("378282246310005", Kind.CARD),
    ("123-45-6789", Kind.SSN),
    ("DE89 3704 0044 0532 0130 00", Kind.IBAN),
    ("GB82WEST12345698765432", Kind.IBAN),
    ("jane.doe+quotes@example.co.uk", Kind.EMAIL),
    ("+44 20 7946 0958", Kind.PHONE),
    ("(415) 555-0132", Kind.PHONE),
    (
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJ0ZW5hbnQiOiJhY21lIn0.c2lnbmF0dXJlLWJ5dGVz",  # pragma: allowlist secret # noqa: E501
        Kind.JWT,
    ),
    ("sk_live_51HxYzAbCdEfGhIjKlMnOpQr", Kind.API_KEY),  # pragma: allowlist secret
    ("AKIAIOSFODNN7EXAMPLE", Kind.API_KEY),  # pragma: allowlist secret
    ("ghp_1234567890abcdefghijABCDEFGHIJ123456", Kind.API_KEY),  # pragma: allowlist secret
    ("Bearer abcdefghijklmnopqrstuvwxyz012345", Kind.BEARER),  # pragma: allowlist secret
    ("password=Tr0ub4dor&3", Kind.PASSWORD),  # pragma: allowlist secret
    ("db_password=hunter2hunter2", Kind.PASSWORD),  # pragma: allowlist secret
    ('{"client_secret": "s3cr3t-s3cr3t"}', Kind.PASSWORD),  # pragma: allowlist secret
    (
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"  # pragma: allowlist secret # noqa: E501
        "-----END PRIVATE KEY-----",
        Kind.PRIVATE_KEY,
    ),
]


@pytest.mark.parametrize(
    ("raw", "kind"), CORPUS, ids=[k.value + str(i) for i, (_, k) in enumerate(CORPUS)]
)
def test_each_value_is_detected_as_its_kind(raw: str, kind: Kind) -> None:
    [finding] = find_sensitive(f"note: {raw} (end)")
    assert finding.kind is kind
    assert raw.startswith(finding.value) or finding.value in raw


@pytest.mark.parametrize(
    "text",
    [
        "4242 4242 4242 4241",  # fails Luhn: an order number, not a card
        "6f1c2a8e-3b1d-4c5e-9f0a-7b6c5d4e3f21",  # ids stay readable
        "2026-11-29T02:30:00.123456Z",
        "identity:login:failed",
        "malformed token: decode_error: Invalid header",
        "quote 1234 for 15000 EUR",
        "GB82WEST12345698765431",  # wrong IBAN check digits
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert find_sensitive(text) == []


def test_placeholders_keep_what_an_investigator_needs() -> None:
    redactor = Redactor(bytes(range(32)))
    text = redactor.text("card 4242 4242 4242 4242 from a.b@example.com and A.B@example.com")
    assert text.startswith("card [CARD:…4242] from [EMAIL:")
    first, second = text.split("[EMAIL:")[1:]
    assert first[:12] == second[:12]  # the same address, whatever its case
    # Keyed: another installation's key gives another fingerprint, so no dictionary works.
    assert Redactor(bytes(32)).text("a.b@example.com") != redactor.text("a.b@example.com")


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("new_password", True),
        ("client_secret", True),
        ("refresh-token", True),
        ("code", True),
        ("otp", True),
        ("Authorization", True),
        ("clientSecret", True),
        ("apiKey", True),
        ("recovery_codes", True),
        ("secret_key", True),
        ("token_type", False),
        ("reason", False),
        ("error_code", False),
        ("username", False),
    ],
)
def test_secret_field_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


@pytest.mark.anyio
async def test_a_corpus_of_pii_events_leaves_no_raw_value_in_the_table(urls: DatabaseUrls) -> None:
    tenant = uuid.uuid4()
    database = Database(urls.app, pool_size=1)
    audit = AuditLog(database, TEST_REDACTOR)
    secrets_by_field = {
        "password": "correct horse battery staple",  # pragma: allowlist secret
        "otp": "492039",
        "client_secret": "s3cr3t-value-for-a-client",  # pragma: allowlist secret
        "refresh_token": "rt.opaque-value-0123456789",  # pragma: allowlist secret
    }
    try:
        for raw, _ in CORPUS:
            await audit.record_apart(
                tenant,
                Actor(
                    "anonymous",
                    tenant=tenant,
                    username=f"x {raw} y",
                    user_agent=f"agent {raw}",
                ),
                Action.LOGIN_FAILED,
                Resource("user", raw),
                Decision.DENY,
                {
                    "message": f"the customer wrote: {raw}!",
                    "nested": {"list": [raw, {"deeper": raw}]},
                    **secrets_by_field,
                },
            )
    finally:
        await database.dispose()

    # Redacted before it is queued: neither the queue nor the chain ever holds the raw text.
    with psycopg.connect(libpq(urls.owner)) as owner:
        queued = owner.execute(
            "SELECT string_agg(q::text, ' ') FROM audit_queue q WHERE tenant = %s", (tenant,)
        ).fetchone()
        sequence(urls)
        stored = owner.execute(
            "SELECT string_agg(t::text, ' ') FROM audit_events t WHERE tenant_id = %s",
            (tenant,),
        ).fetchone()
    assert queued is not None
    assert stored is not None
    for table_text in (queued[0], stored[0]):
        for raw, kind in CORPUS:
            for piece in (raw, raw.replace(" ", ""), raw.replace("\n", "\\n")):
                assert piece not in table_text, f"{kind} leaked"
            assert f"[{kind.value}" in table_text
        for value in secrets_by_field.values():
            assert value not in table_text
        assert table_text.count("[REDACTED]") == len(CORPUS) * len(secrets_by_field)
