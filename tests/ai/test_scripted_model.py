"""The scripted model as the drills use it: it reads its file again on every call, starts a
changed script over, and keeps one witness line per call of exactly what it was sent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ramparts.ai.models import ModelOutputError, ModelTurn, ScriptedModel, ToolCall
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.roles import BUYER
from ramparts.tabletop.script import ScriptControl, seen_path
from tests.ai.test_assistant import NEW_QUOTE, ask, sign_in

TOOLS = [
    {"type": "function", "function": {"name": "get_item", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "pay_out", "parameters": {"type": "object"}}},
]
HELLO = [{"role": "user", "content": "hello"}]


def write(path: Path, turns: object) -> bytes:
    """Replaces `path` whole, as the drill does."""
    data = json.dumps(turns).encode()
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return data


def call(model: ScriptedModel, messages: list[dict[str, Any]] = HELLO) -> ModelTurn:
    return asyncio.run(model.complete(messages, TOOLS))


def witnessed(model: ScriptedModel) -> list[dict[str, Any]]:
    return [json.loads(line) for line in model.witness.read_text().splitlines()]


def test_a_changed_script_starts_over_from_its_first_turn(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    write(path, [{"text": "a1"}, {"text": "a2"}, {"text": "a3"}])
    model = ScriptedModel(path)
    assert call(model).text == "a1"
    write(path, [{"text": "b1"}, {"tool_calls": [{"name": "pay_out", "arguments": {"n": 1}}]}])
    assert call(model).text == "b1"
    assert call(model).tool_calls == (ToolCall("pay_out", {"n": 1}),)
    assert call(model) == ModelTurn("")  # past the end, as before
    write(path, [{"text": "a1"}, {"text": "a2"}, {"text": "a3"}])
    assert call(model).text == "a1"  # back to the first version: it is new again


def test_the_same_content_goes_on_where_it_was(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    turns = [{"text": "one"}, {"text": "two"}, {"text": "three"}]
    write(path, turns)
    model = ScriptedModel(path)
    assert call(model).text == "one"
    write(path, turns)  # a new file, the same bytes
    assert call(model).text == "two"
    assert call(model).text == "three"
    assert call(model) == ModelTurn("")


def test_each_call_leaves_one_witness_line_of_what_it_was_sent(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    first = write(path, [{"tool_calls": [{"name": "get_item", "arguments": {}}]}, {"text": "ok"}])
    model = ScriptedModel(path)
    assert model.witness == seen_path(path) == tmp_path / "script.json.seen.jsonl"
    asked = [{"role": "user", "content": "Zahlung an [EMAIL_1] \u2014 \u00fcber\nzwei Zeilen"}]
    answered: list[dict[str, Any]] = [
        *asked,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call-1", "name": "get_item", "arguments": {}}],
        },
        {"role": "tool", "tool_call_id": "call-1", "content": '{"item": "[IBAN_1]"}'},
    ]
    call(model, asked)
    call(model, answered)
    second = write(path, [{"text": "again"}])
    asyncio.run(model.complete(HELLO, TOOLS[:1]))
    lines = model.witness.read_bytes().splitlines()
    assert len(lines) == 3
    assert all(line.isascii() for line in lines)  # one line each, whatever the text holds
    assert witnessed(model) == [
        {
            "script": hashlib.sha256(first).hexdigest(),
            "call": 0,
            "tools": ["get_item", "pay_out"],
            "messages": asked,
        },
        {
            "script": hashlib.sha256(first).hexdigest(),
            "call": 1,
            "tools": ["get_item", "pay_out"],
            "messages": answered,
        },
        {
            "script": hashlib.sha256(second).hexdigest(),
            "call": 0,
            "tools": ["get_item"],
            "messages": HELLO,
        },
    ]
    # Past the end is a call too: the model was still sent the conversation.
    call(model)
    assert witnessed(model)[-1]["call"] == 1


def test_the_witness_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    write(path, [{"text": "hi"}])
    model = ScriptedModel(path)
    previous = os.umask(0)  # the mode comes from the adapter, not from a kind umask
    try:
        call(model)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(model.witness.stat().st_mode) == 0o600
    # One someone else left readable is made owner-only before anything is added to it.
    model.witness.chmod(0o644)
    call(model)
    assert stat.S_IMODE(model.witness.stat().st_mode) == 0o600
    assert len(witnessed(model)) == 2


def test_a_witness_that_cannot_be_kept_refuses_the_turn(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    write(path, [{"text": "hi"}])
    model = ScriptedModel(path)
    elsewhere = tmp_path / "elsewhere.jsonl"
    model.witness.symlink_to(elsewhere)
    with pytest.raises(ModelOutputError, match="witness"):
        call(model)
    assert not elsewhere.exists()  # a link is never followed
    model.witness.unlink()
    assert call(model).text == "hi"  # the refused turn was not used up
    assert len(witnessed(model)) == 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"text": "not a list"}', "a script is a JSON list of turns"),
        (b"[{", "the script is not JSON"),
        (b"\xff\xfe\x00", "the script is not JSON"),
        (None, "the script cannot be read"),
    ],
)
def test_a_broken_script_at_call_time_refuses_the_turn(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "script.json"
    good = [{"text": "one"}, {"text": "two"}]
    write(path, good)
    model = ScriptedModel(path)
    assert call(model).text == "one"
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(ModelOutputError, match=reason):
        call(model)
    assert witnessed(model)[-1]["call"] == 0  # nothing replayed: nothing kept
    write(path, good)  # the version it was replaying, back: it goes on where it was
    assert call(model).text == "two"


def test_a_bad_script_at_start_still_fails_the_start(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    with pytest.raises(FileNotFoundError):
        ScriptedModel(path)
    path.write_text("[{")
    with pytest.raises(json.JSONDecodeError):
        ScriptedModel(path)
    path.write_text('{"text": "hi"}')
    with pytest.raises(ModelOutputError, match=r"script\.json: a script is a JSON list"):
        ScriptedModel(path)


def test_threads_each_get_their_own_turn_and_line(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    write(path, [{"text": str(n)} for n in range(200)])
    model = ScriptedModel(path)
    answers: list[str | None] = []

    def ask(times: int) -> None:
        answers.extend(call(model).text for _ in range(times))

    threads = [threading.Thread(target=ask, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers, key=lambda text: int(text or "")) == [str(n) for n in range(200)]
    assert sorted(line["call"] for line in witnessed(model)) == list(range(200))


WORKER = """
import asyncio, sys
from pathlib import Path
from ramparts.ai.models import ScriptedModel
model = ScriptedModel(Path(sys.argv[1]))
messages = [{"role": "user", "content": sys.argv[2] * 100_000}]
for _ in range(40):
    asyncio.run(model.complete(messages, []))
"""


def test_workers_lines_never_mix(tmp_path: Path) -> None:
    """Several server processes append to one witness: each line (here 100 kB, far above
    what a pipe writes at once) arrives whole."""
    path = tmp_path / "script.json"
    write(path, [{"text": "hi"}])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), letter], env=env)
        for letter in "abc"
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    lines = witnessed(ScriptedModel(path))
    assert len(lines) == 120
    for letter in "abc":
        mine = [line for line in lines if line["messages"][0]["content"][0] == letter]
        assert [line["messages"][0]["content"] for line in mine] == [letter * 100_000] * 40
        assert [line["call"] for line in mine] == list(range(40))


def test_a_drills_script_control_plays_and_reads_back_each_message(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    control = ScriptControl(path)
    control.play([{"tool_calls": [{"name": "pay_out", "arguments": {"to": "x"}}]}])
    model = ScriptedModel(path)
    first = [{"role": "user", "content": "first message"}]
    assert call(model, first).tool_calls == (ToolCall("pay_out", {"to": "x"}),)
    closing = call(model, first).text
    assert closing is not None
    assert closing.startswith("(turns end ")
    seen = control.seen()
    assert [(s.tools, s.messages) for s in seen] == [(("get_item", "pay_out"), tuple(first))] * 2

    # The same attack again: a new script all the same, replayed from its first turn, and
    # what the model saw of it alone.
    control.play([{"tool_calls": [{"name": "pay_out", "arguments": {"to": "x"}}]}])
    second = [{"role": "user", "content": "second message"}]
    assert call(model, second).tool_calls == (ToolCall("pay_out", {"to": "x"}),)
    assert [s.messages for s in control.seen()] == [tuple(second)]
    assert "first message" not in "".join(s.text() for s in control.seen())


def test_a_drill_plays_the_model_of_a_running_server(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    """Through the real gateway over HTTP: each message replays what the drill played for
    it, and the witness holds what the gateway sent, masked."""
    control = ScriptControl(tmp_path / "model.json")
    control.play([])  # the server reads the file at start
    server = serve_app(model=f"scripted:{control.path}")
    _, headers = sign_in(server, urls, kms, BUYER)

    control.play([{"tool_calls": [{"name": "create_quote", "arguments": NEW_QUOTE}]}])
    answer = ask(server, headers, "Chairs for jane.doe@example.com, IBAN DE89370400440532013000")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(a["tool"], a["status"]) for a in body["actions"]] == [("create_quote", "executed")]
    assert body["reply"].startswith("(turns end ")
    seen = control.seen()
    assert len(seen) == 2  # the call, then the answer after its result
    assert "create_quote" in seen[0].tools
    assert "issue_refund" not in seen[0].tools  # a Finance tool is never offered to a buyer
    assert seen[0].messages[-1]["role"] == "user"
    assert "[EMAIL_1]" in seen[0].messages[-1]["content"]
    assert "[IBAN_1]" in seen[0].messages[-1]["content"]
    assert seen[1].messages[-1]["role"] == "tool"
    assert NEW_QUOTE["title"] in seen[1].messages[-1]["content"]
    everything = "".join(call.text() for call in seen)
    for value in ("jane.doe@example.com", "DE89370400440532013000"):
        assert value not in everything

    control.play([{"text": "second message, second script"}])
    again = ask(server, headers, "hello again")
    assert again.json()["reply"] == "second message, second script"
    [only] = control.seen()
    assert [m["content"] for m in only.messages] == ["hello again"]

    control.path.write_text('{"text": "not a list"}')  # broken mid-run: the turn is refused
    broken = ask(server, headers, "hello")
    assert broken.status_code == 200, broken.text
    assert broken.json()["reply"] == "The model's answer was not valid and was refused."
    assert broken.json()["actions"] == []
