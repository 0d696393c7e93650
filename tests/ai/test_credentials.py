"""Credentials and personal data, however they are written, never reach the model or the
stored conversation: a user's credential is refused, a tool's is redacted, personal data is
masked, over HTTP against a live server, a model endpoint on loopback and real PostgreSQL."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.quotes.roles import BUYER
from tests.ai.test_assistant import NEW_QUOTE, POISON, ask, script, sign_in, signed_in_again

# Each an announced credential, as users paste them (fake values; the scanner is told so).
CREDENTIALS = [
    "my password: Hunter2Hunter2",  # pragma: allowlist secret
    "db_password=S3cr3tPassw0rd!",  # pragma: allowlist secret
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",  # pragma: allowlist secret
    "access_token=ya29.a0AfH6SMBexampleexampleexample",  # pragma: allowlist secret
    "refresh_token: 1//0gexampleexampleexample-abc",  # pragma: allowlist secret
    "the VPN password is Tr0ub4dor&3 for now",  # pragma: allowlist secret
    "Passwort: Sommer2026!",  # pragma: allowlist secret
    "clientSecret='q8Zk2v9Lm'",  # pragma: allowlist secret
    "password: |\n  Hunter2Hunter2",  # pragma: allowlist secret
    "Portal login: admin / Winter2026!",  # pragma: allowlist secret
    "The password was changed to Winter2026!",  # pragma: allowlist secret
    "mot de passe est Geheim123",  # pragma: allowlist secret
]
# Personal data in the ways people write it; each value must reach neither model nor table.
#: Card numbers never reach the assistant at all: the edge refuses them (PAY-1).
CARDS = ["4111.1111.1111.1111", "5555  5555  5555  4444", "4111_1111_1111_1111"]
PERSONAL = [
    "jürgen@müller.de",
    "de89 3704 0044 0532 0130 00",
    "GB82-WEST-1234-5698-7654-32",
    "078 05 1120",
    "078051120",
    "(555)123-4567",
    "030/12345678",
    "+41446681800",
    "Mobil: 01734567890",
    "bob%40example.com",
    "DE89/3704/0044/0532/0130/00",
    "ssn078051120",
]


class ScriptedEndpoint:
    """An OpenAI-compatible endpoint on loopback: answers with the scripted turns in order
    (then plain text) and keeps every request body, so a test sees what the model saw."""

    def __init__(self, *turns: dict[str, Any]) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers = answers = list(turns)  # a test may script more once it knows ids
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                bodies.append(json.loads(self.rfile.read(length)))
                message = answers.pop(0) if answers else {"content": "Noted."}
                answer = json.dumps({"choices": [{"message": {"role": "assistant", **message}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.encode())))
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen(self) -> str:
        """Everything the model was sent, as text."""
        return "\n".join(
            str(message.get("content")) for body in self.bodies for message in body["messages"]
        )


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
        ],
    }


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ScriptedEndpoint]]:
    started: list[ScriptedEndpoint] = []

    def start(*turns: dict[str, Any]) -> ScriptedEndpoint:
        scripted = ScriptedEndpoint(*turns)
        started.append(scripted)
        monkeypatch.setenv("OPENAI_BASE_URL", scripted.url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-secret")
        # The one key every tenant shares, which only this policy allows (AI-3).
        monkeypatch.setenv("RAMPARTS_MODEL_KEYS", "shared")
        return scripted

    yield start
    for scripted in started:
        scripted.server.shutdown()
        scripted.server.server_close()


def stored(urls: DatabaseUrls, tenant: uuid.UUID) -> list[tuple[str, str]]:
    """(role, content) of every stored message of the tenant's conversations."""
    with psycopg.connect(libpq(urls.owner)) as conn:
        rows = conn.execute(
            "SELECT role, content FROM ai_messages WHERE tenant_id = %s "
            "ORDER BY conversation_id, seq",
            (tenant,),
        )
        return [(role, content) for role, content in rows]


def test_a_credential_in_a_message_is_refused_and_goes_nowhere(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    endpoint: Callable[..., ScriptedEndpoint],
) -> None:
    model = endpoint()
    server = serve_app(model="openai:test-model", model_region="eu")
    first, _ = sign_in(server, urls, kms, BUYER)
    for message in CREDENTIALS:
        # A user each: repeated refusals would throttle one user, which is another test.
        _, headers = sign_in(server, urls, kms, BUYER, tenant=first.tenant)
        refused = ask(server, headers, f"Please log in for me. {message}")
        assert refused.status_code == 422, message
        assert refused.json()["type"] == "urn:ramparts:problem:content-refused"
        assert refused.headers["content-type"] == "application/problem+json"
    assert model.bodies == []
    assert stored(urls, first.tenant_id) == []


def test_personal_data_in_any_format_is_masked_for_the_model_and_the_table(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    endpoint: Callable[..., ScriptedEndpoint],
) -> None:
    model = endpoint({"content": "I will use [EMAIL_1] and [PHONE_1]."})
    server = serve_app(model="openai:test-model", model_region="eu")
    account, headers = sign_in(server, urls, kms, BUYER)
    answer = ask(server, headers, "Update the supplier record: " + "; ".join(PERSONAL))
    assert answer.status_code == 200, answer.text
    seen = model.seen()
    table = " ".join(content for _, content in stored(urls, account.tenant_id))
    for value in PERSONAL:
        assert value not in seen, value
        assert value not in table, value
    for token in ["[EMAIL_1]", "[IBAN_1]", "[IBAN_2]", "[SSN_1]"]:
        assert token in seen, token
    # The user reads the values again: tokens turn back only in their own view.
    assert answer.json()["reply"] == "I will use jürgen@müller.de and (555)123-4567."
    for card in CARDS:
        refused = ask(server, headers, f"Update the supplier record: {card}")
        assert refused.status_code == 400, card
        assert refused.json()["type"] == "urn:ramparts:problem:card-number-refused"
        assert card not in refused.text
    assert len(model.bodies) == 1  # only the first message reached the model


def test_a_credential_in_a_tool_result_is_redacted_before_the_model_and_the_table(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    endpoint: Callable[..., ScriptedEndpoint],
) -> None:
    model = endpoint()
    server = serve_app(model="openai:test-model", model_region="eu")
    account, headers = sign_in(server, urls, kms, BUYER)
    key = "ZXhhbXBsZWV4YW1wbGVleGFtcGxl"
    description = (
        "Portal login password: Winter2026!xyz, "  # pragma: allowlist secret
        f"api_key={key}; billing contact jürgen@müller.de"
    )
    created = server.post(
        "/api/quotes", json={**NEW_QUOTE, "description": description}, headers=headers
    )
    assert created.is_success, created.text
    quote_id = created.json()["id"]
    model.answers += [
        tool_call("get_quote", {"quote_id": quote_id}),
        # A model that writes a credential itself: it is not stored, nor shown again.
        {"content": "Done. The password is Winter2026!xyz"},  # pragma: allowlist secret
    ]
    answer = ask(server, headers, f"What does quote {quote_id} say?")
    assert answer.status_code == 200, answer.text
    assert answer.json()["actions"][0]["status"] == "executed"
    assert len(model.bodies) == 2
    result = model.bodies[1]["messages"][-1]["content"]
    assert "Portal login password: [PASSWORD]" in result
    assert "api_key=[PASSWORD]" in result
    assert "[EMAIL_1]" in result
    rows = stored(urls, account.tenant_id)
    # The model's turn that asked for the tool is kept too, so the result answers it by id.
    assert [role for role, _ in rows] == ["user", "assistant", "tool", "assistant"]
    table = " ".join(content for _, content in rows)
    for raw in ["Winter2026!xyz", key, "jürgen@müller.de"]:
        assert raw not in model.seen(), raw
        assert raw not in table, raw
    assert rows[3][1] == "Done. The password is [PASSWORD]"
    assert answer.json()["reply"] == "Done. The password is [PASSWORD]"


def approval_rows(urls: DatabaseUrls, tenant: uuid.UUID) -> list[tuple[str, str]]:
    """(arguments, result) of every approval request of the tenant, as stored."""
    with psycopg.connect(libpq(urls.owner)) as conn:
        rows = conn.execute(
            "SELECT arguments::text, coalesce(result::text, '') FROM ai_approvals "
            "WHERE tenant_id = %s ORDER BY created_at",
            (tenant,),
        )
        return [(arguments, result) for arguments, result in rows]


def test_what_the_model_writes_in_a_tool_call_is_stored_masked_and_runs_as_shown(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    setup = serve_app()
    buyer, setup_headers = sign_in(setup, urls, kms, BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=setup_headers
    ).json()
    secret = "Hunter2Hunter2"  # pragma: allowlist secret
    raw = ["bob@example.com", "+41 44 668 18 00", "4111 1111 1111 1111", secret]
    written = f"Ship to {raw[0]} (phone {raw[1]}), pay by card {raw[2]}; portal password: {secret}"
    shown = (  # what runs: personal data as written, the credential gone for good
        f"Ship to {raw[0]} (phone {raw[1]}), pay by card {raw[2]}; portal password: [PASSWORD]"
    )
    model = script(
        tmp_path,
        # Written by the model itself: run at once, then after untrusted content (approval).
        {
            "tool_calls": [
                {"name": "create_quote", "arguments": {**NEW_QUOTE, "description": written}}
            ]
        },
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]},
        {
            "tool_calls": [
                {
                    "name": "create_quote",
                    "arguments": {**NEW_QUOTE, "title": "Desks", "description": written},
                }
            ]
        },
    )
    server = serve_app(model=model)
    headers = signed_in_again(server, buyer)
    answer = ask(server, headers, f"What does quote {poisoned['id']} say?")
    assert answer.status_code == 200, answer.text
    actions = answer.json()["actions"]
    assert [a["status"] for a in actions] == ["executed", "executed", "pending_approval"]
    assert actions[0]["arguments"]["description"] == shown  # the user's own view
    quotes = server.get("/api/quotes", headers=headers).json()["items"]
    assert shown in [q["description"] for q in quotes]  # ran on the real values

    # Stored and replayed to the model: the call turns hold tokens, never the values.
    rows = stored(urls, buyer.tenant_id)
    calls = [content for role, content in rows if role == "assistant" and content[:1] == "["]
    table = " ".join(content for _, content in rows)
    for value in raw:
        assert value not in table, value
    for token in ["[EMAIL_1]", "[PHONE_1]", "[CARD_1]"]:
        assert token in calls[0], token
    assert "portal password: [PASSWORD]" in calls[0]
    [(arguments, result)] = approval_rows(urls, buyer.tenant_id)
    for value in raw:
        assert value not in arguments, value
    assert "[EMAIL_1]" in arguments
    assert result == ""

    # The approver sees the real arguments and runs exactly them; the stored result is masked.
    _, colleague = sign_in(server, urls, kms, BUYER, tenant=buyer.tenant)
    [item] = server.get("/api/approvals", headers=colleague).json()["items"]
    assert item["arguments"]["description"] == shown
    approved = server.post(f"/api/approvals/{item['id']}/approve", headers=colleague)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed"
    assert approved.json()["result"]["description"] == shown
    [(arguments, result)] = approval_rows(urls, buyer.tenant_id)
    for value in raw:
        assert value not in arguments, value
        assert value not in result, value
    for word in ["[EMAIL]", "[PASSWORD]", "Desks"]:
        assert word in result, word
