"""Engines and sessions.

`Database.tenant_session(tenant_id)` is the only way application code reaches tenant rows: it
opens a transaction and sets `app.tenant_id` with `set_config(..., true)`, which PostgreSQL
scopes to that transaction, so a pooled connection never carries a tenant into the next use.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from ramparts.config import APP_ROLE, Settings
from ramparts.db.embedded import embedded_postgres

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

__all__ = ["Database", "DatabaseUrls", "open_database"]

DRIVER = "postgresql+psycopg"


@dataclass(frozen=True)
class DatabaseUrls:
    """Where to connect: `owner` runs migrations and provisioning, `app` serves requests."""

    owner: URL
    app: URL


def _with_driver(url: URL) -> URL:
    return url.set(drivername=DRIVER)


def derive_app_url(owner: URL) -> URL:
    """The runtime role's URL: same server and database, logging in as `ramparts_app`."""
    return _with_driver(owner).set(username=APP_ROLE, password=None)


@contextmanager
def open_database(settings: Settings) -> Iterator[DatabaseUrls]:
    """Resolve the URLs, starting the embedded server for the duration when none is set."""
    if settings.database_url is None:
        with embedded_postgres(settings.home) as owner:
            yield DatabaseUrls(owner=_with_driver(owner), app=derive_app_url(owner))
        return
    owner = make_url(settings.database_url.get_secret_value())
    app = (
        make_url(settings.app_database_url.get_secret_value())
        if settings.app_database_url is not None
        else derive_app_url(owner)
    )
    yield DatabaseUrls(owner=_with_driver(owner), app=_with_driver(app))


class Database:
    """An async engine plus the two ways to open a transaction on it."""

    def __init__(self, url: URL, *, pool_size: int = 5) -> None:
        self.engine = create_async_engine(
            _with_driver(url), pool_size=pool_size, pool_pre_ping=True
        )
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def tenant_session(self, tenant_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """A transaction that sees exactly one tenant's rows (row-level security)."""
        if not isinstance(tenant_id, uuid.UUID):
            raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
        async with self._sessions() as session, session.begin():
            await session.execute(
                text("SELECT set_config('app.tenant_id', :tenant_id, true)"),
                {"tenant_id": str(tenant_id)},
            )
            yield session

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction with no tenant: row-level security shows it no tenant rows."""
        async with self._sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()
