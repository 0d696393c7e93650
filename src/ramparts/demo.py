"""Demo tenants, users and sample quotes (`ramparts seed-demo`, dev profile only).

Passwords and TOTP secrets are generated on every run and only ever printed; the database keeps
argon2id hashes and sealed secrets. Re-running resets the demo users' credentials and leaves
existing quotes alone.
"""

from __future__ import annotations

from typing import Any

import pyotp
from sqlalchemy import func, select

from ramparts.audit.services import AuditLog
from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database
from ramparts.identity.models import Role, User
from ramparts.identity.passwords import generate_password
from ramparts.identity.services import Provisioning, TenantRecord
from ramparts.quotes.models import Quote, Sensitivity
from ramparts.quotes.services import LineItem, QuoteService
from ramparts.web.pages import WEB_CLIENT_ID, web_client_redirect_uri

__all__ = ["DEMO_TENANTS", "DEMO_USERS", "seed_demo"]

DEMO_TENANTS = (("acme", "Acme Corporation", "eu"), ("globex", "Globex Inc.", "us"))
DEMO_USERS: tuple[tuple[str, str, tuple[Role, ...]], ...] = (
    ("buyer", "Buyer", (Role.BUYER,)),
    # A second buyer shows ownership: neither buyer sees or changes the other's requests.
    ("buyer2", "Buyer (another team)", (Role.BUYER,)),
    ("seller", "Seller", (Role.SELLER,)),
    ("finance", "Finance", (Role.FINANCE,)),
    ("finance2", "Finance (second approver)", (Role.FINANCE,)),
    ("admin", "Administrator", (Role.ADMIN,)),
)
# Who asks (a demo user's local part), the title, sensitivity and line items.
SAMPLE_QUOTES = (
    (
        "buyer",
        "Office chairs for the new floor",
        Sensitivity.INTERNAL,
        (LineItem("Ergonomic chair", 40, 18_900), LineItem("Delivery and assembly", 1, 45_000)),
    ),
    (
        "buyer",
        "Annual laptop refresh",
        Sensitivity.CONFIDENTIAL,
        (LineItem("14-inch laptop", 25, 129_900), LineItem("Three-year warranty", 25, 14_900)),
    ),
    (
        "buyer2",
        "Catering for the partner summit",
        Sensitivity.PUBLIC,
        (LineItem("Lunch per guest", 120, 2_450),),
    ),
)


async def seed_demo(
    owner_db: Database, kms: Kms, audit: AuditLog, *, public_url: str
) -> dict[str, Any]:
    """Create or refresh the demo data and return the credentials report."""
    provisioning = Provisioning(owner_db, kms, audit)
    tenants: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    for slug, name, region in DEMO_TENANTS:
        tenant = await provisioning.ensure_tenant(slug=slug, name=name, region=region, is_demo=True)
        tenants.append({"slug": slug, "id": str(tenant.id), "region": region})
        for local, display, roles in DEMO_USERS:
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
                    "roles": [role.value for role in roles],
                }
            )
        await _sample_quotes(owner_db, tenant)
    client = {"client_id": WEB_CLIENT_ID, "redirect_uri": web_client_redirect_uri(public_url)}
    # The sandbox PSP's webhook secret arrives with the payments issue.
    return {"tenants": tenants, "users": users, "oidc_client": client, "webhook_secret": None}


async def _sample_quotes(owner_db: Database, tenant: TenantRecord) -> None:
    currency = "EUR" if tenant.region == "eu" else "USD"
    async with owner_db.tenant_session(tenant.id) as session:
        # Explicit tenant filters: the owner may be a superuser, which RLS does not confine.
        if await session.scalar(
            select(func.count()).select_from(Quote).where(Quote.tenant_id == tenant.id)
        ):
            return
        quotes = QuoteService(session)
        for buyer, title, sensitivity, items in SAMPLE_QUOTES:
            username = f"{buyer}@{tenant.slug}.test"
            buyer_id = await session.scalar(
                select(User.id).where(User.tenant_id == tenant.id, User.username == username)
            )
            if buyer_id is None:
                raise LookupError(f"demo buyer {username} missing")
            await quotes.create(
                tenant_id=tenant.id,
                buyer_id=buyer_id,
                title=title,
                currency=currency,
                items=items,
                sensitivity=sensitivity,
            )
