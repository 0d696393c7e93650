"""Approval requests at decision time: the call runs as the person who asked, judged again as
they are now; who may do the same on a resource of their own confirms it; the listing shows
the caller what they may decide apart from what they asked, of tools switched on, however
many requests nobody here may decide come first."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI

from ramparts.ai.tools import AfterUntrusted, Risk, Tool, ToolRun
from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.identity.models import ADMIN_ROLE
from ramparts.policy.engine import Target
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.quotes.services import QuoteService, quote_target
from ramparts.quotes.tools import QUOTE_ID_ONLY
from tests.ai.test_assistant import (
    NEW_QUOTE,
    POISON,
    ask,
    quotes_of,
    script,
    sign_in,
    signed_in_again,
)
from tests.audit.trail import recorded


def owner_sql(urls: DatabaseUrls, sql: str, *params: object) -> None:
    with psycopg.connect(libpq(urls.owner)) as conn:
        conn.execute(sql, params)


def test_a_request_runs_only_while_its_requester_may_still_make_it(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    setup = serve_app()
    buyer, buyer_headers = sign_in(setup, urls, kms, BUYER)
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
    requester_headers = signed_in_again(server, requester)
    answer = ask(server, requester_headers, f"What does quote {poisoned['id']} say?")
    assert answer.status_code == 200, answer.text
    desks, lamps = (a["approval_id"] for a in answer.json()["actions"][1:])
    _, colleague = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)

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
        "the person who asked may no longer Quotes::quote.create: "
        "an approval confirms, it never widens"
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
    buyer, setup_headers = sign_in(setup, urls, kms, BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=setup_headers
    ).json()
    model = script(
        tmp_path,
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]},
        {"tool_calls": [{"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}]},
    )
    server = serve_app(model=model)
    buyer_headers = signed_in_again(server, buyer)
    answer = ask(server, buyer_headers, f"What does quote {poisoned['id']} say?")
    approval = answer.json()["actions"][1]["approval_id"]
    listing = server.get("/api/approvals", headers=buyer_headers).json()
    assert listing["items"] == []
    assert [(m["id"], m["tool"], m["mine"]) for m in listing["mine"]] == [
        (approval, "create_quote", True)
    ]
    assert listing["mine"][0]["arguments"]["title"] == "Desks"
    # A seller may not create quotes, so has nothing to decide here.
    _, seller = sign_in(server, urls, kms, SELLER, tenant=buyer.tenant)
    assert server.get("/api/approvals", headers=seller).json() == {"items": [], "mine": []}


def who_runs_tool(ran: list[tuple[str, str | None]]) -> Callable[[FastAPI], None]:
    """A read tool that waits for approval after untrusted content and records, for each run,
    who it ran as and who approved it."""

    async def who(run: ToolRun) -> dict[str, Any]:
        approver = run.approved_by
        ran.append((run.principal.subject, None if approver is None else approver.subject))
        return {"ok": True}

    async def target(run: ToolRun) -> Target:
        return Target(QuoteAction.QUOTE_READ.entity_type, "*", str(run.principal.tenant_id))

    def register(app: FastAPI) -> None:
        app.state.tools.register(
            Tool(
                name="who_runs",
                description="Say who runs this.",
                arguments={"type": "object", "additionalProperties": False},
                result={
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}},
                    "required": ["ok"],
                    "additionalProperties": False,
                },
                action=QuoteAction.QUOTE_LIST,
                risk=Risk.READ,
                run=who,
                target=target,
                after_untrusted=AfterUntrusted.APPROVAL,
            )
        )

    return register


def delete_tool(app: FastAPI) -> None:
    """A high-risk tool on a quote its requester owns: only its buyer may delete it."""

    async def quote(run: ToolRun) -> Any:
        found = await QuoteService(run.session).get(
            run.principal.tenant_id, uuid.UUID(run.arguments["quote_id"])
        )
        assert found is not None
        return found

    async def delete(run: ToolRun) -> dict[str, Any]:
        await QuoteService(run.session).delete(await quote(run))
        return {"deleted": run.arguments["quote_id"]}

    async def target(run: ToolRun) -> Target:
        return quote_target(await quote(run))

    app.state.tools.register(
        Tool(
            name="delete_quote",
            description="Delete a draft quote.",
            arguments=QUOTE_ID_ONLY,
            result={
                "type": "object",
                "properties": {"deleted": {"type": "string"}},
                "required": ["deleted"],
                "additionalProperties": False,
            },
            action=QuoteAction.QUOTE_DELETE,
            risk=Risk.HIGH,
            run=delete,
            target=target,
        )
    )


def poisoned_request(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path: Path,
    *calls: dict[str, Any],
    app_hook: Callable[[FastAPI], None] | None = None,
) -> tuple[httpx.Client, Any, dict[str, str], dict[str, Any], list[str]]:
    """A buyer reads their own poisoned quote through the assistant, which then makes `calls`
    (`quote_id` filled in): the server, the buyer and their headers, their quote and the
    approval ids."""
    setup = serve_app()
    buyer, headers = sign_in(setup, urls, kms, BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=headers
    ).json()
    turns = [{"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]}]
    for call in calls:
        arguments = {
            k: poisoned["id"] if v == "quote_id" else v for k, v in call["arguments"].items()
        }
        turns.append({"tool_calls": [{"name": call["name"], "arguments": arguments}]})
    server = serve_app(app_hook, model=script(tmp_path, *turns))
    buyer_headers = signed_in_again(server, buyer)
    answer = ask(server, buyer_headers, f"What does quote {poisoned['id']} say?")
    assert answer.status_code == 200, answer.text
    actions = answer.json()["actions"][1:]
    assert [a["status"] for a in actions] == ["pending_approval"] * len(calls)
    return server, buyer, buyer_headers, poisoned, [a["approval_id"] for a in actions]


def listed(server: httpx.Client, headers: dict[str, str]) -> list[str]:
    listing = server.get("/api/approvals", headers=headers)
    assert listing.status_code == 200, listing.text
    return [item["id"] for item in listing.json()["items"]]


def test_an_approved_call_runs_as_the_person_who_asked(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    ran: list[tuple[str, str | None]] = []
    create = {"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}
    server, buyer, buyer_headers, _, (desks, who) = poisoned_request(
        serve_app,
        urls,
        kms,
        tmp_path,
        create,
        {"name": "who_runs", "arguments": {}},
        app_hook=who_runs_tool(ran),
    )
    colleague, colleague_headers = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)

    def approve(approval: str) -> None:
        approved = server.post(f"/api/approvals/{approval}/approve", headers=colleague_headers)
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "executed"

    approve(desks)
    # The quote asked for is the buyer's: they see it, the colleague who confirmed does not.
    with psycopg.connect(libpq(urls.owner)) as conn:
        row = conn.execute(
            "SELECT id, buyer_id FROM quotes WHERE tenant_id = %s AND title = 'Desks'",
            (buyer.tenant_id,),
        ).fetchone()
    assert row is not None
    quote_id, buyer_id = row
    assert buyer_id == buyer.user_id
    assert server.get(f"/api/quotes/{quote_id}", headers=colleague_headers).status_code in {
        403,
        404,
    }
    mine = server.get(f"/api/quotes/{quote_id}", headers=buyer_headers)
    assert mine.status_code == 200, mine.text
    # A read tool ran as the buyer who asked too, and knows who confirmed it.
    approve(who)
    assert ran == [(str(buyer.user_id), str(colleague.user_id))]
    # The trail of each decision names both: the approver acts, on the buyer's request.
    decided = recorded(urls, buyer.tenant_id, Action.APPROVAL_DECIDED)
    assert [(d["actor"]["id"], d["details"]["requested_by"]) for d in decided] == [
        (str(colleague.user_id), str(buyer.user_id))
    ] * 2


def test_who_may_do_it_on_a_resource_of_their_own_confirms_it(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    delete = {"name": "delete_quote", "arguments": {"quote_id": "quote_id"}}
    server, buyer, _, poisoned, (approval,) = poisoned_request(
        serve_app, urls, kms, tmp_path, delete, app_hook=delete_tool
    )
    # Only a quote's own buyer may delete it: nobody else may do this exact thing, yet
    # another buyer, who may delete quotes of their own, may confirm it (and nobody else).
    _, colleague = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)
    assert listed(server, colleague) == [approval]
    for role in (SELLER, FINANCE, ADMIN_ROLE):
        _, headers = sign_in(server, urls, kms, role, tenant=buyer.tenant)
        assert listed(server, headers) == []
        refused = server.post(f"/api/approvals/{approval}/approve", headers=headers)
        assert refused.status_code == 403, (role, refused.text)
        assert refused.json()["detail"] == (
            "you may not confirm Quotes::quote.delete: "
            "only someone who may Quotes::quote.delete themselves decides it"
        )
    _, stranger = sign_in(server, urls, kms, BUYER)  # another tenant's buyer
    assert server.post(f"/api/approvals/{approval}/approve", headers=stranger).status_code == 404
    approved = server.post(f"/api/approvals/{approval}/approve", headers=colleague)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert poisoned["id"] not in [quote for quote, _ in quotes_of(urls, buyer.tenant_id)]


def test_requests_of_switched_off_tools_are_not_listed(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    create = {"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}
    server, buyer, _, _, (desks,) = poisoned_request(serve_app, urls, kms, tmp_path, create)
    _, colleague = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)
    _, admin = sign_in(server, urls, kms, ADMIN_ROLE, tenant=buyer.tenant)
    assert listed(server, colleague) == [desks]

    def switch(engaged: bool, tool: str = "") -> None:
        body = {"engaged": engaged, "tool": tool, "reason": "drill"}
        answer = server.post("/api/assistant/killswitch", json=body, headers=admin)
        assert answer.status_code == 200, answer.text

    for tool in ("create_quote", ""):  # the tool, then the whole assistant
        switch(True, tool)
        assert listed(server, colleague) == []
        refused = server.post(f"/api/approvals/{desks}/approve", headers=colleague)
        assert refused.status_code == 503, refused.text
        switch(False, tool)
        assert listed(server, colleague) == [desks]
    switch(True)
    # Rejecting runs nothing, so it stays possible while the assistant is off.
    rejected = server.post(f"/api/approvals/{desks}/reject", headers=colleague)
    assert rejected.status_code == 200, rejected.text


def test_undecidable_requests_never_push_decidable_ones_out_of_the_listing(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    create = {"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}
    server, buyer, _, _, (desks,) = poisoned_request(serve_app, urls, kms, tmp_path, create)
    _, colleague = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)
    # 250 older requests for a tool that is gone: nobody may decide them.
    owner_sql(
        urls,
        "INSERT INTO ai_approvals (tenant_id, id, conversation_id, tool, arguments, reason, "
        "provenance, requested_by, requested_amr, expires_at, created_at) "
        "SELECT tenant_id, gen_random_uuid(), conversation_id, 'retired_tool', arguments, "
        "reason, provenance, requested_by, requested_amr, expires_at, "
        "created_at - make_interval(secs => n) "
        "FROM ai_approvals, generate_series(1, 250) AS n WHERE tenant_id = %s AND id = %s",
        buyer.tenant_id,
        desks,
    )
    assert listed(server, colleague) == [desks]
