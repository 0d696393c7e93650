"""Password hashing with argon2id.

Parameters are OWASP's recommended argon2id minimum (19 MiB, 2 passes, 1 lane): about 30 ms
here, which keeps login + MFA under 150 ms p50 on two cores (see bench/identity.py), while a
guess still costs an attacker 19 MiB of memory. Hashes made with other parameters are upgraded
on the next successful login.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher

__all__ = ["HASHER", "generate_password", "hash_password"]

HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def generate_password() -> str:
    """A random 20-character password (about 119 bits), for demo accounts only."""
    return secrets.token_urlsafe(15)
