"""A throwaway tenant, provisioned as the instance's operator provisions one (the owner's
`Provisioning`, with the instance's settings and KMS), for a check that destroys a tenant:
AZ-5's crypto-shredding. Run as `python -m ramparts.tabletop.conformance.throwaway SLUG` in
the operator's environment; the TOTP secret to seal comes on stdin (never on the command
line); prints `{"tenant": id, "user": id}`."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys

from ramparts.apps import app_roles, encrypted_columns_of, installed_apps, selected_apps
from ramparts.audit.services import AuditLog, audit_redactor
from ramparts.config import load_settings
from ramparts.crypto.backends import open_kms
from ramparts.db.engine import Database, DatabaseUrls, open_database
from ramparts.identity.services import Provisioning

__all__ = ["main"]

#: The role the throwaway person holds: the runtime's own, whatever apps are installed.
ROLE = "admin"


def main() -> None:
    slug, totp_secret = sys.argv[1], sys.stdin.read().strip()
    settings = load_settings()

    async def provision(owner: Database) -> dict[str, str]:
        # As `ramparts` provisions (cli.common.open_provisioning): the apps' roles and columns.
        kms = open_kms(settings)
        provisioning = Provisioning(
            owner,
            kms,
            AuditLog(owner, audit_redactor(settings, kms)),
            roles=app_roles(selected_apps(settings.apps)),
            app_columns=encrypted_columns_of(installed_apps().values()),
        )
        tenant = await provisioning.ensure_tenant(slug=slug, name=f"Drill {slug}", region="eu")
        user = await provisioning.set_user(
            tenant,
            username=f"shred@{slug}.test",
            display_name="Throwaway",
            password=secrets.token_urlsafe(24),
            roles=[ROLE],
            totp_secret=totp_secret,
        )
        return {"tenant": str(tenant.id), "user": str(user)}

    async def as_owner(urls: DatabaseUrls) -> dict[str, str]:
        owner = Database(urls.owner, pool_size=1)
        try:
            return await provision(owner)
        finally:
            await owner.dispose()

    with open_database(settings) as urls:
        print(json.dumps(asyncio.run(as_owner(urls))))


if __name__ == "__main__":
    main()
