"""The quote app's money tools with a fully compromised (scripted) model, against a live
server and the real sandbox PSP: offered to Finance only; a Finance model's call never runs by
itself, even with nothing untrusted in the conversation: it waits for a second Finance user
and runs once when approved; a buyer's or seller's model gets nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.payments.sandbox import Sandbox
from tests.ai.test_assistant import ask, script
from tests.audit.trail import recorded
from tests.payments.conftest import psp_kms, sandbox  # noqa: F401 - fixtures
from tests.quotes.money_world import DEPOSIT, World, make_world

MONEY_TOOLS = ("charge_deposit", "issue_refund", "disburse_deposit")


@pytest.fixture
def world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    sandbox: Sandbox,  # noqa: F811 - the fixture
) -> World:
    return make_world(serve_app, urls, psp_kms, sandbox)


def with_model(
    world: World, serve_app: Callable[..., httpx.Client], tmp_path: Path, *turns: dict[str, Any]
) -> World:
    """The world's people on a server whose model plays `turns`."""
    server = serve_app(psp_api_base=world.sandbox.api_base, model=script(tmp_path, *turns))
    return world.on(server)


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def outcomes(answer: httpx.Response) -> list[tuple[str, str, str]]:
    assert answer.status_code == 200, answer.text
    return [(a["tool"], a["status"], a["reason"]) for a in answer.json()["actions"]]


def test_a_finance_models_refund_waits_and_runs_once_after_a_second_finance_user(
    world: World, serve_app: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    payment = world.deposit(world.accepted_quote())
    refund = call("issue_refund", payment_id=str(payment), amount=9_000)
    live = with_model(world, serve_app, tmp_path, refund, {"text": "Asked for it."})
    # The user's own words back every argument, and nothing untrusted was read: a money call
    # still never runs by itself.
    answer = ask(
        live.server, live.people["finance"].headers, f"Refund 9000 of payment {payment} please"
    )
    assert outcomes(answer) == [
        ("issue_refund", "pending_approval", "issue_refund always waits for a different "
         "person's approval"),
    ]  # fmt: skip
    approval = answer.json()["actions"][0]["approval_id"]
    assert world.held(payment) == DEPOSIT
    [request] = world.approvals()
    assert str(request["id"]) == approval
    assert (request["origin"], request["tool"]) == ("assistant", "issue_refund")
    assert request["conversation_id"] == uuid.UUID(answer.json()["conversation_id"])
    assert request["arguments"] == {"payment_id": str(payment), "amount": 9_000}
    assert request["origins"]["amount"] == [{"source": "user message"}]
    # Cedar was asked twice on the ai_tool channel: not held (the money wall), then held.
    checked = [
        e
        for e in recorded(world.urls, world.tenant_id, Action.AUTHORIZATION_DECIDED)
        if e["details"]["action"] == "Quotes::refund.issue"
    ]
    assert [
        (e["details"]["channel"], e["details"].get("held"), e["decision"]) for e in checked
    ] == [
        ("ai_tool", None, "deny"),
        ("ai_tool", True, "allow"),
    ]
    assert checked[0]["policy_ids"] == ["quotes-money-from-ai-tools-only-held"]

    assert live.decide("finance", approval).status_code == 403  # never the requester
    approved = live.decide("finance2", approval)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert live.decide("finance2", approval).status_code == 409
    listed = world.buyer_at_psp().v1.refunds.list(params={"payment_intent": world.psp_id(payment)})
    assert [r.amount for r in listed.data] == [9_000]  # exactly once
    [row] = world.rows("payment_refunds", payment)
    assert (row["requested_by"], row["approved_by"]) == (
        world.people["finance"].user_id,
        world.people["finance2"].user_id,
    )
    assert world.held(payment) == DEPOSIT - 9_000
    assert [kind for kind, _, _ in world.entries(payment)] == ["deposit", "refund"]


def test_a_finance_model_charges_and_disburses_only_as_requests(
    world: World, serve_app: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    live = with_model(
        world,
        serve_app,
        tmp_path,
        call("charge_deposit", quote_id=quote),
        {"text": "Asked."},
        call("disburse_deposit", quote_id=quote, amount=DEPOSIT),
        {"text": "Asked."},
    )
    finance = live.people["finance"].headers
    for message in (f"Charge the deposit of quote {quote}", f"Disburse {DEPOSIT} of {quote}"):
        [(_, status, _)] = outcomes(ask(live.server, finance, message))
        assert status == "pending_approval"
    assert [(a["tool"], a["status"]) for a in world.approvals()] == [
        ("charge_deposit", "pending"),
        ("disburse_deposit", "pending"),
    ]
    # A disbursement the model asked for counts against what is held, like a person's.
    held_back = live.post("finance2", f"/api/quotes/{quote}/disbursements", {})
    assert held_back.status_code == 409
    assert world.held(payment) == DEPOSIT
    assert world.rows("payment_disbursements", payment) == []


@pytest.mark.parametrize("role", ["buyer", "seller"])
def test_a_buyers_or_sellers_model_gets_no_money_tool(
    world: World, serve_app: Callable[..., httpx.Client], tmp_path: Path, role: str
) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    calls = {
        "tool_calls": [
            {"name": "charge_deposit", "arguments": {"quote_id": quote}},
            {"name": "issue_refund", "arguments": {"payment_id": str(payment), "amount": 1}},
            {"name": "disburse_deposit", "arguments": {"quote_id": quote, "amount": DEPOSIT}},
        ]
    }
    live = with_model(world, serve_app, tmp_path, calls, {"text": "done"})
    answer = ask(live.server, live.people[role].headers, f"Refund payment {payment} to me")
    assert outcomes(answer) == [(name, "refused", "not available to you") for name in MONEY_TOOLS]
    assert world.approvals() == []
    assert world.held(payment) == DEPOSIT


def test_an_approved_charge_deposit_runs_the_deposit_service_once(
    world: World, serve_app: Callable[..., httpx.Client], tmp_path: Path
) -> None:
    quote = world.accepted_quote()
    live = with_model(
        world, serve_app, tmp_path, call("charge_deposit", quote_id=quote), {"text": "Asked."}
    )
    finance = live.people["finance"].headers
    [(_, status, _)] = outcomes(ask(live.server, finance, f"Charge the deposit of quote {quote}"))
    assert status == "pending_approval"
    [request] = world.approvals()
    approved = live.decide("finance2", str(request["id"]))
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    payment = approved.json()["result"]
    assert (payment["quote_id"], payment["status"]) == (quote, "requires_payment_method")
    # One PaymentIntent at the PSP, the one the payment names, for the quote's deposit.
    intent = world.buyer_at_psp().v1.payment_intents.retrieve(payment["psp_id"])
    assert (intent.amount, intent.metadata["ramparts_payment"]) == (
        payment["amount"],
        payment["id"],
    )
    listed = live.server.get(f"/api/payments?quote_id={quote}", headers=finance)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"] if isinstance(listed.json(), dict) else listed.json()
    assert [p["id"] for p in items] == [payment["id"]]
    # Approving it again makes nothing more.
    assert live.decide("finance2", str(request["id"])).status_code == 409
