"""Composition root: turns settings into a running server, and guards production."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ramparts.config import Profile, Settings, production_violations
from ramparts.db.engine import Database, DatabaseUrls, open_database
from ramparts.identity.services import demo_data_present
from ramparts.logs import configure_logging
from ramparts.web.app import create_app

__all__ = ["ProductionGuardError", "check_production", "serve"]


class ProductionGuardError(Exception):
    """The prod profile found violations; the message lists every one of them."""

    def __init__(self, violations: list[str]) -> None:
        self.violations = violations
        super().__init__("refusing to start under the prod profile: " + "; ".join(violations))


async def _demo_data_present(urls: DatabaseUrls) -> bool:
    owner = Database(urls.owner, pool_size=1)
    try:
        async with owner.session() as session:
            return await demo_data_present(session)
    finally:
        await owner.dispose()


def check_production(settings: Settings) -> None:
    """Raise `ProductionGuardError` when the prod profile's rules are broken (control PLT-1)."""
    if settings.profile is not Profile.PROD:
        return
    demo = False
    if not settings.embedded_database:  # never start an embedded server just to inspect it
        with open_database(settings) as urls:
            demo = asyncio.run(_demo_data_present(urls))
    violations = production_violations(settings, demo_data_present=demo)
    if violations:
        raise ProductionGuardError(violations)


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
    """Run the HTTP server until interrupted. With a certificate it speaks TLS 1.3 only."""
    configure_logging(settings)
    tls_factory = None
    if tls_cert is not None and tls_key is not None:
        tls_factory = _tls13_only(tls_cert, tls_key)
    config = uvicorn.Config(
        create_app(settings, Database(urls.app)),
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
