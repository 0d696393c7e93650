"""The app's page, plugged into the runtime's web app: in the navigation of its own roles only,
and acting through the app's API as the signed-in person (the four-eyes rule holds there)."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from ramparts.web.pages import WEB_CLIENT_ID
from tests.identity.helpers import Account
from tests.web.sessions_helpers import page_csrf, sign_in_web

from test_expenses_api import CLAIM, person, server, signed_in
from world import World

__all__ = ["server"]

pytestmark = pytest.mark.anyio


async def test_an_approver_approves_a_claim_on_the_page(world: World, server: httpx.Client) -> None:
    ours = await world.tenant()
    base = str(server.base_url).rstrip("/")
    await world.provisioning.ensure_public_client(
        client_id=WEB_CLIENT_ID,
        name="Ramparts",
        redirect_uri=f"{base}/app/callback",
        post_logout_redirect_uri=f"{base}/",
    )
    employee = await signed_in(world, ours, "employee", server)
    approver = await person(world, ours, "approver")
    await asyncio.to_thread(_approve_on_the_page, server, employee, approver)


def _approve_on_the_page(server: httpx.Client, employee: dict[str, str], approver: Account) -> None:
    made = server.post("/api/expenses", json=CLAIM, headers=employee)
    assert made.status_code == 201, made.text
    claim = made.json()["id"]
    with httpx.Client(base_url=server.base_url) as browser:
        listing = sign_in_web(browser, approver, "/app/expenses")
        assert listing.status_code == 200, listing.text
        assert re.search(r'<a href="/app/expenses"[^>]*>Expenses</a>', listing.text)
        assert "/app/quotes" not in listing.text  # the quote app is not served here
        assert "Taxi to the airport" in listing.text
        assert "42.50 EUR" in listing.text
        assert f'action="/app/expenses/{claim}/approve"' in listing.text
        refused = browser.post(f"/app/expenses/{claim}/approve", data={"csrf": "forged"})
        assert refused.status_code == 403
        approved = browser.post(f"/app/expenses/{claim}/approve", data={"csrf": page_csrf(listing)})
        assert approved.status_code == 303
        again = browser.get("/app/expenses")
        assert ">approved<" in again.text
        assert f"/app/expenses/{claim}/approve" not in again.text
    assert server.get(f"/api/expenses/{claim}", headers=employee).json()["status"] == "approved"
