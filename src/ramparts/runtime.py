"""Composition root: turns settings into a running server, and guards production.

`serve` checks the live database once (`_preflight`), sizes the connection pools, then hands
uvicorn an app factory (`worker_app`) that every worker process calls: the parent prepares
the environment the workers read (`WORKER_HANDOFF`: the runtime database URL, which the
embedded server makes up at start, the pool sizes, and any setting the caller changed), so
nothing travels on a command line.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from ramparts.apps import policy_engine, selected_apps
from ramparts.config import Profile, Settings, load_settings, production_violations
from ramparts.crypto.backends import open_kms, server_secret
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.services import demo_data_present
from ramparts.logs import configure_logging
from ramparts.metrics import MULTIPROCESS_ENV, prepare_multiprocess
from ramparts.web.app import create_app
from ramparts.web.tls import ClientCertificateProtocol, Tls13ContextFactory

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "MAX_WORKERS",
    "MIN_CONNECTIONS_PER_WORKER",
    "WORKER_HANDOFF",
    "Beside",
    "Pool",
    "ProductionGuardError",
    "ServeSizingError",
    "ServerConnections",
    "Sizing",
    "guard_production",
    "serve",
    "server_connections",
    "size_pools",
    "usable_cores",
    "worker_app",
    "worker_count",
]

#: The environment variable through which `serve` hands each worker what it prepared. Not a
#: `RAMPARTS_*` setting: nobody sets it but `serve`.
WORKER_HANDOFF = "_RAMPARTS_WORKER"
#: How long a worker may take to answer the server's health check. Uvicorn's default, 5 s, is
#: shorter than a worker takes to import the runtime and compose the apps' Cedar on a busy
#: machine (9 to 17 s measured with 2 cores under a load of 12): every worker was killed
#: while starting, again and again.
WORKER_HEALTHCHECK_SECONDS = 60
#: Under RAMPARTS_HOME: the workers' metric samples (`ramparts.metrics`), emptied at start.
METRICS_DIRECTORY = "metrics"
MAX_WORKERS = 64
#: Each worker's least: a request, the background tasks' one at a time, a refusal's event.
MIN_CONNECTIONS_PER_WORKER = 3
#: Per worker, at most what one process was given before workers existed (15 and 12): more
#: connections than that only queue on the server's cores.
APP_POOL_MAX, AUDIT_POOL_MAX = 15, 12
CONNECTION_LIMITS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
           + coalesce(current_setting('reserved_connections', true)::int, 0)
"""

#: What runs beside the server (`serve(beside=...)`): given the settings, it yields the ones
#: the workers get.
Beside = Callable[[Settings], AbstractContextManager[Settings]]

log = structlog.get_logger(__name__)


class ProductionGuardError(Exception):
    """The prod profile found violations; the message lists every one of them."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("refusing to start under the prod profile: " + "; ".join(violations))


class ServeSizingError(ValueError):
    """The workers or the connection budget asked for cannot work; one line naming the
    numbers (exit 2)."""


def guard_production(settings: Settings, *, demo_data_present: bool = False) -> None:
    """Raise `ProductionGuardError` listing every violation of the prod profile (PLT-1)."""
    violations = production_violations(settings, demo_data_present=demo_data_present)
    if violations:
        raise ProductionGuardError(violations)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def worker_count(requested: int | None, settings: Settings) -> int:
    """How many worker processes to run: `requested`, else one per usable core.

    Without Redis the assistant's rate limits and budgets live in each process's memory, so
    N workers would grant N times the limit: the default is then one worker (logged), and
    asking for more is refused.
    """
    if requested is not None and not 1 <= requested <= MAX_WORKERS:
        raise ServeSizingError(f"--workers must be between 1 and {MAX_WORKERS}, not {requested}")
    shared = settings.redis_url is not None
    if requested is None:
        return usable_cores() if shared else 1
    if requested > 1 and not shared:
        raise ServeSizingError(
            f"--workers {requested} needs RAMPARTS_REDIS_URL: without it the assistant's "
            "rate limits and budgets are kept per process and would multiply by the workers"
        )
    return requested


@dataclass(frozen=True)
class ServerConnections:
    """What the PostgreSQL server accepts: `max_connections`, less the reserved slots."""

    max_connections: int
    reserved: int

    @property
    def usable(self) -> int:
        return self.max_connections - self.reserved

    def __str__(self) -> str:
        return (
            f"the server's {self.usable} usable connections "
            f"(max_connections {self.max_connections} - {self.reserved} reserved)"
        )


async def server_connections(database: Database) -> ServerConnections:
    async with database.session() as session:
        max_connections, reserved = (await session.execute(text(CONNECTION_LIMITS))).one()
    return ServerConnections(int(max_connections), int(reserved))


@dataclass(frozen=True)
class Pool:
    """A SQLAlchemy pool: `size` connections kept, up to `overflow` more under load."""

    size: int
    overflow: int

    @property
    def most(self) -> int:
        return self.size + self.overflow

    @classmethod
    def of(cls, most: int) -> Pool:
        """A pool that keeps every connection it opens, up to `most`: one that closed its
        overflow after each use would have PostgreSQL start a backend per request under
        load (a fork, authentication and cold caches, on the server's cores)."""
        return cls(most, 0)


@dataclass(frozen=True)
class Sizing:
    workers: int
    budget: int
    server: ServerConnections
    app: Pool
    audit: Pool

    @property
    def most(self) -> int:
        """The connections all workers may hold at once."""
        return self.workers * (self.app.most + self.audit.most)


def size_pools(workers: int, server: ServerConnections, budget: int | None = None) -> Sizing:
    """Divide this instance's connection budget (`RAMPARTS_DB_MAX_CONNECTIONS`, default half
    of the server's usable connections) over the workers, then over each one's app pool and
    its audit pool (a fifth, at least one). Raises `ServeSizingError` when the budget exceeds
    the server or cannot give each worker `MIN_CONNECTIONS_PER_WORKER`."""
    if budget is None:
        budget = server.usable // 2
    elif budget > server.usable:
        raise ServeSizingError(f"RAMPARTS_DB_MAX_CONNECTIONS={budget} is more than {server}")
    share = budget // workers
    if share < MIN_CONNECTIONS_PER_WORKER:
        raise ServeSizingError(
            f"{workers} worker(s) need at least {workers * MIN_CONNECTIONS_PER_WORKER} database "
            f"connections ({MIN_CONNECTIONS_PER_WORKER} each); this instance may use {budget} "
            f"of {server} (set RAMPARTS_DB_MAX_CONNECTIONS or fewer --workers)"
        )
    audit = min(AUDIT_POOL_MAX, max(1, share // 5))
    app = min(APP_POOL_MAX, share - audit)
    return Sizing(
        workers,
        budget,
        server,
        Pool.of(app),
        Pool.of(audit),
    )


async def _preflight(settings: Settings, app_url: URL, workers: int) -> Sizing:
    """Checks on the live database before serving: who we really are, demo data, and how
    many connections the workers may hold."""
    database = Database(
        app_url, pool_size=1, max_overflow=0, transaction_pooler=settings.transaction_pooler
    )
    try:
        await database.verify_runtime_role()
        demo = False
        if settings.profile is Profile.PROD:
            async with database.session() as session:
                demo = await demo_data_present(session)
        server = await server_connections(database)
    finally:
        await database.dispose()
    guard_production(settings, demo_data_present=demo)
    return size_pools(workers, server, settings.db_max_connections)


def _overrides(settings: Settings) -> dict[str, Any]:
    """The settings the caller changed from what the environment says (the demo's public
    URL), for the workers, which read the environment. Secrets are never among them."""
    from_env = load_settings()
    changed = {
        name for name in Settings.model_fields if getattr(settings, name) != getattr(from_env, name)
    }
    secrets = sorted(name for name in changed if isinstance(getattr(settings, name), SecretStr))
    if secrets:
        raise TypeError(f"secret settings must come from the environment: {', '.join(secrets)}")
    return settings.model_dump(mode="json", include=changed)


def worker_app() -> FastAPI:
    """Uvicorn's app factory, called once in every worker process (and in the server's own
    process with one worker): the app, from the environment `serve` prepared."""
    handoff = os.environ.get(WORKER_HANDOFF)
    if handoff is None:
        raise RuntimeError(f"{WORKER_HANDOFF} is unset: workers are started by `ramparts serve`")
    prepared = json.loads(handoff)
    settings = load_settings()
    if prepared["settings"]:
        settings = Settings(**prepared["settings"])
    configure_logging(settings)
    url = make_url(prepared["app_url"])
    app_pool, audit_pool = Pool(*prepared["app_pool"]), Pool(*prepared["audit_pool"])
    pooler = settings.transaction_pooler
    return create_app(
        settings,
        Database(
            url,
            pool_size=app_pool.size,
            max_overflow=app_pool.overflow,
            transaction_pooler=pooler,
        ),
        open_kms(settings),
        audit_database=Database(
            url,
            pool_size=audit_pool.size,
            max_overflow=audit_pool.overflow,
            transaction_pooler=pooler,
        ),
    )


def serve(
    settings: Settings,
    urls: DatabaseUrls,
    *,
    host: str,
    port: int,
    workers: int | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
    beside: Beside | None = None,
) -> None:
    """Run the HTTP server until interrupted, in `workers` processes (see `worker_count`)
    with uvloop and httptools. With a certificate it speaks TLS 1.3 only; with a client CA
    it also accepts client certificates (mTLS) issued by that CA. `beside` runs for as long
    as the server does, entered once every check has passed (the sandbox PSP,
    `ramparts.payments.sandbox_service.sandbox_psp`): the settings it yields are the ones
    every worker gets.

    Refuses to start (`AppError`, `PolicyError`, `UnsafeRuntimeRoleError`,
    `ProductionGuardError`, `ServeSizingError`) when `RAMPARTS_APPS` names an app that is not
    installed or whose Cedar does not compose with the runtime's, the runtime
    connection is not the powerless runtime role, the prod profile's rules are broken, or the
    database cannot give every worker its connections.
    """
    configure_logging(settings)
    count = worker_count(workers, settings)
    # Every worker loads the apps and composes their Cedar: an unknown app, or Cedar that may
    # not be composed (`PolicyError`), stops us here.
    policy_engine(selected_apps(settings.apps))
    sizing = asyncio.run(_preflight(settings, urls.app, count))
    # Once here: a KMS that does not answer fails before any worker starts, and the install's
    # secret exists before the workers read it.
    server_secret(settings, open_kms(settings))
    if count < usable_cores() and workers is None:
        log.info(
            "serve_single_worker",
            reason="RAMPARTS_REDIS_URL is unset: limits kept in memory hold per process",
            cores=usable_cores(),
        )
    log.info(
        "serve_sizing",
        workers=count,
        connections=sizing.most,
        budget=sizing.budget,
        server_usable=sizing.server.usable,
        app_pool=f"{sizing.app.size}+{sizing.app.overflow}",
        audit_pool=f"{sizing.audit.size}+{sizing.audit.overflow}",
    )
    tls: dict[str, Any] = {"http": "httptools"}
    if tls_cert is not None and tls_key is not None:
        for path in (tls_cert, tls_key, tls_client_ca):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"TLS file not found: {path}")
        tls = {
            "ssl_certfile": tls_cert,
            "ssl_keyfile": tls_key,
            "ssl_context_factory": Tls13ContextFactory(
                str(tls_client_ca) if tls_client_ca else None
            ),
            "http": ClientCertificateProtocol,
        }
    with ExitStack() as running:
        if beside is not None:
            settings = running.enter_context(beside(settings))
        _run_workers(settings, urls, sizing, host=host, port=port, tls=tls)


def _run_workers(
    settings: Settings,
    urls: DatabaseUrls,
    sizing: Sizing,
    *,
    host: str,
    port: int,
    tls: dict[str, Any],
) -> None:
    os.environ[WORKER_HANDOFF] = json.dumps(
        {
            "app_url": urls.app.render_as_string(hide_password=False),
            "app_pool": [sizing.app.size, sizing.app.overflow],
            "audit_pool": [sizing.audit.size, sizing.audit.overflow],
            "settings": _overrides(settings),
        }
    )
    if sizing.workers > 1:
        # Each worker, a fresh interpreter, keeps its metrics there as it imports
        # prometheus_client, so /metrics in any worker reports the whole instance.
        prepare_multiprocess(settings.home.resolve() / METRICS_DIRECTORY)
    try:
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            workers=sizing.workers,
            host=host,
            port=port,
            loop="uvloop",
            server_header=False,
            proxy_headers=False,
            lifespan="on",
            # Uvicorn's access log prints full query strings: authorization codes, state,
            # id_token_hint. Each request is logged by `ramparts.web.telemetry` instead, with
            # its route template.
            access_log=False,
            # Uvicorn's own lines go through ours (`configure_logging`): JSON, redacted.
            log_config=None,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            **tls,
        )
    finally:
        del os.environ[WORKER_HANDOFF]
        os.environ.pop(MULTIPROCESS_ENV, None)
