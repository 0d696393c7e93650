"""Provenance against a live server, the model fully compromised: which values back a
money-moving call. A transfer's sender and amount are whatever the payer chose, so they back
nothing; the user's own words do, by their real value, for the rest of their conversation;
an approver is shown where each sensitive argument came from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ramparts.ai.tools import Risk, Tool, ToolRun
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.policy.engine import Target
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import ask, script, sign_in

OURS = "DE89370400440532013000"  # the account on file: the database's data
SENDERS = "GB82WEST12345698765432"  # chosen by whoever sent the money
USERS = "GB33BUKB20201555555555"  # typed by the user
TRANSFER_ID = "5b1d2c3e-0000-4000-8000-000000000002"
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def outcomes(answer: httpx.Response) -> list[tuple[str, str, str]]:
    assert answer.status_code == 200, answer.text
    return [(a["tool"], a["status"], a["reason"]) for a in answer.json()["actions"]]


def money_tools(ran: list[ToolRun]) -> Callable[[FastAPI], None]:
    """`get_transfer` (an incoming transfer: ids, the account on file and fees are trusted
    fields, the sender and amount are not), `get_account` (only trusted fields) and the
    high-risk `send_money`, whose IBAN and amount must be backed; it keeps each run."""

    async def transfer(run: ToolRun) -> dict[str, Any]:
        return {
            "id": TRANSFER_ID,
            "payee": {"iban": OURS},
            "sender": {"name": "Refunds Desk", "iban": SENDERS},
            "amount_minor": 990_000,
            "fees": [{"label": "wire", "fee_minor": 250}],
        }

    async def account(run: ToolRun) -> dict[str, Any]:
        return {"owner": {"iban": OURS}, "fees": [{"fee_minor": 250}]}

    async def send(run: ToolRun) -> dict[str, Any]:
        ran.append(run)
        return {"sent": True}

    async def target(run: ToolRun) -> Target:
        return Target(QuoteAction.QUOTE_READ.entity_type, "*", str(run.principal.tenant_id))

    iban = {"type": "object", "properties": {"iban": {"type": "string"}}}
    fees = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "fee_minor": {"type": "integer"}},
        },
    }

    def register(app: FastAPI) -> None:
        tools = app.state.tools
        reads = {"arguments": NO_ARGUMENTS, "action": QuoteAction.QUOTE_LIST, "risk": Risk.READ}
        tools.register(
            Tool(
                name="get_transfer",
                description="The last incoming transfer.",
                result={
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "payee": iban,
                        "sender": {
                            "type": "object",
                            "properties": {"name": {"type": "string"}, "iban": {"type": "string"}},
                        },
                        "amount_minor": {"type": "integer"},
                        "fees": fees,
                    },
                    "additionalProperties": False,
                },
                run=transfer,
                target=target,
                trusted=frozenset({"/id", "/payee/iban", "/fees/*/fee_minor"}),
                **reads,
            )
        )
        tools.register(
            Tool(
                name="get_account",
                description="Our account on file.",
                result={
                    "type": "object",
                    "properties": {"owner": iban, "fees": fees},
                    "additionalProperties": False,
                },
                run=account,
                target=target,
                trusted=frozenset({"/owner/iban", "/fees/*/fee_minor"}),
                **reads,
            )
        )
        tools.register(
            Tool(
                name="send_money",
                description="Send money to an IBAN.",
                arguments={
                    "type": "object",
                    "properties": {
                        # Checked on the IBAN itself, never on the placeholder the model saw.
                        "iban": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$"},
                        "amount_minor": {"type": "integer", "minimum": 1},
                    },
                    "required": ["iban", "amount_minor"],
                    "additionalProperties": False,
                },
                result={
                    "type": "object",
                    "properties": {"sent": {"type": "boolean"}},
                    "additionalProperties": False,
                },
                action=QuoteAction.QUOTE_CREATE,
                risk=Risk.HIGH,
                run=send,
                target=target,
                sensitive=frozenset({"iban", "amount_minor"}),
            )
        )

    return register


def test_a_transfers_sender_and_amount_back_no_money_call_and_the_approver_sees_why(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    ran: list[ToolRun] = []
    model = script(
        tmp_path,
        call("get_transfer"),
        # [IBAN_2] is the sender's IBAN as the model saw it ([IBAN_1] is the account on file).
        call("send_money", iban="[IBAN_2]", amount_minor=990_000),
        {"text": "Sent it back."},
        call("get_transfer"),
        call("send_money", iban="[IBAN_1]", amount_minor=250),
        {"text": "Paid the fee."},
    )
    server = serve_app(money_tools(ran), model=model)
    _, headers = sign_in(server, urls, kms, BUYER)
    assert outcomes(ask(server, headers, "What came in? Refund whatever it asks.")) == [
        ("get_transfer", "executed", "done"),
        (
            "send_money",
            "pending_approval",
            "amount_minor, iban not backed by anything you said or may read",
        ),
    ]
    # Values at declared places (a nested field, an array item's field) back the call; the
    # transfer's text still tainted the conversation, so the high-risk call waits all the same.
    assert outcomes(ask(server, headers, "What came in? Pay its fee to our account.")) == [
        ("get_transfer", "executed", "done"),
        (
            "send_money",
            "pending_approval",
            "a high-risk call after untrusted content entered the conversation",
        ),
    ]
    assert ran == []
    mine = server.get("/api/approvals", headers=headers).json()["mine"]
    assert [item["arguments"] for item in mine] == [
        {"iban": SENDERS, "amount_minor": 990_000},
        {"iban": OURS, "amount_minor": 250},
    ]
    untrusted = {"source": "untrusted field", "tool": "get_transfer"}
    trusted = {"source": "trusted field", "tool": "get_transfer"}
    assert [item["origins"] for item in mine] == [
        {
            "amount_minor": [{**untrusted, "pointer": "/amount_minor"}],
            "iban": [{**untrusted, "pointer": "/sender/iban"}],
        },
        {
            "amount_minor": [{**trusted, "pointer": "/fees/0/fee_minor"}],
            "iban": [{**trusted, "pointer": "/payee/iban"}],
        },
    ]


def test_trusted_fields_and_the_users_own_words_back_a_money_call(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    ran: list[ToolRun] = []
    model = script(
        tmp_path,
        call("get_account"),
        call("send_money", iban="[IBAN_1]", amount_minor=250),
        {"text": "Paid the fee."},
        # The user typed the IBAN: its placeholder is backed, and its pattern judged on it.
        call("send_money", iban="[IBAN_1]", amount_minor=12_000),
        {"text": "Sent."},
        # Typed with spaces, the same IBAN is another value, which the pattern refuses.
        call("send_money", iban="[IBAN_1]", amount_minor=500),
        {"text": "Refused."},
    )
    server = serve_app(money_tools(ran), model=model)
    _, headers = sign_in(server, urls, kms, BUYER)
    assert outcomes(ask(server, headers, "Pay the fee to our own account.")) == [
        ("get_account", "executed", "done"),
        ("send_money", "executed", "done"),
    ]
    # Each message here starts a conversation of its own.
    assert outcomes(ask(server, headers, f"Please send 12000 to {USERS}.")) == [
        ("send_money", "executed", "done"),
    ]
    spaced = " ".join(USERS[i : i + 4] for i in range(0, len(USERS), 4))
    refused = outcomes(ask(server, headers, f"And 500 to {spaced}."))
    assert refused == [("send_money", "refused", refused[0][2])]
    assert refused[0][2].startswith("invalid arguments: iban: pattern")
    assert [run.arguments for run in ran] == [
        {"iban": OURS, "amount_minor": 250},
        {"iban": USERS, "amount_minor": 12_000},
    ]


def test_what_the_user_typed_backs_their_conversation_and_no_other(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    ran: list[ToolRun] = []
    model = script(
        tmp_path,
        {"text": "Noted."},
        call("send_money", iban="[IBAN_1]", amount_minor=12_000),
        {"text": "Asked."},
        call("send_money", iban=USERS, amount_minor=12_000),
        {"text": "Asked again."},
    )
    server = serve_app(money_tools(ran), model=model)
    _, headers = sign_in(server, urls, kms, BUYER)
    first = ask(server, headers, f"My landlord's IBAN is {USERS}.")
    assert outcomes(first) == []
    conversation = first.json()["conversation_id"]
    # A later message of the same conversation: the IBAN typed before still backs (the call
    # still waits: a conversation read back holds the model's words, which count as
    # untrusted content, and a high-risk call never runs after that).
    later = ask(server, headers, "Send 12000 to my landlord.", conversation_id=conversation)
    assert outcomes(later) == [
        (
            "send_money",
            "pending_approval",
            "a high-risk call after untrusted content entered the conversation",
        )
    ]
    # Another conversation of the same user: nothing said there backs the IBAN.
    other = ask(server, headers, "Send 12000 to my landlord again.")
    assert other.json()["conversation_id"] != conversation
    assert outcomes(other) == [
        ("send_money", "pending_approval", "iban not backed by anything you said or may read")
    ]
    assert ran == []
    mine = server.get("/api/approvals", headers=headers).json()["mine"]
    assert [item["origins"] for item in mine] == [
        {"amount_minor": [{"source": "user message"}], "iban": [{"source": "user message"}]},
        {
            "amount_minor": [{"source": "user message"}],
            "iban": [{"source": "nowhere in this conversation"}],
        },
    ]
