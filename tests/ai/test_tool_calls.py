"""What one user message can make a compromised model do: a cap per risk tier on the calls it
leads to, and each tool's rule for a call after untrusted content (run, approval, refusal)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ramparts.ai.tools import AfterUntrusted, Risk, Tool, ToolRegistry, ToolRun, ToolSchemaError
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.policy.engine import Target
from ramparts.quotes.actions import QuoteAction
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import (
    NEW_QUOTE,
    POISON,
    ask,
    quotes_of,
    script,
    sign_in,
    signed_in_again,
)


def create(title: str) -> dict[str, Any]:
    return {"name": "create_quote", "arguments": {**NEW_QUOTE, "title": title}}


def outcomes(answer: httpx.Response) -> list[tuple[str, str, str]]:
    assert answer.status_code == 200, answer.text
    return [(a["tool"], a["status"], a["reason"]) for a in answer.json()["actions"]]


def test_one_message_leads_to_at_most_the_configured_calls_per_risk_tier(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    writes = [create(f"Chairs {n}") for n in range(4)]
    reads = [{"name": "list_quotes", "arguments": {}}] * 3
    model = script(
        tmp_path,
        {"tool_calls": writes},  # one turn
        {"tool_calls": [create("Desks")]},  # and the next turn of the same message
        {"text": "done"},
        {"tool_calls": reads},  # a new message
        {"text": "done"},
    )
    server = serve_app(model=model, ai_read_calls_per_message=2, ai_write_calls_per_message=2)
    buyer, headers = sign_in(server, urls, kms, BUYER)
    cap = "at most 2 write calls per message"
    # The first write ran; what it wrote is the model's text, so the next waits for approval
    # (the default of a write tool after untrusted content); past the cap, refused.
    assert outcomes(ask(server, headers, "Order office chairs")) == [
        ("create_quote", "executed", "done"),
        (
            "create_quote",
            "pending_approval",
            "a write call after untrusted content entered the conversation",
        ),
        ("create_quote", "refused", cap),
        ("create_quote", "refused", cap),
        ("create_quote", "refused", cap),
    ]
    assert [title for _, title in quotes_of(urls, buyer.tenant_id)] == ["Chairs 0"]
    # The cap is per message, and per tier.
    assert outcomes(ask(server, headers, "list my quotes")) == [
        ("list_quotes", "executed", "done"),
        ("list_quotes", "executed", "done"),
        ("list_quotes", "refused", "at most 2 read calls per message"),
    ]


def test_the_default_caps_stop_a_flood_of_writes(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    turn = {"tool_calls": [create(f"Chairs {n}") for n in range(8)]}
    server = serve_app(model=script(tmp_path, turn, turn, turn, turn))
    buyer, headers = sign_in(server, urls, kms, BUYER)
    done = outcomes(ask(server, headers, "Order office chairs"))
    assert len(done) == 32  # every call the model made answered...
    assert len([o for o in done if o[1] != "refused"]) == 3  # ...three of them acted on
    assert len(quotes_of(urls, buyer.tenant_id)) == 1


def test_the_step_and_strike_limits_are_settings(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    probe = {"name": "issue_refund", "arguments": {"amount_minor": 1}}
    model = script(tmp_path, {"tool_calls": [probe] * 3}, {"tool_calls": [probe]})
    # One model call per message, and the third strike locks (defaults: 4 and the eleventh).
    server = serve_app(model=model, ai_max_steps=1, ai_lock_after="2/10 minutes")
    _, headers = sign_in(server, urls, kms, BUYER)
    assert (
        outcomes(ask(server, headers, "hello"))
        == [("issue_refund", "refused", "not available to you")] * 3
    )
    locked = ask(server, headers, "hello")
    assert locked.status_code == 403
    assert locked.json()["type"] == "urn:ramparts:problem:ai-locked"


def note_tool(
    rule: AfterUntrusted | None, ran: list[ToolRun], *, sensitive: frozenset[str] = frozenset()
) -> Callable[[FastAPI], None]:
    """A `write` tool with `rule` for calls after untrusted content (and `sensitive`
    arguments, which must be backed); it keeps the `ToolRun` of each run."""

    async def note(run: ToolRun) -> dict[str, Any]:
        ran.append(run)
        return {"saved": True}

    async def target(run: ToolRun) -> Target:
        return Target(QuoteAction.QUOTE_READ.entity_type, "*", str(run.principal.tenant_id))

    def register(app: FastAPI) -> None:
        app.state.tools.register(
            Tool(
                name="save_note",
                description="Save a note.",
                arguments={
                    "type": "object",
                    "properties": {"text": {"type": "string", "maxLength": 100}},
                    "required": ["text"],
                    "additionalProperties": False,
                },
                result={
                    "type": "object",
                    "properties": {"saved": {"type": "boolean"}},
                    "required": ["saved"],
                    "additionalProperties": False,
                },
                action=QuoteAction.QUOTE_CREATE,
                risk=Risk.WRITE,
                run=note,
                target=target,
                sensitive=sensitive,
                after_untrusted=rule,
            )
        )

    return register


def test_a_write_after_untrusted_content_follows_the_tools_rule(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    setup = serve_app()
    note = {"name": "save_note", "arguments": {"text": "hello"}}
    expected = {
        None: (  # a write tool's default
            "pending_approval",
            "a write call after untrusted content entered the conversation",
        ),
        AfterUntrusted.APPROVAL: (
            "pending_approval",
            "a write call after untrusted content entered the conversation",
        ),
        AfterUntrusted.REFUSE: (
            "refused",
            "save_note never runs after untrusted content entered the conversation",
        ),
        AfterUntrusted.RUN: ("executed", "done"),  # the app's explicit choice
    }
    for rule, (status, reason) in expected.items():
        ran: list[ToolRun] = []
        # A buyer's own quote carries the vendor's text (another buyer may not read it).
        buyer, buyer_headers = sign_in(setup, urls, kms, BUYER)
        poisoned = setup.post(
            "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=buyer_headers
        ).json()
        read = {"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}
        model = script(
            tmp_path, {"tool_calls": [note]}, {"tool_calls": [read]}, {"tool_calls": [note]}
        )
        server = serve_app(note_tool(rule, ran), model=model)
        headers = signed_in_again(server, buyer)
        # Before anything untrusted, the write runs; after the vendor's text, the rule holds.
        assert outcomes(ask(server, headers, f"What does quote {poisoned['id']} say?")) == [
            ("save_note", "executed", "done"),
            ("get_quote", "executed", "done"),
            ("save_note", status, reason),
        ], rule
        assert len(ran) == (2 if status == "executed" else 1), rule


def test_a_high_risk_tool_can_never_run_after_untrusted_content() -> None:
    ran: list[ToolRun] = []
    app = FastAPI()
    app.state.tools = ToolRegistry()
    note_tool(AfterUntrusted.RUN, ran)(app)  # a write tool may opt in
    assert app.state.tools.get("save_note").untrusted_rule is AfterUntrusted.RUN
    tool = app.state.tools.get("save_note")
    with pytest.raises(ToolSchemaError, match="never runs after untrusted content"):
        dataclasses.replace(tool, risk=Risk.HIGH)
    assert dataclasses.replace(tool, after_untrusted=None).untrusted_rule is AfterUntrusted.APPROVAL
    high = dataclasses.replace(tool, risk=Risk.HIGH, after_untrusted=AfterUntrusted.REFUSE)
    assert high.untrusted_rule is AfterUntrusted.REFUSE
    read = dataclasses.replace(tool, risk=Risk.READ, after_untrusted=None)
    assert read.untrusted_rule is AfterUntrusted.RUN
