"""The shared detectors find personal data however it is written (case, separators, Unicode),
with checksums keeping look-alikes out. The bench (`bench/pii_corpus.py`) measures recall and
precision at scale; these are the forms that must never slip through again."""

from __future__ import annotations

import pytest

from ramparts.detectors import Kind, find_sensitive

AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # pragma: allowlist secret
# (text around the value, the value, its kind); the value is all that may be claimed.
WRITTEN: list[tuple[str, Kind]] = [
    ("jürgen@müller.de", Kind.EMAIL),
    ("JÜRGEN@MÜLLER.DE", Kind.EMAIL),
    ("ana.lópez@correo.es", Kind.EMAIL),
    ("info@xn--mller-kva.de", Kind.EMAIL),
    ("jane.doe [at] example [dot] com", Kind.EMAIL),
    ("ｊａｎｅ＠ｅｘａｍｐｌｅ．ｃｏｍ", Kind.EMAIL),  # noqa: RUF001 - fullwidth on purpose
    ("4111.1111.1111.1111", Kind.CARD),
    ("4111  1111  1111  1111", Kind.CARD),
    ("4111 - 1111 - 1111 - 1111", Kind.CARD),
    ("4111\u00a01111\u00a01111\u00a01111", Kind.CARD),  # no-break spaces
    ("4111\u200b1111\u200b1111\u200b1111", Kind.CARD),  # zero-width spaces
    ("４１１１ １１１１ １１１１ １１１１", Kind.CARD),  # noqa: RUF001
    ("3782 822463 10005", Kind.CARD),  # Amex 4-6-5
    ("5555-5555-5555-4444", Kind.CARD),
    ("6011000990139424", Kind.CARD),
    ("3530 1113 3330 0000", Kind.CARD),  # JCB
    ("de89 3704 0044 0532 0130 00", Kind.IBAN),
    ("DE89-3704-0044-0532-0130-00", Kind.IBAN),
    ("DE89 370400440532013000", Kind.IBAN),
    ("gb82west12345698765432", Kind.IBAN),
    ("FR14 2004 1010 0505 0001 3M02 606", Kind.IBAN),
    ("NL91.ABNA.0417.1643.00", Kind.IBAN),
    ("078 05 1120", Kind.SSN),
    ("078051120", Kind.SSN),
    ("078.05.1120", Kind.SSN),
    ("078 - 05 - 1120", Kind.SSN),
    ("(555)123-4567", Kind.PHONE),
    ("555.123.4567", Kind.PHONE),
    ("1-800-555-0199", Kind.PHONE),
    ("030/12345678", Kind.PHONE),
    ("(030) 1234567", Kind.PHONE),
    ("020 7946 0958", Kind.PHONE),
    ("01 23 45 67 89", Kind.PHONE),
    ("+49 (0)30 12345678", Kind.PHONE),
    ("0049 30 12345678", Kind.PHONE),
    ("+91 98765 43210", Kind.PHONE),
    ("+81-3-1234-5678", Kind.PHONE),
]


@pytest.mark.parametrize(("value", "kind"), WRITTEN, ids=[v for v, _ in WRITTEN])
@pytest.mark.parametrize("around", ["{}", "Details: {}, thanks.", "({})"])
def test_each_way_of_writing_is_found_whole(value: str, kind: Kind, around: str) -> None:
    text = around.format(value)
    [finding] = find_sensitive(text)
    assert finding.kind is kind
    assert finding.value == value
    assert text[finding.start : finding.end] == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("card 4111 1111 1111 1111 2 units", "4111 1111 1111 1111"),
        ("qty 2 4111 1111 1111 1111", "4111 1111 1111 1111"),
        ("IBAN DE89 3704 0044 0532 0130 00 12 chairs", "DE89 3704 0044 0532 0130 00"),
        ("call +44 20 7946 0958 2026-11-30", "+44 20 7946 0958"),
        ("SSN 078051120", "078051120"),
        ("phone no. 030 1234567", "030 1234567"),
    ],
)
def test_a_value_is_found_inside_the_numbers_around_it(text: str, value: str) -> None:
    assert [f.value for f in find_sensitive(text)] == [value]


@pytest.mark.parametrize(
    "text",
    [
        "order 078051120 ships Monday",  # named as something else
        "Invoice no. 123456789 is due",
        "tracking # 555 123 4567",
        "4111.1111.1111.1112",  # fails Luhn
        "8000 0000 0000 0009",  # passes Luhn, but no card network issues it
        "de89 3704 0044 0532 0130 01",  # wrong IBAN check digits
        "DE89 3704 0044 0532 0130",  # too short for Germany
        "XX89 3704 0044 0532 0130 00",  # no such country
        "666-12-3456 and 900-12-3456",  # never issued
        "on 01.02.2024 10:30 in room 4",
        "version 10.2.3, build 0.12.3456",
        "total 1.234.567.890,12 EUR",
        "6f1c2a8e-3b1d-4c5e-9f0a-7b6c5d4e3f21",
        "2026-11-29T02:30:00.123456Z",
        "user@localhost",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert find_sensitive(text) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("my password: Hunter2Hunter2", "Hunter2Hunter2"),  # pragma: allowlist secret
        ("db_password=S3cr3tPassw0rd!", "S3cr3tPassw0rd!"),  # pragma: allowlist secret
        ("DB-PASSWORD = 'x9!kq'", "'x9!kq'"),  # pragma: allowlist secret
        ("dbPassword: correcthorse", "correcthorse"),  # pragma: allowlist secret
        ("Passwort: Sommer2026!", "Sommer2026!"),  # pragma: allowlist secret
        ("mot de passe : azerty123", "azerty123"),  # pragma: allowlist secret
        ("user: admin pass: hunter2", "hunter2"),  # pragma: allowlist secret
        ("card PIN: 4821", "4821"),  # pragma: allowlist secret
        (
            "DATABASE_URL=postgres://app:S3cret-9@db:5432/app",
            "S3cret-9",
        ),  # pragma: allowlist secret
        ("the VPN password is Tr0ub4dor&3 today", "Tr0ub4dor&3"),  # pragma: allowlist secret
        (
            "aws_secret_access_key = " + AWS_EXAMPLE_SECRET,
            AWS_EXAMPLE_SECRET,
        ),
        (
            "refresh_token: 1//0gexampleexampleexample-abc",  # pragma: allowlist secret
            "1//0gexampleexampleexample-abc",  # pragma: allowlist secret
        ),
    ],
)
def test_an_announced_credential_is_a_password_finding(text: str, value: str) -> None:
    [finding] = find_sensitive(text)
    assert finding.kind is Kind.PASSWORD
    assert finding.value == value


def test_a_basic_authorization_header_is_a_credential() -> None:
    [finding] = find_sensitive("Authorization: Basic dXNlcjpodW50ZXIy")  # pragma: allowlist secret
    assert finding.kind is Kind.BEARER


@pytest.mark.parametrize(
    "text",
    [
        "the password is expired.",
        "Secretary: Mrs Smith",
        "shipping: express",
        "compass: north, typing: fast, spin: 3",
        "see https://example.com/a:b@c and the basic internationalization plan",
        "malformed token: decode_error: Invalid header",
    ],
)
def test_prose_about_credentials_is_not_one(text: str) -> None:
    assert [f for f in find_sensitive(text) if f.kind is Kind.PASSWORD] == []
