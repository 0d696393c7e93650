"""What a tool is told about a call: who asked, in which conversation, through which channel
it is authorized, and who confirmed it; the same whether it ran at once or on approval."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from ramparts.ai.tools import ToolRun
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.policy.engine import Channel
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import ask, script, sign_in, signed_in_again
from tests.ai.test_tool_calls import note_tool


def test_a_tool_knows_who_asked_in_which_conversation_and_who_confirmed(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    runs: list[ToolRun] = []
    setup = serve_app()
    requester, _ = sign_in(setup, urls, kms, BUYER)
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
    # A note is sensitive here: one nobody said waits for a different person's approval.
    server = serve_app(note_tool(None, runs, sensitive=frozenset({"text"})), model=model)
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
    colleague, colleague_headers = sign_in(server, urls, kms, BUYER, requester.tenant)
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
