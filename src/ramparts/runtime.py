"""Composition root: turns settings into a running server, and guards production."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn
from sqlalchemy.engine import URL

from ramparts.config import Profile, Settings, production_violations
from ramparts.crypto.local import LocalSealer
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.services import demo_data_present
from ramparts.logs import configure_logging
from ramparts.web.app import create_app

__all__ = ["ProductionGuardError", "guard_production", "serve"]


class ProductionGuardError(Exception):
    """The prod profile found violations; the message lists every one of them."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("refusing to start under the prod profile: " + "; ".join(violations))


def guard_production(settings: Settings, *, demo_data_present: bool = False) -> None:
    """Raise `ProductionGuardError` listing every violation of the prod profile (PLT-1)."""
    violations = production_violations(settings, demo_data_present=demo_data_present)
    if violations:
        raise ProductionGuardError(violations)


async def _preflight(settings: Settings, app_url: URL) -> None:
    """Checks on the live database before serving: who we really are, and demo data."""
    database = Database(app_url, pool_size=1)
    try:
        await database.verify_runtime_role()
        demo = False
        if settings.profile is Profile.PROD:
            async with database.session() as session:
                demo = await demo_data_present(session)
    finally:
        await database.dispose()
    guard_production(settings, demo_data_present=demo)


def _tls13_only(
    tls_cert: Path, tls_key: Path
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def factory(_: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        context = default()
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        return context

    if not tls_cert.is_file() or not tls_key.is_file():
        raise FileNotFoundError(f"TLS certificate or key not found: {tls_cert}, {tls_key}")
    return factory


def serve(
    settings: Settings,
    urls: DatabaseUrls,
    *,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Run the HTTP server until interrupted. With a certificate it speaks TLS 1.3 only.

    Refuses to start (`UnsafeRuntimeRoleError`, `ProductionGuardError`) when the runtime
    connection is not the powerless runtime role or the prod profile's rules are broken.
    """
    configure_logging(settings)
    asyncio.run(_preflight(settings, urls.app))
    tls_factory = None
    if tls_cert is not None and tls_key is not None:
        tls_factory = _tls13_only(tls_cert, tls_key)
    config = uvicorn.Config(
        create_app(settings, Database(urls.app), LocalSealer.from_home(settings.home)),
        host=host,
        port=port,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        ssl_certfile=tls_cert if tls_factory else None,
        ssl_keyfile=tls_key if tls_factory else None,
        ssl_context_factory=tls_factory,
    )
    uvicorn.Server(config).run()
