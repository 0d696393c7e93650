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

from ramparts.cli.common import open_provisioning, with_owner
from ramparts.config import load_settings
from ramparts.db.engine import Database, open_database

__all__ = ["main"]

#: The role the throwaway person holds: the runtime's own, whatever apps are installed.
ROLE = "admin"


def main() -> None:
    slug, totp_secret = sys.argv[1], sys.stdin.read().strip()
    settings = load_settings()

    async def provision(owner: Database) -> dict[str, str]:
        provisioning = open_provisioning(settings, owner)
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

    with open_database(settings) as urls:
        print(json.dumps(asyncio.run(with_owner(urls, provision))))


if __name__ == "__main__":
    main()
