"""Per-tenant data keys: created on first use, wrapped by the tenant's own KMS key, cached
briefly, rotated by adding a version, and shredded by destroying that KMS key (every wrapped
data key, in the database and in every backup of it, then unwraps nowhere)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.crypto.fields import DataKey
from ramparts.crypto.kms import Kms, key_ref, tenant_key

__all__ = ["DataKeys", "KeyShreddedError"]

Purpose = Literal["data", "index"]
CACHE_SECONDS = 60.0


class KeyShreddedError(Exception):
    """The tenant's key version does not exist (never made, or shredded)."""


def _context(tenant: uuid.UUID, purpose: str, version: int) -> str:
    return f"tenant-data-key:{tenant}:{purpose}:{version}"


class DataKeys:
    """Data keys of the session's tenant; every method takes a tenant session."""

    def __init__(self, kms: Kms, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self._kms = kms
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[uuid.UUID, str, int], tuple[float, DataKey]] = {}

    async def current(self, session: AsyncSession, tenant: uuid.UUID) -> DataKey:
        """The newest data key, made on first use."""
        version = await session.scalar(
            text(
                "SELECT max(version) FROM tenant_data_keys "
                "WHERE tenant_id = :tenant AND purpose = 'data'"
            ),
            {"tenant": tenant},
        )
        if version is None:
            return await self._make(session, tenant, "data", 1)
        return await self.version(session, tenant, int(version))

    async def version(self, session: AsyncSession, tenant: uuid.UUID, version: int) -> DataKey:
        return await self._load(session, tenant, "data", version)

    async def index_key(self, session: AsyncSession, tenant: uuid.UUID) -> bytes:
        """The tenant's blind-index key, made on first use and never rotated."""
        try:
            return (await self._load(session, tenant, "index", 1)).secret
        except KeyShreddedError:
            return (await self._make(session, tenant, "index", 1)).secret

    async def rotate(self, session: AsyncSession, tenant: uuid.UUID) -> DataKey:
        """A new current version; fields sealed under earlier ones still open."""
        current = await self.current(session, tenant)
        return await self._make(session, tenant, "data", current.version + 1)

    async def shred(self, session: AsyncSession, tenant: uuid.UUID) -> int:
        """Destroy the tenant's KMS key, then its wrapped data keys (run as the owner: the
        runtime role cannot delete them). Returns how many data keys went."""
        await asyncio.to_thread(self._kms.destroy, tenant_key(tenant))
        deleted = await session.execute(
            text("DELETE FROM tenant_data_keys WHERE tenant_id = :tenant"), {"tenant": tenant}
        )
        self._cache = {k: v for k, v in self._cache.items() if k[0] != tenant}
        return int(getattr(deleted, "rowcount", 0))

    async def rewrap(self, session: AsyncSession, tenant: uuid.UUID) -> int:
        """Re-wrap the tenant's data keys under the newest version of its KMS key (after a KMS
        key rotation; run as the owner). Returns how many changed."""
        current = await asyncio.to_thread(self._kms.current, tenant_key(tenant))
        rows = (
            await session.execute(
                text(
                    "SELECT purpose, version, wrapped FROM tenant_data_keys "
                    "WHERE tenant_id = :tenant AND kms_key <> :current FOR UPDATE"
                ),
                {"tenant": tenant, "current": current or ""},
            )
        ).all()
        for purpose, version, wrapped in rows:
            context = _context(tenant, purpose, version)
            secret = await asyncio.to_thread(self._kms.unwrap, bytes(wrapped), context=context)
            rewrapped = await asyncio.to_thread(
                self._kms.wrap, tenant_key(tenant), secret, context=context
            )
            await session.execute(
                text(
                    "UPDATE tenant_data_keys SET kms_key = :kms_key, wrapped = :wrapped "
                    "WHERE tenant_id = :tenant AND purpose = :purpose AND version = :version"
                ),
                {
                    "kms_key": key_ref(rewrapped),
                    "wrapped": rewrapped,
                    "tenant": tenant,
                    "purpose": purpose,
                    "version": version,
                },
            )
        return len(rows)

    async def _make(
        self, session: AsyncSession, tenant: uuid.UUID, purpose: Purpose, version: int
    ) -> DataKey:
        secret = secrets.token_bytes(32)
        wrapped = await asyncio.to_thread(
            self._kms.wrap, tenant_key(tenant), secret, context=_context(tenant, purpose, version)
        )
        await session.execute(
            text(
                "INSERT INTO tenant_data_keys (tenant_id, purpose, version, kms_key, wrapped) "
                "VALUES (:tenant, :purpose, :version, :kms_key, :wrapped) ON CONFLICT DO NOTHING"
            ),
            {
                "tenant": tenant,
                "purpose": purpose,
                "version": version,
                "kms_key": key_ref(wrapped),
                "wrapped": wrapped,
            },
        )
        # Another request may have made it first: the stored one is the one.
        return await self._load(session, tenant, purpose, version)

    async def _load(
        self, session: AsyncSession, tenant: uuid.UUID, purpose: Purpose, version: int
    ) -> DataKey:
        cached = self._cache.get((tenant, purpose, version))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        row = (
            await session.execute(
                text(
                    "SELECT wrapped FROM tenant_data_keys WHERE tenant_id = :tenant "
                    "AND purpose = :purpose AND version = :version"
                ),
                {"tenant": tenant, "purpose": purpose, "version": version},
            )
        ).first()
        if row is None:
            raise KeyShreddedError(f"no {purpose} key version {version} for this tenant")
        secret = await asyncio.to_thread(
            self._kms.unwrap, bytes(row[0]), context=_context(tenant, purpose, version)
        )
        key = DataKey(tenant, version, secret)
        self._cache[(tenant, purpose, version)] = (time.monotonic() + self._cache_seconds, key)
        return key
