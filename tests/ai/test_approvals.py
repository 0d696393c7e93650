"""Approval requests at decision time: the person who asked is judged again as they are now,
and the listing shows the caller what they may decide apart from what they asked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.identity.models import Role
from tests.ai.test_assistant import NEW_QUOTE, POISON, ask, quotes_of, script, sign_in
from tests.audit.trail import recorded
from tests.identity.helpers import bearer, next_code, obtain_tokens


def owner_sql(urls: DatabaseUrls, sql: str, *params: object) -> None:
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(sql, params)


def test_a_request_runs_only_while_its_requester_may_still_make_it(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    setup = serve_app()
    buyer, buyer_headers = sign_in(setup, urls, kms, Role.BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=buyer_headers
    ).json()
    model = script(
        tmp_path,
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]},
        {"tool_calls": [{"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}]},
        {"tool_calls": [{"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Lamps"}}]},
    )
    server = serve_app(model=model)
    # The quote's own buyer asks (another buyer may not read it at all).
    requester = buyer
    assert requester.totp_secret is not None
    login = obtain_tokens(server, requester, otp=next_code(requester.totp_secret))
    requester_headers = bearer(login["access_token"])
    answer = ask(server, requester_headers, f"What does quote {poisoned['id']} say?")
    assert answer.status_code == 200, answer.text
    desks, lamps = (a["approval_id"] for a in answer.json()["actions"][1:])
    _, colleague = sign_in(server, urls, kms, Role.BUYER, tenant=buyer.tenant)

    def decidable() -> list[str]:
        listing = server.get("/api/approvals", headers=colleague)
        assert listing.status_code == 200, listing.text
        assert listing.json()["mine"] == []
        return [item["id"] for item in listing.json()["items"]]

    assert sorted(decidable()) == sorted([desks, lamps])  # asked in one transaction: one time
    # The requester loses the buyer role: nothing they asked for is the colleague's to run.
    owner_sql(
        urls,
        "DELETE FROM memberships WHERE tenant_id = %s AND user_id = %s",
        buyer.tenant_id,
        requester.user_id,
    )
    assert decidable() == []
    refused = server.post(f"/api/approvals/{desks}/approve", headers=colleague)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (
        "the person who asked may no longer quote.create: an approval confirms, it never widens"
    )
    titles = [title for _, title in quotes_of(urls, buyer.tenant_id)]
    assert "Desks" not in titles
    # The role is back, but the account is disabled: the same.
    owner_sql(
        urls,
        "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'buyer')",
        buyer.tenant_id,
        requester.user_id,
    )
    owner_sql(urls, "UPDATE users SET is_active = false WHERE id = %s", requester.user_id)
    assert decidable() == []
    assert server.post(f"/api/approvals/{desks}/approve", headers=colleague).status_code == 403
    # Rejecting runs nothing, so it stays possible.
    rejected = server.post(f"/api/approvals/{lamps}/reject", headers=colleague)
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    # Active again with the role: the request runs, once.
    owner_sql(urls, "UPDATE users SET is_active = true WHERE id = %s", requester.user_id)
    assert decidable() == [desks]
    approved = server.post(f"/api/approvals/{desks}/approve", headers=colleague)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert "Desks" in [title for _, title in quotes_of(urls, buyer.tenant_id)]
    assert "Lamps" not in [title for _, title in quotes_of(urls, buyer.tenant_id)]
    decided = recorded(urls, buyer.tenant_id, Action.APPROVAL_DECIDED)
    assert [d["decision"] for d in decided] == ["deny", "deny", "deny", "allow"]
    # Both the colleague's and the requester's authorization are in the trail of the decision.
    checked = recorded(urls, buyer.tenant_id, Action.AUTHORIZATION_DECIDED)
    actors = {e["actor"]["id"] for e in checked[-2:]}
    assert actors == {str(requester.user_id), decided[-1]["actor"]["id"]}


def test_the_listing_shows_the_callers_own_requests_apart(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    setup = serve_app()
    buyer, setup_headers = sign_in(setup, urls, kms, Role.BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=setup_headers
    ).json()
    model = script(
        tmp_path,
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]},
        {"tool_calls": [{"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}]},
    )
    server = serve_app(model=model)
    assert buyer.totp_secret is not None
    tokens = obtain_tokens(server, buyer, otp=next_code(buyer.totp_secret))
    buyer_headers = bearer(tokens["access_token"])
    answer = ask(server, buyer_headers, f"What does quote {poisoned['id']} say?")
    approval = answer.json()["actions"][1]["approval_id"]
    listing = server.get("/api/approvals", headers=buyer_headers).json()
    assert listing["items"] == []
    assert [(m["id"], m["tool"], m["mine"]) for m in listing["mine"]] == [
        (approval, "create_quote", True)
    ]
    assert listing["mine"][0]["arguments"]["title"] == "Desks"
    # A seller may not create quotes, so has nothing to decide here.
    _, seller = sign_in(server, urls, kms, Role.SELLER, tenant=buyer.tenant)
    assert server.get("/api/approvals", headers=seller).json() == {"items": [], "mine": []}
