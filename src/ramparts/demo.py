"""Demo tenants and users, and each served app's demo data (`ramparts seed-demo`, dev profile
only).

The runtime creates the demo tenants and, in each, `admin@<tenant>.test` and every app's demo
users (`App.demo`; one person when two apps name the same local part, holding the roles of
both), then hands each tenant to the apps' seeds. Passwords and TOTP secrets are generated on
every run and only ever printed; the database keeps argon2id hashes and sealed secrets.
Re-running resets the demo users' credentials; what the seeds create is theirs to keep or not
duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyotp

from ramparts.apps import App, DemoUser, app_roles
from ramparts.audit.services import AuditLog
from ramparts.crypto.keys import DataKeys
from ramparts.crypto.kms import Kms
from ramparts.crypto.sealing import SealedFields
from ramparts.db.engine import Database
from ramparts.identity.models import ADMIN_ROLE
from ramparts.identity.passwords import generate_password
from ramparts.identity.services import Provisioning
from ramparts.payments.webhook_secrets import WebhookSecrets
from ramparts.web.pages import WEB_CLIENT_ID, web_client_redirect_uri

__all__ = ["ADMIN_USER", "DEMO_TENANTS", "demo_users", "seed_demo"]

DEMO_TENANTS = (("acme", "Acme Corporation", "eu"), ("globex", "Globex Inc.", "us"))
#: The runtime's own demo user: the tenant's administrator.
ADMIN_USER: DemoUser = ("admin", "Administrator", (ADMIN_ROLE,))


def demo_users(apps: Sequence[App]) -> list[DemoUser]:
    """The apps' demo users, then the administrator; a local part named twice is one user
    with the first display name and the roles of each (in the order first named)."""
    merged: dict[str, tuple[str, list[str]]] = {}
    for local, display, roles in [
        *(user for app in apps if app.demo is not None for user in app.demo.users),
        ADMIN_USER,
    ]:
        _, held = merged.setdefault(local, (display, []))
        held.extend(role for role in roles if role not in held)
    return [(local, display, tuple(roles)) for local, (display, roles) in merged.items()]


async def seed_demo(
    owner_db: Database, kms: Kms, audit: AuditLog, *, public_url: str, apps: Sequence[App]
) -> dict[str, Any]:
    """Create or refresh the demo data of the runtime and `apps`; return the credentials."""
    provisioning = Provisioning(owner_db, kms, audit, roles=app_roles(apps))
    fields = SealedFields(DataKeys(kms))
    people = demo_users(apps)
    tenants: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    for slug, name, region in DEMO_TENANTS:
        tenant = await provisioning.ensure_tenant(slug=slug, name=name, region=region, is_demo=True)
        tenants.append({"slug": slug, "id": str(tenant.id), "region": region})
        for local, display, roles in people:
            password, totp_secret = generate_password(), pyotp.random_base32()
            username = f"{local}@{slug}.test"
            await provisioning.set_user(
                tenant,
                username=username,
                display_name=display,
                password=password,
                roles=roles,
                totp_secret=totp_secret,
            )
            users.append(
                {
                    "tenant": slug,
                    "username": username,
                    "password": password,
                    "totp_secret": totp_secret,
                    "roles": list(roles),
                }
            )
        for app in apps:
            if app.demo is not None and app.demo.seed is not None:
                await app.demo.seed(owner_db, tenant, fields)
    client = {"client_id": WEB_CLIENT_ID, "redirect_uri": web_client_redirect_uri(public_url)}
    # The secret the sandbox PSP signs its webhooks with (made on the first run, then kept:
    # a re-seed must not break a sandbox already told the secret).
    webhook_secret = WebhookSecrets(kms).ensure().get_secret_value()
    return {
        "tenants": tenants,
        "users": users,
        "oidc_client": client,
        "webhook_secret": webhook_secret,
    }
