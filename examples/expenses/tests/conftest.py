"""Fixtures: the runtime's (a real PostgreSQL, a fresh database per use) and the app's own
database, migrated with the runtime's chain and the app's branch. The app has a database of
its own so that no other suite's database holds a sealed column only this app declares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from tests.conftest import anyio_backend, make_database, pg_server
from tests.live import kms

from world import World, migrate, open_world

__all__ = ["anyio_backend", "expenses_urls", "kms", "make_database", "pg_server", "world"]


@pytest.fixture(scope="session")
def expenses_urls(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    urls = make_database(migrate=False)
    migrate(urls)
    return urls


@pytest.fixture
async def world(expenses_urls: DatabaseUrls, kms: Kms) -> AsyncIterator[World]:
    # One KMS for the session, like the one database: what a test's server seals (its
    # signing key) another test's server must open.
    opened = await open_world(expenses_urls, kms)
    try:
        yield opened
    finally:
        await opened.close()
