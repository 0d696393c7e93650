"""Model API keys per tenant (AI-3): a tenant's model calls carry its own key, never another's.

The KMS holds each tenant's key as the secret `model/openai/api-key/<tenant id>` and the
installation's as `model/openai/api-key` (or `OPENAI_API_KEY` when the KMS holds none); an
operator sets them with `ramparts keys set-model-key`. What a tenant without a key of its own
gets is `RAMPARTS_MODEL_KEYS`: `tenant` (the default, and the only one prod allows) gives it
none, so its messages are refused; `shared` gives it the installation's key.

A key is read from the KMS at most every `REFRESH_SECONDS` per tenant, not on every model
call; a key set or removed by the CLI in another process is in use within that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from ramparts.config import ModelKeyPolicy
from ramparts.crypto.kms import Kms

__all__ = [
    "REFRESH_SECONDS",
    "SHARED_KEY_NAME",
    "ModelKey",
    "ModelKeys",
    "NoModelKeyError",
    "fingerprint",
    "tenant_key_name",
]

SHARED_KEY_NAME = "model/openai/api-key"
REFRESH_SECONDS = 5.0


class NoModelKeyError(Exception):
    """The tenant has no model key of its own, and the policy gives it no other."""


def tenant_key_name(tenant: uuid.UUID) -> str:
    return f"{SHARED_KEY_NAME}/{tenant}"


def fingerprint(key: SecretStr) -> str:
    """Names a key in the audit trail and the CLI's output; the key itself never leaves."""
    return hashlib.sha256(key.get_secret_value().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelKey:
    scope: str  # "tenant": the tenant's own; "shared": the installation's
    value: SecretStr

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.value)


class ModelKeys:
    """The key each tenant's model calls carry, from the KMS, kept for `refresh` seconds."""

    def __init__(
        self,
        kms: Kms,
        *,
        policy: ModelKeyPolicy,
        fallback: SecretStr | None = None,
        refresh: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kms = kms
        self._policy = policy
        self._fallback = fallback  # OPENAI_API_KEY: the shared key when the KMS holds none
        self._refresh = refresh
        self._clock = clock
        self._read: dict[str, tuple[float, SecretStr | None]] = {}

    async def key_for(self, tenant: uuid.UUID) -> ModelKey:
        own = await self._secret(tenant_key_name(tenant))
        if own is not None:
            return ModelKey("tenant", own)
        if self._policy is ModelKeyPolicy.SHARED:
            shared = await self._secret(SHARED_KEY_NAME) or self._fallback
            if shared is not None:
                return ModelKey("shared", shared)
        raise NoModelKeyError("this organisation has no model key of its own")

    async def _secret(self, name: str) -> SecretStr | None:
        """The secret `name` as read at most `refresh` seconds ago; blank is none (a key is
        removed by storing nothing in its place)."""
        now = self._clock()
        kept = self._read.get(name)
        if kept is not None and now - kept[0] < self._refresh:
            return kept[1]
        value = await asyncio.to_thread(self._kms.read_secret, name)
        if value is not None and not value.get_secret_value().strip():
            value = None
        self._read[name] = (now, value)
        return value
