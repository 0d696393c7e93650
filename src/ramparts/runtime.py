"""Composition root: turns settings into a running server, and guards production."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.engine import URL

from ramparts.config import Profile, Settings, production_violations
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.identity.services import demo_data_present
from ramparts.logs import configure_logging
from ramparts.web.app import create_app
from ramparts.web.tls import ClientCertificateProtocol, tls13_context_factory

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


def serve(
    settings: Settings,
    urls: DatabaseUrls,
    *,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_client_ca: Path | None = None,
) -> None:
    """Run the HTTP server until interrupted. With a certificate it speaks TLS 1.3 only; with
    a client CA it also accepts client certificates (mTLS) issued by that CA.

    Refuses to start (`UnsafeRuntimeRoleError`, `ProductionGuardError`) when the runtime
    connection is not the powerless runtime role or the prod profile's rules are broken.
    """
    configure_logging(settings)
    asyncio.run(_preflight(settings, urls.app))
    tls: dict[str, Any] = {}
    if tls_cert is not None and tls_key is not None:
        for path in (tls_cert, tls_key, tls_client_ca):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"TLS file not found: {path}")
        tls = {
            "ssl_certfile": tls_cert,
            "ssl_keyfile": tls_key,
            "ssl_context_factory": tls13_context_factory(
                str(tls_client_ca) if tls_client_ca else None
            ),
            "http": ClientCertificateProtocol,
        }
    config = uvicorn.Config(
        create_app(settings, Database(urls.app), open_kms(settings)),
        host=host,
        port=port,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
        # Uvicorn's access log prints full query strings: authorization codes, state,
        # id_token_hint. Requests are not logged with their URLs at all.
        access_log=False,
        **tls,
    )
    uvicorn.Server(config).run()
