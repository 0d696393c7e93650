"""Digests of high-entropy values (tokens, codes, flow ids) for storage and lookup.

A plain SHA-256 suffices because these values carry 256 random bits: nothing to guess from the
digest. Low-entropy values (passwords, emails) never come here; they get argon2id or an HMAC.
"""

import hashlib

__all__ = ["token_digest"]


def token_digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()
