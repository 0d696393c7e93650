"""`ramparts idp`: a tenant's own OIDC identity provider (federated login)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ramparts.cli.common import UsageError, console, with_tenant
from ramparts.config import load_settings
from ramparts.identity.services import Provisioning, TenantRecord

__all__ = ["idp_app"]

idp_app = typer.Typer(
    help="A tenant's own OIDC identity provider (federated login).", no_args_is_help=True
)


@idp_app.command("set")
def idp_set(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    issuer: Annotated[str, typer.Option(help="The IdP's issuer URL (https).")],
    client_id: Annotated[str, typer.Option(help="Our client id at the IdP.")],
    client_secret_file: Annotated[
        Path | None, typer.Option(help="File holding our client secret, if the IdP uses one.")
    ] = None,
    mfa_amr: Annotated[
        list[str] | None, typer.Option(help="IdP amr values that prove MFA (repeat).")
    ] = None,
    mfa_acr: Annotated[
        list[str] | None, typer.Option(help="IdP acr values that prove MFA (repeat).")
    ] = None,
) -> None:
    """Let the tenant's users sign in through their own IdP (redirect URI:
    <RAMPARTS_PUBLIC_URL>/login/sso/callback)."""
    secret = client_secret_file.read_text().strip() if client_secret_file else None
    settings = load_settings()

    async def configure(provisioning: Provisioning, record: TenantRecord) -> None:
        try:
            await provisioning.set_identity_provider(
                record,
                issuer=issuer,
                client_id=client_id,
                client_secret=secret,
                mfa_amr=mfa_amr,
                mfa_acr=mfa_acr,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    with_tenant(settings, configure, tenant)
    console.print(f"tenant {tenant} signs in through {issuer}")


@idp_app.command("link")
def idp_link(
    tenant: Annotated[str, typer.Option(help="Tenant slug.")],
    username: Annotated[str, typer.Option(help="The user here.")],
    subject: Annotated[str, typer.Option(help="The user's `sub` at the IdP.")],
) -> None:
    """Allow one IdP account to sign in as one user here."""
    settings = load_settings()

    async def link(provisioning: Provisioning, record: TenantRecord) -> None:
        try:
            await provisioning.link_username(record, username=username, subject=subject)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    with_tenant(settings, link, tenant)
    console.print(f"{username} may now sign in as IdP subject {subject}")
