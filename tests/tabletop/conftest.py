"""The drills' instances for tests: a fresh `ramparts demo` on a fresh database of the test
server, optionally with one control broken inside it (`sabotage/sitecustomize.py`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from ramparts.tabletop.instance import own_instance
from ramparts.tabletop.target import Target

SABOTAGE = Path(__file__).resolve().parent / "sabotage"


def sabotage_env(sabotage: str) -> dict[str, str]:
    """Environment that makes an instance start with `sabotage` (see sitecustomize.py)."""
    path = os.pathsep.join([str(SABOTAGE), os.environ.get("PYTHONPATH", "")])
    return {"PYTHONPATH": path, "RAMPARTS_TEST_SABOTAGE": sabotage}


@pytest.fixture(scope="session")
def drill_instance(pg_server: URL) -> Callable[..., AbstractContextManager[Target]]:
    """Factory: `with drill_instance(sabotage=None) as target:` a fresh instance."""
    server = pg_server.set(drivername="postgresql").render_as_string(hide_password=False)

    def start(sabotage: str | None = None) -> AbstractContextManager[Target]:
        env = sabotage_env(sabotage) if sabotage else {}
        return own_instance(database_server=server, env=env)

    return start


@pytest.fixture(scope="module")
def instance(drill_instance: Callable[..., AbstractContextManager[Target]]) -> Iterator[Target]:
    """One healthy instance shared by a module's tests."""
    with drill_instance() as target:
        yield target
