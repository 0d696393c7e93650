"""The app's routes, served by the runtime behind its permission gate, to people signed in
through the real sign-in flow: each route's Cedar action, the tenant wall (404), the roles
and the four-eyes rule (403), and payment only to the account the employee gave (422)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pyotp
import pytest
from ramparts.config import Settings
from ramparts.db.engine import Database
from ramparts.web.app import create_app
from tests.identity.helpers import CLIENT_ID, REDIRECT_URI, Account, obtain_tokens
from tests.live import LiveServer, free_port

from ramparts_expenses.app import EXPENSES
from world import Tenant, World

pytestmark = pytest.mark.anyio

OWN_IBAN = "DE89 3704 0044 0532 0130 00"
CLAIM = {
    "description": "Taxi to the airport",
    "amount_minor": 4_250,
    "currency": "EUR",
    "payee_iban": OWN_IBAN,
    "receipt_text": "City Cabs, fare 42.50",
}


@pytest.fixture
def server(world: World) -> Iterator[httpx.Client]:
    port = free_port()
    settings = Settings(  # type: ignore[call-arg]
        home="/nonexistent",
        secret_key=secrets.token_urlsafe(32),
        public_url=f"http://127.0.0.1:{port}",
    )
    database = Database(world.database.engine.url, pool_size=2)
    app = create_app(settings, database, world.kms, apps=[EXPENSES])
    live = LiveServer(app, port)
    try:
        yield live.__enter__()
    finally:
        live.__exit__()


async def signed_in(world: World, tenant: Tenant, who: str, server: httpx.Client) -> dict[str, str]:
    """`who`'s bearer header, from the sign-in flow (password and TOTP)."""
    account = await person(world, tenant, who)
    tokens = await asyncio.to_thread(obtain_tokens, server, account)
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def person(world: World, tenant: Tenant, who: str) -> Account:
    """`who` of `tenant`, able to sign in (password and TOTP) through the test client."""
    secret, password = pyotp.random_base32(), secrets.token_urlsafe(16)
    username = f"{who}@{tenant.record.slug}.test"
    user = await world.provisioning.set_user(
        tenant.record,
        username=username,
        display_name=who.title(),
        password=password,
        roles=tenant.people[who].roles,
        totp_secret=secret,
    )
    await world.provisioning.ensure_public_client(
        client_id=CLIENT_ID,
        name="Test client",
        redirect_uri=REDIRECT_URI,
        post_logout_redirect_uri="https://client.example/",
    )
    await world.provisioning.ensure_signing_key(overlap=timedelta(seconds=630))
    return Account(tenant.record.slug, tenant.id, username, password, secret, user)


async def test_claims_through_the_api(world: World, server: httpx.Client) -> None:
    ours, theirs = await world.tenant(), await world.tenant()
    who = {
        name: await signed_in(world, ours, name, server)
        for name in ("employee", "colleague", "approver", "manager", "finance")
    }
    stranger = await signed_in(world, theirs, "finance", server)
    async with httpx.AsyncClient(base_url=server.base_url) as api:
        await claims(world, ours, api, who, stranger)


async def claims(
    world: World,
    ours: Tenant,
    api: httpx.AsyncClient,
    who: dict[str, dict[str, str]],
    stranger: dict[str, str],
) -> None:

    made = await api.post("/api/expenses", json=CLAIM, headers=who["employee"])
    assert made.status_code == 201, made.text
    claim = made.json()
    assert (claim["status"], claim["amount_minor"]) == ("submitted", 4_250)
    assert "payee_iban" not in claim
    path = f"/api/expenses/{claim['id']}"
    # The employee reads their own claim with its account; a colleague does not see it.
    read = await api.get(path, headers=who["employee"])
    assert read.json()["payee_iban"] == "DE89370400440532013000"
    assert (await api.get(path, headers=who["colleague"])).status_code == 403
    assert (await api.get("/api/expenses", headers=who["colleague"])).json() == {"items": []}
    assert [
        c["id"] for c in (await api.get("/api/expenses", headers=who["approver"])).json()["items"]
    ] == [claim["id"]]
    # Another tenant's Finance learns nothing, not even that it exists.
    for request in (
        await api.get(path, headers=stranger),
        await api.post(f"{path}/reimburse", json={"payee_iban": OWN_IBAN}, headers=stranger),
    ):
        assert request.status_code == 404, request.text
    assert (await api.get("/api/expenses", headers=stranger)).json() == {"items": []}

    # An employee approves nothing; Finance pays only what an approver approved.
    assert (await api.post(f"{path}/approve", headers=who["employee"])).status_code == 403
    assert (await api.post(f"{path}/approve", headers=who["finance"])).status_code == 403
    early = await api.post(
        f"{path}/reimburse", json={"payee_iban": OWN_IBAN}, headers=who["finance"]
    )
    assert early.status_code == 409, early.text
    approved = await api.post(f"{path}/approve", headers=who["approver"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    # Paying is Finance's, and only to the account the employee gave.
    pay = {"payee_iban": OWN_IBAN}
    assert (
        await api.post(f"{path}/reimburse", json=pay, headers=who["approver"])
    ).status_code == 403
    elsewhere = await api.post(
        f"{path}/reimburse",
        json={"payee_iban": "GB82 WEST 1234 5698 7654 32"},
        headers=who["finance"],
    )
    assert elsewhere.status_code == 422, elsewhere.text
    paid = await api.post(f"{path}/reimburse", json=pay, headers=who["finance"])
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "reimbursed"

    # A manager claims and approves, never their own claim.
    own = (await api.post("/api/expenses", json=CLAIM, headers=who["manager"])).json()
    refused = await api.post(f"/api/expenses/{own['id']}/approve", headers=who["manager"])
    assert refused.status_code == 403, refused.text
    stored, _ = await world.read(ours, own["id"])
    assert stored.status.value == "submitted"
