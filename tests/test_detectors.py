"""The shared detectors find personal data however it is written (case, separators, Unicode),
with checksums keeping look-alikes out. The bench (`bench/pii_corpus.py`) measures recall and
precision at scale; these are the forms that must never slip through again."""

from __future__ import annotations

import pytest

from ramparts.detectors import Kind, Redactor, find_sensitive

AWS_EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # pragma: allowlist secret
AZURE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UV=="  # pragma: allowlist secret
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
            "DATABASE_URL=postgres://app:S3cret-9@db:5432/app",  # pragma: allowlist secret
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


# Each a credential as people write it (fake values; the scanner is told so), and its value.
PHRASED = [
    ("password: |\n  Hunter2Hunter2", "Hunter2Hunter2"),  # pragma: allowlist secret
    ("password: >-\n  Hunter2Hunter2\n", "Hunter2Hunter2"),  # pragma: allowlist secret
    ("db:\n  password: >\n    S3cr3t-Pw\n", "S3cr3t-Pw"),  # pragma: allowlist secret
    ("secret_access_key => " + AWS_EXAMPLE_SECRET, AWS_EXAMPLE_SECRET),
    ("aws_secret_access_key\t" + AWS_EXAMPLE_SECRET, AWS_EXAMPLE_SECRET),
    ("ssh passphrase: correct horse battery staple", "correct horse battery staple"),
    (
        "password: \u201cHunter2 Hunter2\u201d",
        "\u201cHunter2 Hunter2\u201d",
    ),  # pragma: allowlist secret
    ("password -> Tr0ub4dor&3", "Tr0ub4dor&3"),  # pragma: allowlist secret
    ("password - Tr0ub4dor&3", "Tr0ub4dor&3"),  # pragma: allowlist secret
    ("password Tr0ub4dor&3", "Tr0ub4dor&3"),  # pragma: allowlist secret
    ("your new password Winter2026!", "Winter2026!"),  # pragma: allowlist secret
    ("The password was changed to Winter2026!", "Winter2026!"),  # pragma: allowlist secret
    ("please set PASSWORD to Winter2026! today", "Winter2026!"),  # pragma: allowlist secret
    ("password\n\nWinter2026!", "Winter2026!"),  # pragma: allowlist secret
    ("my pw is Winter2026!", "Winter2026!"),  # pragma: allowlist secret
    ("my PIN is 4821", "4821"),  # pragma: allowlist secret
    ("the pin code is 4821", "4821"),  # pragma: allowlist secret
    ("The password for the VPN is Tr0ub4dor&3 for now", "Tr0ub4dor&3"),  # pragma: allowlist secret
    ("passphrase = 'correct horse battery staple'", "'correct horse battery staple'"),
    ("password:\n- Hunter2Hunter2", "Hunter2Hunter2"),  # pragma: allowlist secret
    ("Portal login: admin / Winter2026!", "Winter2026!"),  # pragma: allowlist secret
    ("curl -u bob:Winter2026 https://api.example.net", "Winter2026"),  # pragma: allowlist secret
    ("machine api.example.net login bob password hunter22", "hunter22"),  # pragma: allowlist secret
    ("mysql -h db -uroot -pS3cretPw shop", "S3cretPw"),  # pragma: allowlist secret
    ("REDIS_URL=redis://:S3cretPw@cache:6379/0", "S3cretPw"),  # pragma: allowlist secret
    ("<password>S3cretPw</password>", "S3cretPw"),  # pragma: allowlist secret
    ("Cookie: session=9f2a7c1e4b; theme=dark", "session=9f2a7c1e4b; theme=dark"),
    (f"AccountName=acme;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net", AZURE_KEY),
    ("het wachtwoord is Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("Das Kennwort ist Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("le mot de passe est Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("пароль: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("パスワード: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("密码\uff1aGeheim123", "Geheim123"),  # pragma: allowlist secret
    ("heslo: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("hasło: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("lösenord: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("parola: Geheim123", "Geheim123"),  # pragma: allowlist secret
    ("salasana: Geheim123", "Geheim123"),  # pragma: allowlist secret
]
TOKENS = [
    # Cut in pieces (joined at run time) so the repository scan does not see them whole.
    "".join(
        [
            "https://hooks.slack.com/services/",
            "T0A1B2C3D/B0A1B2C3D/",
            "abcdefghijklmnopqrstuvwx",
        ]
    ),
    "npm_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",  # pragma: allowlist secret
    "".join(
        [
            "pypi-AgEIcHlwaS5vcmcCJGE4Zj",
            "Y0NjRjLTg3ZjMtNDk4OC1hYjQ4LW",
            "Q0ZDc2NjUxNGJmMQ",
        ]
    ),
    "".join(
        [
            "SG.a1B2c3D4e5F6g7H8i9J0kw.",
            "a1B2c3D4e5F6g7H8i9J0k1L2",
            "m3N4o5P6q7R8s9T0u1V",
        ]
    ),
]


@pytest.mark.parametrize(("text", "value"), PHRASED, ids=[t for t, _ in PHRASED])
def test_a_credential_however_phrased_is_found_whole(text: str, value: str) -> None:
    found = [f for f in find_sensitive(text) if f.kind is Kind.PASSWORD]
    assert [f.value for f in found] == [value]


@pytest.mark.parametrize("token", TOKENS)
def test_known_token_formats_are_api_keys(token: str) -> None:
    [finding] = find_sensitive(f"use {token} for the build")
    assert finding.kind is Kind.API_KEY
    assert finding.value == token


def test_a_sas_signature_and_an_unlabelled_aws_secret_are_api_keys() -> None:
    sas = "https://acme.blob.core.windows.net/c?sv=2022-11-02&sp=r&sig="
    sas += "q8Zk2v9LmT4nR7cK1sW5yH3j%3D"
    assert [f.value for f in find_sensitive(sas)] == ["q8Zk2v9LmT4nR7cK1sW5yH3j%3D"]
    pair = f"key AKIAIOSFODNN7EXAMPLE and secret {AWS_EXAMPLE_SECRET}"  # pragma: allowlist secret
    found = find_sensitive(pair)
    assert [(f.kind, f.value) for f in found] == [
        (Kind.API_KEY, "AKIAIOSFODNN7EXAMPLE"),  # pragma: allowlist secret
        (Kind.API_KEY, AWS_EXAMPLE_SECRET),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "reset your password in settings",
        "the password policy requires 12 characters",
        "Change your password every 90 days.",
        "The password expires on 2026-11-30.",
        "Your password must be at least 12 characters long.",
        "Forgot your password? Use the link in the email.",
        "password reset for user42 was sent",
        "The password for the portal is in the vault",
        "top secret Project-X plans",
        "user roles / admin rights",
        "pin 4 chairs to the wall",
    ],
)
def test_prose_that_mentions_a_password_holds_none(text: str) -> None:
    assert find_sensitive(text) == []


# Personal data in the forms the attack review found left in clear, and the value claimed.
MORE_WRITTEN: list[tuple[str, str, Kind]] = [
    ("Call +41446681800 now", "+41446681800", Kind.PHONE),
    ("WhatsApp +447911123456.", "+447911123456", Kind.PHONE),
    ("<a href='tel:+14155550100'>", "+14155550100", Kind.PHONE),
    ("phone: 5551234567", "5551234567", Kind.PHONE),
    ("Mobil: 01734567890", "01734567890", Kind.PHONE),
    ("Tel. 4412345", "4412345", Kind.PHONE),
    ("Call +1 555 123 4567 ext. 89 today", "+1 555 123 4567 ext. 89", Kind.PHONE),
    ("Call (555)123-4567 x123 today", "(555)123-4567 x123", Kind.PHONE),
    ("Tel 030 1234567 Durchwahl 12.", "030 1234567 Durchwahl 12", Kind.PHONE),
    ("card 4111_1111_1111_1111 on file", "4111_1111_1111_1111", Kind.CARD),
    ("card 4111/1111/1111/1111 on file", "4111/1111/1111/1111", Kind.CARD),
    ("card 4111 1111 1111 1111/123 on file", "4111 1111 1111 1111/123", Kind.CARD),
    ("ssn078051120", "078051120", Kind.SSN),
    ("SSN#078-05-1120", "078-05-1120", Kind.SSN),
    ("IBAN DE89/3704/0044/0532/0130/00.", "DE89/3704/0044/0532/0130/00", Kind.IBAN),
    ("IBAN DE89  3704  0044  0532  0130  00", "DE89  3704  0044  0532  0130  00", Kind.IBAN),
    ("mail bob at example dot com today", "bob at example dot com", Kind.EMAIL),
    ("mail bob[@]example.com", "bob[@]example.com", Kind.EMAIL),
    ("mailto:bob%40example.com", "bob%40example.com", Kind.EMAIL),
    ("mail bob @ example.com today", "bob @ example.com", Kind.EMAIL),
    ("mail bob@example\u3002com today", "bob@example\u3002com", Kind.EMAIL),
]


@pytest.mark.parametrize(
    ("text", "value", "kind"), MORE_WRITTEN, ids=[t for t, _, _ in MORE_WRITTEN]
)
def test_more_ways_of_writing_are_found_whole(text: str, value: str, kind: Kind) -> None:
    [finding] = find_sensitive(text)
    assert (finding.kind, finding.value) == (kind, value)


@pytest.mark.parametrize(
    "text",
    [
        "Schedule: 01 02 03 04 05",
        "Rooms 02 04 06 08 10 are free",
        "we need 025 412 3456 screws",
        "ship 030 1234567 pieces by Friday",
        "we have 020 7946 0958 units in stock",
        "ext. 4521, room 301",
    ],
)
def test_counts_and_sequences_are_not_phone_numbers(text: str) -> None:
    assert find_sensitive(text) == []


def test_a_card_keeps_its_last_four_when_its_security_code_follows() -> None:
    redactor = Redactor(b"k" * 32)
    assert redactor.text("card 4111 1111 1111 1111/123") == "card [CARD:…1111]"
