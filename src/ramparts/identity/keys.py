"""Token signing keys: ES256, sealed at rest, rotated with an overlap window.

`KeyRing` is a snapshot of the signing_keys table: the current key signs; the keys it replaced
stay published (JWKS) and accepted for `overlap` after their successor took over, so tokens
signed just before a rotation stay valid until they expire; after that they are retired.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from joserfc import jwk
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.crypto.kms import SYSTEM_KEY, Kms

__all__ = ["ALGORITHM", "KeyRing", "SigningKey", "load_key_ring", "rotate_signing_key"]

ALGORITHM = "ES256"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    public_jwk: dict[str, Any]
    sealed_private: bytes
    activated_at: datetime
    retired_at: datetime | None


@dataclass(frozen=True, eq=False)
class KeyRing:
    """The keys as of `now`; build it with `load_key_ring`."""

    keys: tuple[SigningKey, ...]  # newest first
    overlap: timedelta
    now: datetime
    _unsealed: jwk.ECKey | None = field(default=None, init=False, repr=False)

    def published(self) -> list[SigningKey]:
        """The current key plus predecessors still inside their overlap window."""
        live: list[SigningKey] = []
        successor: SigningKey | None = None
        for key in self.keys:
            if key.retired_at is None and (
                successor is None or successor.activated_at + self.overlap > self.now
            ):
                live.append(key)
            successor = key
        return live

    def current(self) -> SigningKey:
        published = self.published()
        if not published:
            raise LookupError("no signing key; run `ramparts migrate` or `ramparts keys rotate`")
        return published[0]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in self.published()]}

    def verification_key(self, kid: str) -> jwk.ECKey | None:
        """The published key with this kid, imported once per ring (verification is hot)."""
        return self._verification_keys.get(kid)

    @cached_property
    def _verification_keys(self) -> dict[str, jwk.ECKey]:
        return {key.kid: jwk.ECKey.import_key(key.public_jwk) for key in self.published()}

    def signing_key(self, kms: Kms) -> jwk.ECKey:
        """The current private key, unwrapped by the KMS once per ring, kept only in memory."""
        unsealed = self._unsealed
        if unsealed is None or unsealed.kid != self.current().kid:
            key = self.current()
            private = kms.unwrap(key.sealed_private, context=f"signing-key:{key.kid}")
            unsealed = jwk.ECKey.import_key(json.loads(private))
            object.__setattr__(self, "_unsealed", unsealed)
        return unsealed


async def load_key_ring(session: AsyncSession, *, overlap: timedelta) -> KeyRing:
    rows = await session.execute(
        text(
            "SELECT kid, public_jwk, sealed_private, activated_at, retired_at "
            "FROM signing_keys ORDER BY activated_at DESC, kid"
        )
    )
    keys = tuple(SigningKey(*row) for row in rows)
    return KeyRing(keys=keys, overlap=overlap, now=datetime.now(UTC))


async def rotate_signing_key(
    session: AsyncSession, kms: Kms, *, overlap: timedelta
) -> dict[str, Any]:
    """Make a new current key and retire predecessors whose overlap window has passed.

    Runs on the owner's connection: the runtime role cannot write signing keys.
    """
    kid = secrets.token_urlsafe(12)
    key = jwk.ECKey.generate_key(
        "P-256", parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"}, private=True
    )
    public = key.as_dict(private=False)
    private = json.dumps(key.as_dict(private=True)).encode()
    sealed = kms.wrap(SYSTEM_KEY, private, context=f"signing-key:{kid}")
    await session.execute(
        text(
            "INSERT INTO signing_keys (kid, alg, public_jwk, sealed_private) "
            "VALUES (:kid, :alg, CAST(:jwk AS jsonb), :sealed)"
        ),
        {"kid": kid, "alg": ALGORITHM, "jwk": json.dumps(public), "sealed": sealed},
    )
    ring = await load_key_ring(session, overlap=overlap)
    published = {k.kid for k in ring.published()}
    retired = [k.kid for k in ring.keys if k.retired_at is None and k.kid not in published]
    if retired:
        await session.execute(
            text("UPDATE signing_keys SET retired_at = now() WHERE kid = ANY(:kids)"),
            {"kids": retired},
        )
    return {"kid": kid, "published": sorted(published), "retired": sorted(retired)}
