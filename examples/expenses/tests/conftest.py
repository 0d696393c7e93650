"""Fixtures: the runtime's (a real PostgreSQL, a fresh database per use) and the app's own
database, migrated with the runtime's chain and the app's branch. The app has a database of
its own so that no other suite's database holds a sealed column only this app declares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from ramparts.db.engine import DatabaseUrls
from tests.conftest import anyio_backend, make_database, pg_server
from tests.live import temporary_kms

from world import World, migrate, open_world

__all__ = ["anyio_backend", "expenses_urls", "make_database", "pg_server", "world"]


@pytest.fixture(scope="session")
def expenses_urls(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    urls = make_database(migrate=False)
    migrate(urls)
    return urls


@pytest.fixture
async def world(expenses_urls: DatabaseUrls, tmp_path: Path) -> AsyncIterator[World]:
    opened = await open_world(expenses_urls, temporary_kms(tmp_path))
    try:
        yield opened
    finally:
        await opened.close()
