"""Refunds behind four eyes, over real HTTP with the real sandbox PSP and PostgreSQL: Finance
asks, a second Finance user decides; nothing moves before, and what moves is recorded with
both people, once, in a balanced ledger."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.payments.psp import TENANT_METADATA_KEY
from ramparts.payments.sandbox import Sandbox
from ramparts.quotes.roles import FINANCE
from tests.ai.test_assistant import sign_in, signed_in_again
from tests.audit.trail import recorded
from tests.payments.conftest import psp_kms, sandbox  # noqa: F401 - fixtures
from tests.quotes.money_world import DEPOSIT, Person, World, make_world

PROBLEM = "urn:ramparts:problem:"


@pytest.fixture
def world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    sandbox: Sandbox,  # noqa: F811 - the fixture
) -> World:
    return make_world(serve_app, urls, psp_kms, sandbox)


def refunds_at_psp(world: World, payment: uuid.UUID) -> list[tuple[str, int, str]]:
    """The refunds the PSP holds for the payment's intent: (id, amount, tenant tag)."""
    intent = world.psp_id(payment)
    listed = world.buyer_at_psp().v1.refunds.list(params={"payment_intent": intent})
    return [(r.id, r.amount, r.metadata[TENANT_METADATA_KEY]) for r in listed.data]


def test_a_refund_waits_for_a_second_finance_user_and_runs_once(world: World) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    assert world.held(payment) == DEPOSIT
    path = f"/api/payments/{payment}/refunds"

    asked = world.post("finance", path, {"amount": 12_000}, key="refund-1")
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval_id"]
    assert asked.json() == {"approval_id": approval, "status": "pending_approval"}
    # The same request again: the same answer, byte for byte, and no second request.
    again = world.post("finance", path, {"amount": 12_000}, key="refund-1")
    assert (again.status_code, again.content) == (202, asked.content)
    other = world.post("finance", path, {"amount": 11_000}, key="refund-1")
    assert other.status_code == 422
    assert other.json()["type"] == f"{PROBLEM}idempotency-key-reused"
    [request] = world.approvals()
    assert str(request["id"]) == approval
    # A request of the registered tool with the exact arguments sent, in no conversation.
    assert request["origin"] == "api"
    assert request["conversation_id"] is None
    assert request["tool"] == "issue_refund"
    assert request["arguments"] == {"payment_id": str(payment), "amount": 12_000}
    assert request["status"] == "pending"
    assert request["requested_by"] == world.people["finance"].user_id
    assert request["provenance"] == []
    typed = [{"source": "typed by the requester"}]
    assert request["origins"] == {"amount": typed, "payment_id": typed}
    assert refunds_at_psp(world, payment) == []  # nothing moved yet

    # The requester sees it as theirs; the second Finance user sees it to decide.
    mine = world.server.get("/api/approvals", headers=world.people["finance"].headers).json()
    assert mine["items"] == []
    assert [(m["id"], m["origin"], m["mine"]) for m in mine["mine"]] == [(approval, "api", True)]
    listed = world.server.get("/api/approvals", headers=world.people["finance2"].headers).json()
    [item] = listed["items"]
    assert (item["id"], item["tool"], item["origin"]) == (approval, "issue_refund", "api")
    assert item["arguments"] == {"payment_id": str(payment), "amount": 12_000}
    # A buyer may not refund, so has nothing of it to decide.
    buyers = world.server.get("/api/approvals", headers=world.people["buyer"].headers).json()
    assert buyers == {"items": [], "mine": []}

    # The requester never decides their own request; a buyer or seller never confirms money.
    for who in ("finance", "buyer", "seller"):
        refused = world.decide(who, approval)
        assert refused.status_code == 403, (who, refused.text)
    assert refunds_at_psp(world, payment) == []
    assert world.held(payment) == DEPOSIT

    approved = world.decide("finance2", approval)
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["status"] == "executed"
    result = body["result"]
    assert result["psp_id"].startswith("re_")
    assert (result["amount"], result["currency"], result["status"]) == (12_000, "eur", "succeeded")
    assert world.decide("finance2", approval).status_code == 409  # decided once

    # One refund at the PSP, tagged with the tenant; one row naming both people.
    assert refunds_at_psp(world, payment) == [(result["psp_id"], 12_000, str(world.tenant_id))]
    [row] = world.rows("payment_refunds", payment)
    assert row == {
        "psp_id": result["psp_id"],
        "amount": 12_000,
        "currency": "eur",
        "status": "succeeded",
        "requested_by": world.people["finance"].user_id,
        "approved_by": world.people["finance2"].user_id,
    }
    # The ledger: the deposit, then the refund (by the PSP's id), each balanced.
    entries = world.entries(payment)
    assert [(kind, held) for kind, _, held in entries] == [
        ("deposit", DEPOSIT),
        ("refund", -12_000),
    ]
    assert entries[0][1].startswith("ch_")
    assert entries[1][1] == result["psp_id"]
    assert world.held(payment) == DEPOSIT - 12_000
    [decided] = world.approvals()
    assert decided["status"] == "executed"
    assert decided["decided_by"] == world.people["finance2"].user_id
    # Both people are in the audit trail: who asked, who decided (on whose request).
    asked_events = recorded(world.urls, world.tenant_id, Action.APPROVAL_REQUESTED)
    assert [e["actor"]["id"] for e in asked_events] == [str(world.people["finance"].user_id)]
    assert asked_events[0]["details"]["origin"] == "api"
    decisions = recorded(world.urls, world.tenant_id, Action.APPROVAL_DECIDED)
    [allowed] = [d for d in decisions if d["decision"] == "allow"]
    assert allowed["actor"]["id"] == str(world.people["finance2"].user_id)
    assert allowed["details"]["requested_by"] == str(world.people["finance"].user_id)
    # The refusals (the requester, a buyer, a seller, the second approval) are there too.
    assert len([d for d in decisions if d["decision"] == "deny"]) == 4


def test_a_rejected_refund_moves_nothing(world: World) -> None:
    payment = world.deposit(world.accepted_quote())
    asked = world.post("finance", f"/api/payments/{payment}/refunds", {"amount": 5_000})
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval_id"]
    assert world.decide("finance", approval, "reject").status_code == 403  # not even rejecting
    rejected = world.decide("finance2", approval, "reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert world.decide("finance2", approval).status_code == 409
    assert refunds_at_psp(world, payment) == []
    assert world.rows("payment_refunds", payment) == []
    assert [kind for kind, _, _ in world.entries(payment)] == ["deposit"]
    assert world.held(payment) == DEPOSIT


def test_more_than_is_left_is_refused(world: World) -> None:
    payment = world.deposit(world.accepted_quote())
    path = f"/api/payments/{payment}/refunds"
    over = world.post("finance", path, {"amount": DEPOSIT + 1})
    assert over.status_code == 422
    assert over.json()["type"] == f"{PROBLEM}invalid-request"
    assert over.json()["detail"] == f"amount must be 1 to {DEPOSIT}: what is left of the payment"
    for bad in (0, -5, "100", 1.5, None):
        assert world.post("finance", path, {"amount": bad}).status_code == 422, bad
    # A request still to be decided counts: two requests never ask for more than was paid.
    first = world.post("finance", path, {"amount": 30_000})
    assert first.status_code == 202, first.text
    assert world.post("finance", path, {"amount": 20_001}).status_code == 422
    second = world.post("finance2", path, {"amount": 20_000})
    assert second.status_code == 202, second.text
    nothing = world.post("finance", path, {"amount": 1})
    assert nothing.status_code == 409
    assert nothing.json()["detail"] == "nothing is left to refund"
    # Decided, one by each other: everything paid is refunded, and nothing more.
    assert world.decide("finance2", first.json()["approval_id"]).json()["status"] == "executed"
    assert world.decide("finance", second.json()["approval_id"]).json()["status"] == "executed"
    assert sorted(amount for _, amount, _ in refunds_at_psp(world, payment)) == [20_000, 30_000]
    assert world.held(payment) == 0
    assert world.post("finance", path, {"amount": 1}).status_code == 409
    assert len(world.approvals()) == 2


def test_a_payment_not_paid_is_not_refunded(world: World) -> None:
    unpaid = world.deposit(world.accepted_quote(), paid=False)
    refused = world.post("finance", f"/api/payments/{unpaid}/refunds", {"amount": 100})
    assert refused.status_code == 409
    assert refused.json()["type"] == f"{PROBLEM}payment-not-paid"
    missing = world.post("finance", f"/api/payments/{uuid.uuid4()}/refunds", {"amount": 100})
    assert missing.status_code == 404
    assert world.approvals() == []


def test_only_finance_asks_and_with_an_idempotency_key(world: World) -> None:
    payment = world.deposit(world.accepted_quote())
    path = f"/api/payments/{payment}/refunds"
    for who in ("buyer", "seller"):
        refused = world.post(who, path, {"amount": 100})
        assert refused.status_code == 403, (who, refused.text)
    keyless = world.server.post(path, json={"amount": 100}, headers=world.people["finance"].headers)
    assert keyless.status_code == 400
    assert keyless.json()["type"] == f"{PROBLEM}idempotency-key-required"
    assert world.approvals() == []
    assert refunds_at_psp(world, payment) == []


def test_a_psp_that_does_not_answer_leaves_the_approval_pending_and_posts_nothing(
    world: World, serve_app: Callable[..., httpx.Client]
) -> None:
    """No answer may still mean a refund at the PSP: nothing is closed on it. The request
    stays pending, and approving it again sends the very same call (the approval's key), so
    the money moves once."""
    payment = world.deposit(world.accepted_quote())
    asked = world.post("finance", f"/api/payments/{payment}/refunds", {"amount": 7_000})
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval_id"]
    # The same runtime, its PSP unreachable (a port nothing listens on).
    cut_off = serve_app(psp_api_base="http://127.0.0.1:9")
    finance2 = world.people["finance2"].account
    decided = cut_off.post(
        f"/api/approvals/{approval}/approve", headers=signed_in_again(cut_off, finance2)
    )
    assert decided.status_code == 503, decided.text
    assert decided.json()["type"] == f"{PROBLEM}tool-outcome-unknown"
    assert "approve it again" in decided.json()["detail"]
    assert refunds_at_psp(world, payment) == []
    assert world.rows("payment_refunds", payment) == []
    assert world.held(payment) == DEPOSIT
    [request] = world.approvals()
    assert request["status"] == "pending"
    # The PSP back: approved again, it runs once.
    again = world.decide("finance2", approval)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "executed"
    assert [amount for _, amount, _ in refunds_at_psp(world, payment)] == [7_000]
    assert world.held(payment) == DEPOSIT - 7_000


def test_two_approvers_at_once_make_one_refund(world: World, psp_kms: Kms) -> None:  # noqa: F811
    """Two Finance users approve the same request at the same moment: the request row is
    locked while it runs, so one runs it and the other is told it is decided."""
    payment = world.deposit(world.accepted_quote())
    asked = world.post("finance", f"/api/payments/{payment}/refunds", {"amount": 4_000})
    approval = asked.json()["approval_id"]
    account, headers = sign_in(
        world.server, world.urls, psp_kms, FINANCE, world.people["finance"].account.tenant
    )
    world.people["finance3"] = Person(account, headers)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda who: world.decide(who, approval), ["finance2", "finance3"]))
    assert sorted(a.status_code for a in answers) == [200, 409]
    [executed] = [a for a in answers if a.status_code == 200]
    assert executed.json()["status"] == "executed"
    assert [amount for _, amount, _ in refunds_at_psp(world, payment)] == [4_000]
    assert len(world.rows("payment_refunds", payment)) == 1
    assert world.held(payment) == DEPOSIT - 4_000
