"""`ramparts clients`: service clients (private_key_jwt or mTLS)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer

from ramparts.cli.common import JsonOption, UsageError, console, with_tenant
from ramparts.config import load_settings
from ramparts.identity.mtls import certificate_thumbprint
from ramparts.identity.services import Provisioning, TenantRecord

__all__ = ["clients_app"]

clients_app = typer.Typer(help="Service clients (private_key_jwt or mTLS).", no_args_is_help=True)


@clients_app.command("create")
def clients_create(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    name: Annotated[str, typer.Option(help="What the client is, for people.")],
    resource: Annotated[list[str], typer.Option(help="Audience it may request (repeat).")],
    role: Annotated[list[str] | None, typer.Option(help="Role its tokens carry (repeat).")] = None,
    jwks_file: Annotated[Path | None, typer.Option(help="Public JWKS (private_key_jwt).")] = None,
    cert_file: Annotated[Path | None, typer.Option(help="PEM client certificate (mTLS).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Register a service client; it authenticates with a key it keeps, never a shared secret."""
    if (jwks_file is None) == (cert_file is None):
        raise UsageError("give exactly one of --jwks-file and --cert-file")
    credential: dict[str, Any] = {}
    if jwks_file is not None:
        credential["jwks"] = json.loads(jwks_file.read_text())
    if cert_file is not None:
        der = ssl.PEM_cert_to_DER_cert(cert_file.read_text())
        credential["certificate_thumbprint"] = certificate_thumbprint(der)
    settings = load_settings()

    async def create(provisioning: Provisioning, record: TenantRecord) -> str:
        try:
            return await provisioning.create_service_client(
                record, name=name, resources=resource, roles=role or [], **credential
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    client_id = with_tenant(settings, create, tenant)
    if as_json:
        print(json.dumps({"client_id": client_id}))
    else:
        console.print(f"client_id [bold]{client_id}[/]")


@clients_app.command("revoke")
def clients_revoke(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    client_id: Annotated[str, typer.Argument(help="The client to revoke.")],
) -> None:
    """Revoke a service client: it gets no new tokens, and those it holds stop working now."""
    settings = load_settings()

    async def revoke(provisioning: Provisioning, record: TenantRecord) -> bool:
        return await provisioning.revoke_service_client(record, client_id)

    if not with_tenant(settings, revoke, tenant):
        raise UsageError(f"no active client {client_id!r} in tenant {tenant!r}")
    console.print(f"revoked {client_id}; its access tokens are refused from now on")
