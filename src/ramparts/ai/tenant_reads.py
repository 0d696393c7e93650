"""A per-tenant value read from the database at most so long ago by this process: what every
request needs (the kill-switch, the tenant's people) without a query on every request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["TenantRead"]


class TenantRead:
    """What `read` returns for a tenant, read from the database at most `max_age` seconds ago
    by this process."""

    def __init__(
        self, read: Callable[[AsyncSession], Awaitable[frozenset[str]]], max_age: float
    ) -> None:
        self._read = read
        self._max_age = max_age
        self._seen: dict[uuid.UUID, tuple[float, frozenset[str]]] = {}

    async def get(self, session: AsyncSession, tenant: uuid.UUID) -> frozenset[str]:
        seen = self._seen.get(tenant)
        now = time.monotonic()
        if seen is None or now - seen[0] >= self._max_age:
            seen = (now, await self._read(session))
            self._seen[tenant] = seen
        return seen[1]
