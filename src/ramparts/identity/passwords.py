"""Password hashing with argon2id (argon2-cffi's RFC 9106 defaults)."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher

__all__ = ["generate_password", "hash_password"]

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def generate_password() -> str:
    """A random 20-character password (about 119 bits), for demo accounts only."""
    return secrets.token_urlsafe(15)
