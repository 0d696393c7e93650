"""Password hashing with argon2id.

Parameters are OWASP's recommended argon2id minimum (19 MiB, 2 passes, 1 lane): about 30 ms
here, which keeps login + MFA under 150 ms p50 on two cores (see bench/identity.py), while a
guess still costs an attacker 19 MiB of memory. Hashes made with other parameters are upgraded
on the next successful login.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher

__all__ = ["HASHER", "PasswordPolicyError", "check_password", "generate_password", "hash_password"]

MIN_LENGTH = 12
MAX_LENGTH = 128


class PasswordPolicyError(ValueError):
    """The password is too short, too long, or one of the commonly used ones."""


@cache
def _common_passwords() -> frozenset[str]:
    from zxcvbn.frequency_lists import FREQUENCY_LISTS  # noqa: PLC0415 - 30k words, load once

    return frozenset(FREQUENCY_LISTS["passwords"])


def check_password(password: str, *, username: str = "") -> None:
    """NIST SP 800-63B style: length 12-128, not a known common password, not the username."""
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordPolicyError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
    lowered = password.lower()
    if lowered in _common_passwords():
        raise PasswordPolicyError("that password is on the list of commonly used passwords")
    local = username.lower().split("@")[0]
    if local and local in lowered:
        raise PasswordPolicyError("a password must not contain the username")


HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def generate_password() -> str:
    """A random 20-character password (about 119 bits), for demo accounts only."""
    return secrets.token_urlsafe(15)
