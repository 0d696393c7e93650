"""The password policy (length, common passwords, username) and argon2id storage."""

from __future__ import annotations

import pytest

from ramparts.identity.passwords import (
    HASHER,
    PasswordPolicyError,
    check_password,
    generate_password,
    hash_password,
)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short-pass1", "12 to 128 characters"),
        ("x" * 129, "12 to 128 characters"),
        ("password1234", "commonly used"),
        ("PASSWORD1234", "commonly used"),
        ("qwertyuiop123", "commonly used"),
        ("alice-is-the-best-1", "must not contain the username"),
    ],
)
def test_weak_passwords_are_refused(password: str, message: str) -> None:
    with pytest.raises(PasswordPolicyError, match=message):
        check_password(password, username="alice@acme.test")


def test_good_and_generated_passwords_pass() -> None:
    check_password("correct horse battery staple", username="alice@acme.test")
    check_password(generate_password(), username="alice@acme.test")


def test_hashes_are_argon2id_with_the_configured_cost() -> None:
    digest = hash_password("correct horse battery staple")
    assert digest.startswith("$argon2id$")
    assert "m=19456,t=2,p=1" in digest
    assert HASHER.verify(digest, "correct horse battery staple")
