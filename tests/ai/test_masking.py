"""The masker leaves no detected kind through: personal data becomes tokens, every credential
is refused (a user's text) or redacted (a tool's result, the model's answer)."""

from __future__ import annotations

import pytest

from ramparts.ai.masking import MASKED_KINDS, Masker, RefusedContentError
from ramparts.detectors import SECRET_KINDS, Kind

GITHUB_TOKEN = "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # pragma: allowlist secret
PASSWORD_LINE = "Portal login password: Winter2026!xyz"  # pragma: allowlist secret


def test_every_kind_is_masked_or_a_secret() -> None:
    assert frozenset(Kind) == MASKED_KINDS | SECRET_KINDS
    assert not MASKED_KINDS & SECRET_KINDS


@pytest.mark.parametrize(
    "text",
    [
        "my password: Hunter2Hunter2",  # pragma: allowlist secret
        "db_password=S3cr3tPassw0rd!",  # pragma: allowlist secret
        "my password is Hunter2Hunter2",  # pragma: allowlist secret
        'config {"api_secret": "9fQ2xLm8VbT4nR7cK1sW5yH3jD6gA0pZ"}',  # pragma: allowlist secret
        "password: |\n  Hunter2Hunter2",  # pragma: allowlist secret
        "ssh passphrase: correct horse battery staple",  # pragma: allowlist secret
        "The password was changed to Winter2026!",  # pragma: allowlist secret
        "my PIN is 4821",  # pragma: allowlist secret
        "Portal login: admin / Winter2026!",  # pragma: allowlist secret
        "run mysql -uroot -pS3cretPw shop",  # pragma: allowlist secret
        "redis://:S3cretPw@cache:6379",  # pragma: allowlist secret
        "Kennwort ist Geheim123",  # pragma: allowlist secret
        "пароль: Geheim123",  # pragma: allowlist secret
    ],
)
def test_a_users_credential_is_refused(text: str) -> None:
    with pytest.raises(RefusedContentError) as refused:
        Masker().mask(f"hello, {text}")
    assert refused.value.kinds == ["PASSWORD"]


@pytest.mark.parametrize(
    "text",
    [
        "How do I reset my password in settings?",
        "The password policy requires 12 characters.",
        "Forgot your password? Use the link in the email.",
        "We need 025 412 3456 screws on Schedule: 01 02 03 04 05",
    ],
)
def test_prose_about_passwords_is_sent_as_it_is(text: str) -> None:
    assert Masker().mask(text) == text


def test_a_tools_credential_is_redacted_and_its_personal_data_masked() -> None:
    masker = Masker()
    result = {
        "description": f"{PASSWORD_LINE}; contact jürgen@müller.de",
        "items": [{"note": f"token: {GITHUB_TOKEN}"}],
    }
    masked = masker.mask_value(result, redact_secrets=True)
    assert masked == {
        "description": "Portal login password: [PASSWORD]; contact [EMAIL_1]",
        "items": [{"note": "token: [API_KEY]"}],
    }
    # Redacted is gone: nothing turns it back, unlike a token.
    assert masker.unmask(masked)["description"] == (
        "Portal login password: [PASSWORD]; contact jürgen@müller.de"
    )


def test_the_models_answer_is_scrubbed_never_refused() -> None:
    masker = Masker(forbidden=frozenset({Kind.SSN}))
    answer = masker.scrub("Use 078 05 1120, mail ann@example.com, the password is Hunter2!!")
    assert answer == "Use [SSN], mail [EMAIL_1], the password is [PASSWORD]"


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (Kind.IBAN, "pay to de89-3704-0044-0532-0130-00"),
        (Kind.SSN, "ssn 078051120"),
        (Kind.CARD, "card 4111.1111.1111.1111"),
        (Kind.EMAIL, "mail jürgen@müller.de"),
        (Kind.PHONE, "call 030/12345678"),
    ],
)
def test_dlp_rules_refuse_every_way_of_writing_a_forbidden_kind(kind: Kind, text: str) -> None:
    with pytest.raises(RefusedContentError) as refused:
        Masker(forbidden=frozenset({kind})).mask(text)
    assert refused.value.kinds == [kind.value]


def test_personal_data_in_a_results_keys_is_masked_too() -> None:
    masker = Masker()
    masked = masker.mask_value({"balances": {"GB82WEST12345698765432": 120}})
    assert masked == {"balances": {"[IBAN_1]": 120}}
    assert masker.unmask(masked) == {"balances": {"GB82WEST12345698765432": 120}}
