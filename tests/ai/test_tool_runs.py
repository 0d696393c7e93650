"""What a tool is told about a call: who asked, in which conversation, through which channel
it is authorized, and who confirmed it; the same whether it ran at once or on approval."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ramparts.ai.tools import Risk, Tool, ToolRun
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.identity.models import Role
from ramparts.policy.engine import Channel, PolicyAction, Target
from tests.ai.test_assistant import ask, script, sign_in, signed_in_again


def recording_tool(runs: list[ToolRun]) -> Callable[[FastAPI], None]:
    """A `write` tool whose note is sensitive (an unbacked one waits for approval); it keeps
    every `ToolRun` it is given."""

    async def save(run: ToolRun) -> dict[str, Any]:
        runs.append(run)
        return {"saved": True}

    async def target(run: ToolRun) -> Target:
        return Target("Quote", "*", str(run.principal.tenant_id))

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
                action=PolicyAction.QUOTE_CREATE,
                risk=Risk.WRITE,
                run=save,
                target=target,
                sensitive=frozenset({"text"}),
            )
        )

    return register


def test_a_tool_knows_who_asked_in_which_conversation_and_who_confirmed(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    runs: list[ToolRun] = []
    setup = serve_app()
    requester, _ = sign_in(setup, urls, kms, Role.BUYER)
    model = script(
        tmp_path,
        {
            "tool_calls": [
                {"name": "save_note", "arguments": {"text": "blue-chairs"}},  # the user said it
                {"name": "save_note", "arguments": {"text": "red-desks"}},  # nobody did
            ]
        },
        {"text": "saved one, the other waits"},
    )
    server = serve_app(recording_tool(runs), model=model)
    headers = signed_in_again(server, requester)
    answer = ask(server, headers, "Save the note blue-chairs")
    assert answer.status_code == 200, answer.text
    conversation = uuid.UUID(answer.json()["conversation_id"])
    executed, pending = answer.json()["actions"]
    assert (executed["status"], pending["status"]) == ("executed", "pending_approval")

    # The model's call ran at once: as the requester, in their conversation, on `ai_tool`.
    [direct] = runs
    assert direct.principal.user_id == requester.user_id
    assert direct.conversation_id == conversation
    assert direct.channel is Channel.AI_TOOL
    assert direct.approved_by is None
    assert direct.arguments == {"text": "blue-chairs"}

    # A colleague confirms the other: it runs as the requester still, in the requester's
    # conversation, judged as the requester's own (`api`) call, confirmed by the colleague.
    colleague, colleague_headers = sign_in(server, urls, kms, Role.BUYER, requester.tenant)
    approved = server.post(
        f"/api/approvals/{pending['approval_id']}/approve", headers=colleague_headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    [_, confirmed] = runs
    assert confirmed.principal.user_id == requester.user_id
    assert confirmed.approved_by is not None
    assert confirmed.approved_by.user_id == colleague.user_id != requester.user_id
    assert confirmed.conversation_id == conversation
    assert confirmed.channel is Channel.API
    assert confirmed.arguments == {"text": "red-desks"}
