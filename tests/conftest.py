"""Shared fixtures: a real PostgreSQL for the whole run, one fresh database per use.

The machine's server (RAMPARTS_TEST_SERVER_URL, default postgres@127.0.0.1:5432) is used when
it answers; otherwise an embedded pgserver under a temporary directory. Either way the schema
is created by the same `ramparts.db.migrate.upgrade` that `ramparts migrate` runs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL, make_url

from ramparts.apps import installed_apps, migration_branches
from ramparts.crypto.keystore import LocalKms, default_key_file
from ramparts.db.embedded import embedded_postgres
from ramparts.db.engine import DatabaseUrls, derive_app_url, libpq
from ramparts.db.migrate import upgrade

SERVER_URL = os.environ.get(
    "RAMPARTS_TEST_SERVER_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _server_reachable() -> bool:
    try:
        with psycopg.connect(SERVER_URL, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def pytest_report_header() -> str:
    where = SERVER_URL if _server_reachable() else "embedded pgserver (no server reachable)"
    return f"ramparts: PostgreSQL at {where}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    """Owner URL of the maintenance database on the server the run uses."""
    if _server_reachable():
        yield make_url(SERVER_URL)
        return
    with embedded_postgres(tmp_path_factory.mktemp("embedded")) as owner:
        yield owner.set(database="postgres")


@pytest.fixture(scope="session")
def make_database(pg_server: URL) -> Iterator[Callable[..., DatabaseUrls]]:
    """Factory: a fresh database (migrated unless told otherwise), dropped after the run."""
    created: list[str] = []

    def make(*, migrate: bool = True) -> DatabaseUrls:
        name = f"ramparts_test_{secrets.token_hex(6)}"
        with psycopg.connect(libpq(pg_server), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        created.append(name)
        owner = pg_server.set(drivername="postgresql+psycopg", database=name)
        urls = DatabaseUrls(owner_url=owner, app=derive_app_url(owner))
        if migrate:
            upgrade(urls, migration_branches(installed_apps().values()))
        return urls

    yield make
    with psycopg.connect(libpq(pg_server), autocommit=True) as conn:
        for name in created:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def urls(make_database: Callable[..., DatabaseUrls]) -> DatabaseUrls:
    """The run's shared, migrated database. Tests isolate themselves with fresh tenants."""
    return make_database()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def cli_env(home: Path, **overrides: str) -> dict[str, str]:
    """Environment for running the `ramparts` CLI: no inherited RAMPARTS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAMPARTS_")}
    env["RAMPARTS_HOME"] = str(home)
    # The local KMS's generated key file goes here, not into the user's ~/.config.
    env["XDG_CONFIG_HOME"] = str(home) + "-config"
    env.update(overrides)
    return env


def cli_kms(home: Path) -> LocalKms:
    """The same local KMS a CLI run with `cli_env(home)` opens."""
    key_file = default_key_file(home, config_home=Path(str(home) + "-config"))
    return LocalKms(home / "keys" / "keystore.json", key_file=key_file, create_key_file=True)


# Live-server fixtures, defined once here so every directory shares one session `kms` (which
# wraps what the servers read, such as signing keys in the shared database).
from tests.live import client, free_port, kms, serve_app, serve_module_app  # noqa: E402

__all__ = [
    "cli_env",
    "cli_kms",
    "client",
    "free_port",
    "kms",
    "libpq",
    "serve_app",
    "serve_module_app",
]
