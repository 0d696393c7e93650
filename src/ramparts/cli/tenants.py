"""`ramparts tenants`: deleting (crypto-shredding) a tenant."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ramparts.cli.common import JsonOption, UsageError, print_result, with_tenant
from ramparts.config import load_settings
from ramparts.identity.services import Provisioning, TenantRecord

__all__ = ["tenants_app"]

tenants_app = typer.Typer(help="Tenants.", no_args_is_help=True)


@tenants_app.command("delete")
def tenants_delete(
    slug: Annotated[str, typer.Argument(help="Tenant slug.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: this cannot be undone, even from a backup.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a tenant and crypto-shred it: its KMS key and data keys are destroyed, so its
    encrypted fields stay unreadable in every backup. The audit trail is kept."""
    if not yes:
        raise UsageError(f"deleting {slug!r} destroys its keys for good: add --yes to confirm")
    settings = load_settings()

    async def delete(provisioning: Provisioning, record: TenantRecord) -> dict[str, Any]:
        shredded = await provisioning.delete_tenant(record)
        return {"tenant": record.slug, "id": str(record.id), "data_keys_shredded": shredded}

    result = with_tenant(settings, delete, slug)
    print_result(
        result,
        as_json,
        f"tenant {slug} deleted; {result['data_keys_shredded']} data key(s) shredded",
    )
