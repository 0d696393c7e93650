"""Model adapters: `offline` (deterministic, no network), `scripted:<file>` (replays turns, to
play a compromised model in tests and red-team runs) and `openai:<model>` (any
OpenAI-compatible endpoint with tool calling).

Whatever a model returns is parsed against one shape and refused when it does not fit: a turn is
text, or a list of tool calls each with a name and an arguments object. Nothing is repaired by
guesswork.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Model",
    "ModelOutputError",
    "ModelTurn",
    "OfflineModel",
    "ScriptedModel",
    "ToolCall",
    "parse_turn",
    "storable",
]

MAX_TOOL_CALLS = 8
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")


class ModelOutputError(Exception):
    """The model's output does not fit the turn shape; it is refused."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: Any  # as the model sent it: checked against the tool's schema later
    id: str | None = None  # the model's own id for the call, where its protocol has one


@dataclass(frozen=True)
class ModelTurn:
    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()


class Model(Protocol):
    """A model adapter: what the gateway calls for each model turn. Ramparts has its own
    (`OfflineModel`, `ScriptedModel`, `OpenAIModel`); an app may bring another (see
    `create_app(..., model=...)`) and it stays behind the same checks, because whatever an
    adapter returns is treated as a fully compromised model's answer.

    `name` names the adapter in the audit trail. `complete` gets the conversation as the
    model may see it (masked: `role` user, assistant or tool, with `content`; an assistant
    turn that asked for calls has `tool_calls` of `{"id", "name", "arguments"}`, and each
    result answers one by `tool_call_id`) and the tools on offer in OpenAI's function-tool
    shape. It returns text or tool calls (`parse_turn` checks a raw turn), or raises
    `ModelOutputError` when its model gave nothing of that shape: the turn is then refused.
    """

    name: str

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn: ...


def storable(value: object) -> bool:
    """No NUL and no lone surrogate anywhere: PostgreSQL text and jsonb refuse both."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    return True


def parse_turn(raw: object) -> ModelTurn:
    """`{"text": "..."}` or `{"tool_calls": [{"name": "...", "arguments": {...}}]}`."""
    if not isinstance(raw, dict) or not raw.keys() <= {"text", "tool_calls"} or not raw:
        raise ModelOutputError("a turn is an object with 'text' or 'tool_calls'")
    if not storable(raw):
        raise ModelOutputError("a turn holds NUL or bad UTF-16")
    text = raw.get("text")
    if text is not None and not isinstance(text, str):
        raise ModelOutputError("'text' must be a string")
    calls = raw.get("tool_calls", [])
    if not isinstance(calls, list) or len(calls) > MAX_TOOL_CALLS:
        raise ModelOutputError(f"'tool_calls' must be a list of at most {MAX_TOOL_CALLS}")
    parsed = []
    for call in calls:
        if not isinstance(call, dict) or not call.keys() <= {"name", "arguments"}:
            raise ModelOutputError("a tool call is an object with 'name' and 'arguments'")
        name = call.get("name")
        if not isinstance(name, str) or not name:
            raise ModelOutputError("a tool call needs a 'name'")
        parsed.append(ToolCall(name[:100], call.get("arguments", {})))
    return ModelTurn(text, tuple(parsed))


class ScriptedModel:
    """Replays a JSON list of turns, one per call; past the end it answers with empty text."""

    def __init__(self, path: Path) -> None:
        turns = json.loads(path.read_text())
        if not isinstance(turns, list):
            raise ModelOutputError(f"{path}: a script is a JSON list of turns")
        self.name = f"scripted:{path.name}"
        self._turns = list(turns)
        self._lock = threading.Lock()

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        with self._lock:
            raw = self._turns.pop(0) if self._turns else {"text": ""}
        return parse_turn(raw)


class OfflineModel:
    """Deterministic and local, so the demo works with nothing configured: it drafts a
    proposal or lists quotes through the tools, then answers from what the tools returned."""

    name = "offline"

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        offered = {tool["function"]["name"] for tool in tools}
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last["role"] == "tool":
            return ModelTurn(_summary(last.get("content", "")))
        ask = str(last.get("content", "")).lower()
        quote = _UUID.search(ask)
        if "draft" in ask and quote and "draft_proposal" in offered:
            return ModelTurn(None, (ToolCall("draft_proposal", {"quote_id": quote.group()}),))
        if quote and "get_quote" in offered:
            return ModelTurn(None, (ToolCall("get_quote", {"quote_id": quote.group()}),))
        if "quote" in ask and "list_quotes" in offered:
            return ModelTurn(None, (ToolCall("list_quotes", {}),))
        names = ", ".join(sorted(offered)) or "none"
        return ModelTurn(f"I can help with your quotes. Tools available to you: {names}.")


def _summary(content: str) -> str:
    try:
        result = json.loads(content)
    except ValueError:
        return "Done."
    if isinstance(result, dict) and isinstance(result.get("proposal"), str):
        return str(result["proposal"])
    if isinstance(result, dict) and isinstance(result.get("quotes"), list):
        lines = [f"- {q.get('title')} ({q.get('status')})" for q in result["quotes"]]
        return "Your quotes:\n" + ("\n".join(lines) if lines else "(none)")
    if isinstance(result, dict) and result.get("title"):
        return f"{result['title']}: {result.get('status', '')}"
    return "Done."
