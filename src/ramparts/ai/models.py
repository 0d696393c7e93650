"""Model adapters: `offline` (deterministic, no network), `scripted:<file>` (replays turns, to
play a compromised model in tests and red-team runs) and `openai:<model>` (any
OpenAI-compatible endpoint with tool calling).

Whatever a model returns is parsed against one shape and refused when it does not fit: a turn is
text, or a list of tool calls each with a name and an arguments object. Nothing is repaired by
guesswork.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    """Replays a JSON list of turns, one per call; past the end it answers with empty text.

    It plays a compromised model in tests and in the tabletop and red-team drills, against a
    running server with any number of workers. The drill replaces the file before each
    message, so every call reads it again (it is small): new content is replayed from its
    first turn, the same content goes on where it was. A file that cannot be read or is not a
    list of turns refuses the turn (`ModelOutputError`), as a broken model would.

    Like any model endpoint, it keeps what it is sent: each call appends one JSON line to
    `witness` (`<script>.seen.jsonl`) with the script's SHA-256, the turn's index in it, the
    tools offered and the messages exactly as received (the masked ones the gateway sends).
    That is how a drill proves no planted secret or raw personal data reached the model. The
    file is local and owner-only (0600). The prod profile refuses to start with this model.
    """

    def __init__(self, path: Path) -> None:
        self.name = f"scripted:{path.name}"
        self.path = path
        self.witness = path.with_name(path.name + ".seen.jsonl")
        self._lock = threading.Lock()
        # A bad file at start fails the start (missing: OSError, not JSON: ValueError).
        data = path.read_bytes()
        try:
            turns = _turns_of(data)
        except ModelOutputError as error:
            raise ModelOutputError(f"{path}: {error}") from None
        self._script = _Script(hashlib.sha256(data).hexdigest(), turns)
        self._next = 0

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        # Under the lock, the file read and the witness line are tiny: each call gets its own
        # turn, and this process writes its lines in the order of the turns.
        with self._lock:
            script = self._current()
            call = self._next
            self._keep(script.digest, call, messages, tools)
            self._next += 1  # a turn refused for want of its witness is not used up
        return parse_turn(script.turns[call] if call < len(script.turns) else {"text": ""})

    def _current(self) -> _Script:
        """The script the file holds now; one that changed starts over from its first turn."""
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise ModelOutputError(f"the script cannot be read ({error.strerror})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != self._script.digest:
            try:
                turns = _turns_of(data)
            except ValueError:
                raise ModelOutputError("the script is not JSON") from None
            self._script, self._next = _Script(digest, turns), 0
        return self._script

    def _keep(
        self, digest: str, call: int, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> None:
        """One witness line, appended in one write: lines of several workers never mix. The
        turn is refused when it cannot be kept, so a drill never misses what was sent."""
        line = json.dumps(
            {
                "script": digest,
                "call": call,
                "tools": [tool["function"]["name"] for tool in tools],
                "messages": messages,
            }
        )
        data = (line + "\n").encode()  # ASCII: json.dumps escapes the rest, newlines too
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.witness, flags, 0o600)
            try:
                os.fchmod(fd, 0o600)  # owner-only even when someone made it first
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as error:
            raise ModelOutputError(f"the witness cannot be kept ({error.strerror})") from None
        if written != len(data):
            raise ModelOutputError("the witness line was cut short")


@dataclass(frozen=True)
class _Script:
    digest: str  # SHA-256 of the file's bytes: names the version in the witness
    turns: tuple[Any, ...]


def _turns_of(data: bytes) -> tuple[Any, ...]:
    """The turns of a script file (checked one by one when replayed). Not JSON: ValueError."""
    turns = json.loads(data)
    if not isinstance(turns, list):
        raise ModelOutputError("a script is a JSON list of turns")
    return tuple(turns)


class OfflineModel:
    """Deterministic and local, so the demo works with nothing configured. It knows no app:
    it calls the offered tool whose name the user's words match best (preferring reads),
    filling its one required id from an id in the message, then answers from what the tool
    returned."""

    name = "offline"

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelTurn:
        last = messages[-1] if messages else {"role": "user", "content": ""}
        if last["role"] == "tool":
            return ModelTurn(_summary(last.get("content", "")))
        call = _best_call(str(last.get("content", "")).lower(), tools)
        if call is not None:
            return ModelTurn(None, (call,))
        names = ", ".join(sorted(tool["function"]["name"] for tool in tools)) or "none"
        return ModelTurn(f"I can help with that. Tools available to you: {names}.")


_READ_VERBS = frozenset({"get", "read", "list", "show"})
_NEGATIONS = frozenset({"not", "no", "never", "don't", "dont", "without", "stop", "cancel"})


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _best_call(ask: str, tools: list[dict[str, Any]]) -> ToolCall | None:
    """The tool whose name shares most words with `ask` (an id it fills counts as one) and
    whose required arguments the ids in `ask` can fill; ties go to a read, then to the name.
    A tool that is not a read is called only when `ask` is an order that starts with its
    verb ("approve expense 7f3…", "please draft …"): a question or a negation ("should I
    approve …?", "do not approve …") never changes anything."""
    said = re.findall(r"[a-z']+", ask)
    words = {_stem(word) for word in said}
    ordered = said[1:2] if said[:1] == ["please"] else said[:1]
    if "?" in ask or words & _NEGATIONS:
        ordered = []
    ids = _UUID.findall(ask)
    ranked = []
    for tool in tools:
        function = tool["function"]
        arguments = _id_arguments(function.get("parameters") or {}, ids)
        if arguments is None:
            continue
        parts = [_stem(part) for part in function["name"].split("_")]
        matched = sum(part in words for part in parts)
        read = parts[0] in _READ_VERBS
        if (matched or arguments) and (read or parts[0] in ordered):
            # An id the message gives counts, twice when the message names its kind too
            # ("expense 7f3…" for `expense_id`).
            named = sum(_stem(name.removesuffix("_id")) in words for name in arguments)
            score = matched + len(arguments) + named
            ranked.append(((-score, -len(arguments), not read, function["name"]), arguments))
    if not ranked:
        return None
    (*_, name), arguments = min(ranked)
    return ToolCall(name, arguments)


def _id_arguments(parameters: dict[str, Any], ids: list[str]) -> dict[str, Any] | None:
    """Each required argument filled with the next id of the message, or None when one is
    not an id or there are too few ids."""
    required = parameters.get("required") or []
    if len(required) > len(ids) or not all(
        name == "id" or name.endswith("_id") for name in required
    ):
        return None
    return dict(zip(required, ids, strict=False))


def _summary(content: str) -> str:
    try:
        result = json.loads(content)
    except ValueError:
        return "Done."
    if not isinstance(result, dict):
        return "Done."
    # A listing: the records (a list of objects), or an empty list when nothing was found.
    lists = [(key, value) for key, value in result.items() if isinstance(value, list)]
    records = [(k, v) for k, v in lists if v and all(isinstance(item, dict) for item in v)]
    for key, value in records[:1] or [(k, v) for k, v in lists if not v][-1:]:
        lines = [f"- {_label(item)} ({item.get('status')})" for item in value]
        return f"Your {key}:\n" + ("\n".join(lines) if lines else "(none)")
    texts = [value for value in result.values() if isinstance(value, str) and "\n" in value]
    if texts:
        return max(texts, key=len)
    if result.get("title"):
        return f"{result['title']}: {result.get('status', '')}"
    return "Done."


def _label(record: dict[str, Any]) -> object:
    """What a listed record is called: its title, name or description, else its id."""
    return next((record[k] for k in ("title", "name", "description", "id") if record.get(k)), "")
