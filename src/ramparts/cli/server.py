"""`ramparts migrate` and `ramparts serve`: a database brought to head, and the API served
from it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ramparts.apps import installed_apps, migration_branches, selected_apps
from ramparts.audit.services import ensure_audit_key
from ramparts.cli.common import JsonOption, UsageError, audit_log, console, with_owner
from ramparts.config import Settings, load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls, open_database
from ramparts.db.migrate import upgrade
from ramparts.identity.services import Provisioning
from ramparts.identity.tokens import overlap_for
from ramparts.payments.sandbox_service import sandbox_psp
from ramparts.runtime import guard_production, serve, worker_count
from ramparts.web.pages import WEB_CLIENT_ID, web_client_redirect_uri

__all__ = ["HostOption", "PortOption", "migrate", "migrate_database", "serve_command"]

HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]


def migrate_database(settings: Settings, urls: DatabaseUrls) -> dict[str, Any]:
    """Schema to head (the runtime's, and each served app's branch), then what the schema
    alone cannot hold: signing keys (tokens, audit checkpoints) and the web client registered
    for this RAMPARTS_PUBLIC_URL. The other installed apps' branches are known, not run."""
    before, after = upgrade(
        urls,
        migration_branches(selected_apps(settings.apps)),
        installed=migration_branches(installed_apps().values()),
    )

    async def bootstrap(owner: Database) -> str | None:
        kms = open_kms(settings)
        provisioning = Provisioning(owner, kms, audit_log(settings, owner, kms))
        async with owner.session() as session:
            await ensure_audit_key(session, kms)
        redirect = web_client_redirect_uri(settings.public_url)
        await provisioning.ensure_public_client(
            client_id=WEB_CLIENT_ID,
            name="Ramparts web app",
            redirect_uri=redirect,
            post_logout_redirect_uri=f"{settings.public_url}/",
        )
        return await provisioning.ensure_signing_key(
            overlap=overlap_for(settings.access_token_seconds)
        )

    created_key = asyncio.run(with_owner(urls, bootstrap))
    return {
        "from": sorted(before),
        "to": sorted(after),
        "changed": before != after,
        "signing_key_created": created_key,
    }


def migrate(as_json: JsonOption = False) -> None:
    """Create the runtime role and bring the schema to the latest revision."""
    settings = load_settings()
    with open_database(settings) as urls:
        result = migrate_database(settings, urls)
    if as_json:
        print(json.dumps(result))
    else:
        was = ", ".join(result["from"]) or "empty"
        console.print(f"schema at [bold]{', '.join(result['to'])}[/] (was {was})")


def serve_command(
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (enables TLS 1.3).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for --tls-cert.")] = None,
    tls_client_ca: Annotated[
        Path | None, typer.Option(help="PEM CA for client certificates (service mTLS).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (default: one per usable core, or 1 without "
            "RAMPARTS_REDIS_URL). More than 1 needs RAMPARTS_REDIS_URL, so the assistant's "
            "limits are shared, not multiplied.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (uvloop, httptools, one process per worker).

    The database connections (RAMPARTS_DB_MAX_CONNECTIONS, default half of what the server
    accepts) are divided over the workers; it refuses to start when they cannot go round.
    """
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if tls_client_ca is not None and tls_cert is None:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    settings = load_settings()
    # Configuration first: refuse before starting anything.
    worker_count(workers, settings)
    guard_production(settings)
    with open_database(settings) as urls:
        serve(
            settings,
            urls,
            host=host,
            port=port,
            workers=workers,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_client_ca=tls_client_ca,
            beside=sandbox_psp,
        )
