"""Disbursements of a quote's deposit to its seller, behind four eyes, over real HTTP with the
real sandbox PSP: not even asked for before a verified webhook confirmed the deposit; once
asked, paid out once when a second Finance user approves, with both people on record and
the ledger balanced."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.payments.psp import TENANT_METADATA_KEY
from ramparts.payments.sandbox import Sandbox
from tests.payments.conftest import psp_kms, sandbox  # noqa: F401 - fixtures
from tests.quotes.money_world import DEPOSIT, World, make_world

PROBLEM = "urn:ramparts:problem:"


@pytest.fixture
def world(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    psp_kms: Kms,  # noqa: F811 - the fixture
    sandbox: Sandbox,  # noqa: F811 - the fixture
) -> World:
    return make_world(serve_app, urls, psp_kms, sandbox)


def payouts_at_psp(world: World, payment: uuid.UUID) -> list[tuple[str, int, str, str]]:
    """The payouts the PSP made for the payment: (id, amount, currency, tenant tag)."""
    listed = world.buyer_at_psp().v1.payouts.list(params={"limit": 100})
    return [
        (p.id, p.amount, p.currency, p.metadata[TENANT_METADATA_KEY])
        for p in listed.data
        if p.metadata.to_dict().get("ramparts_payment") == str(payment)
    ]


def test_nothing_is_disbursed_before_a_verified_webhook_confirmed_the_deposit(
    world: World,
) -> None:
    quote = world.accepted_quote()
    path = f"/api/quotes/{quote}/disbursements"
    none_yet = world.post("finance", path, {})
    assert none_yet.status_code == 409
    assert none_yet.json()["type"] == f"{PROBLEM}payment-not-paid"
    # Paid at the PSP (the intent succeeded there), but no verified event confirmed it yet.
    unconfirmed = world.deposit(quote, paid=False)
    assert world.buyer_at_psp().v1.payment_intents.retrieve(world.psp_id(unconfirmed)).status == (
        "succeeded"
    )
    refused = world.post("finance", path, {})
    assert refused.status_code == 409
    assert refused.json()["type"] == f"{PROBLEM}payment-not-paid"
    assert world.approvals() == []
    assert world.post("finance", f"/api/quotes/{uuid.uuid4()}/disbursements", {}).status_code == (
        404
    )


def test_a_disbursement_waits_for_a_second_finance_user_and_pays_out_once(
    world: World,
) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    path = f"/api/quotes/{quote}/disbursements"

    asked = world.post("finance", path, {}, key="disburse-1")
    assert asked.status_code == 202, asked.text
    approval = asked.json()["approval_id"]
    assert asked.json() == {"approval_id": approval, "status": "pending_approval"}
    again = world.post("finance", path, {}, key="disburse-1")
    assert (again.status_code, again.content) == (202, asked.content)
    # A second request (another key) finds nothing left: the first asks for all of it.
    second = world.post("finance2", path, {})
    assert second.status_code == 409
    assert world.post("finance", path, {"amount": 5}).status_code == 422  # `{}` only
    [request] = world.approvals()
    assert (request["origin"], request["tool"], request["status"]) == (
        "api",
        "disburse_deposit",
        "pending",
    )
    # What runs, amount included, is what the approver sees: all that is held.
    assert request["arguments"] == {"quote_id": quote, "amount": DEPOSIT}

    for who in ("finance", "buyer", "seller"):
        assert world.decide(who, approval).status_code == 403, who
    assert payouts_at_psp(world, payment) == []
    approved = world.decide("finance2", approval)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    result = approved.json()["result"]
    assert result["psp_id"].startswith("po_")
    assert (result["amount"], result["quote_id"], result["payment_id"]) == (
        DEPOSIT,
        quote,
        str(payment),
    )
    assert world.decide("finance2", approval).status_code == 409

    assert payouts_at_psp(world, payment) == [
        (result["psp_id"], DEPOSIT, "eur", str(world.tenant_id))
    ]
    [row] = world.rows("payment_disbursements", payment)
    assert row == {
        "psp_id": result["psp_id"],
        "amount": DEPOSIT,
        "currency": "eur",
        "status": "pending",  # the PSP's payout status: paid out later
        "requested_by": world.people["finance"].user_id,
        "approved_by": world.people["finance2"].user_id,
    }
    entries = world.entries(payment)
    assert [(kind, held) for kind, _, held in entries] == [
        ("deposit", DEPOSIT),
        ("disbursement", -DEPOSIT),
    ]
    assert entries[1][1] == result["psp_id"]
    assert world.held(payment) == 0
    # Nothing is left: neither to disburse nor to refund.
    assert world.post("finance", path, {}).status_code == 409
    assert world.post("finance", f"/api/payments/{payment}/refunds", {"amount": 1}).status_code == (
        409
    )


def test_a_disbursement_after_a_refund_pays_out_what_is_left(world: World) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    refund = world.post("finance", f"/api/payments/{payment}/refunds", {"amount": 8_000})
    assert refund.status_code == 202, refund.text
    # A refund waiting for approval is not disbursed either.
    asked = world.post("finance", f"/api/quotes/{quote}/disbursements", {})
    assert asked.status_code == 202, asked.text
    approvals = {a["tool"]: a for a in world.approvals()}
    assert approvals["disburse_deposit"]["arguments"]["amount"] == DEPOSIT - 8_000
    rejected = world.decide("finance2", str(approvals["issue_refund"]["id"]), "reject")
    assert rejected.json()["status"] == "rejected"
    approved = world.decide("finance2", asked.json()["approval_id"])
    assert approved.json()["status"] == "executed", approved.text
    assert world.held(payment) == 8_000
    assert [amount for _, amount, _, _ in payouts_at_psp(world, payment)] == [DEPOSIT - 8_000]


def test_a_rejected_disbursement_moves_nothing_and_only_finance_asks(world: World) -> None:
    quote = world.accepted_quote()
    payment = world.deposit(quote)
    path = f"/api/quotes/{quote}/disbursements"
    for who in ("buyer", "seller"):
        assert world.post(who, path, {}).status_code == 403, who
    asked = world.post("finance", path, {})
    assert asked.status_code == 202, asked.text
    rejected = world.decide("finance2", asked.json()["approval_id"], "reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert payouts_at_psp(world, payment) == []
    assert world.rows("payment_disbursements", payment) == []
    assert world.held(payment) == DEPOSIT
    # Rejected, it no longer counts against what is held: it may be asked for again.
    assert world.post("finance", path, {}).status_code == 202
