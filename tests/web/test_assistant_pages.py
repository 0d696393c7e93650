"""The assistant panel and the approvals inbox over HTTP: the panel offers only the user's
tools and shows each action with its status and its arguments' provenance; a call held for
approval reaches another person's inbox with its untrusted argument marked, is approved there,
and never by the person who asked."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ramparts.ai import approvals as approvals_module
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls
from ramparts.quotes.roles import BUYER, FINANCE
from tests.ai.test_assistant import NEW_QUOTE, POISON, quotes_of, script, sign_in
from tests.identity.helpers import Account, next_code, provision
from tests.web.sessions_helpers import page_csrf, sign_in_web, web_app


@pytest.fixture
def other_browser() -> Iterator[Callable[[httpx.Client], httpx.Client]]:
    """Another browser (its own cookies) on a server, closed after the test."""
    opened: list[httpx.Client] = []

    def open_on(server: httpx.Client) -> httpx.Client:
        opened.append(httpx.Client(base_url=server.base_url, timeout=30))
        return opened[-1]

    yield open_on
    for client in opened:
        client.close()


def panel(page: httpx.Response) -> str:
    found = re.search(r'<aside class="assistant".*?</aside>', page.text, re.S)
    assert found, "the page has no assistant panel"
    return found.group(0)


def tools_listed(page: httpx.Response) -> list[str]:
    return re.findall(r"<li><code>([a-z0-9_]+)</code>", panel(page))


def test_the_panel_lists_only_the_users_own_tools(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> None:
    server = web_app(serve_app, urls, kms)
    buyer = provision(urls, kms, roles=(BUYER,))
    home = sign_in_web(server, buyer)
    assert home.status_code == 200, home.text
    listed = tools_listed(home)
    assert "create_quote" in listed
    assert "charge_deposit" not in listed
    assert "issue_refund" not in listed
    # The same list as the API's, which is the gateway's own filter: Finance has the money.
    _, finance_headers = sign_in(server, urls, kms, FINANCE, tenant=buyer.tenant)
    finance_tools = server.get("/api/assistant/tools", headers=finance_headers)
    assert finance_tools.status_code == 200, finance_tools.text
    assert {"charge_deposit", "issue_refund"} <= {t["name"] for t in finance_tools.json()}
    assert all(set(t) == {"name", "description", "risk"} for t in finance_tools.json())
    # Every page carries the panel, its form with the CSRF field and the script.
    assert 'action="/app/assistant"' in panel(home)
    assert f'name="csrf" value="{page_csrf(home)}"' in panel(home)
    assert '<script src="/static/assistant.js" defer></script>' in home.text
    assert 'aria-live="polite"' in panel(home)


def poisoned_then_create(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> tuple[httpx.Client, Account, httpx.Response, dict[str, Any]]:
    """A web app whose model reads the buyer's poisoned quote, then asks to create a quote
    (held for approval), with the buyer signed in on it; the buyer, their start page and
    their quote."""
    setup = serve_app()
    buyer, headers = sign_in(setup, urls, kms, BUYER)
    poisoned = setup.post(
        "/api/quotes", json={**NEW_QUOTE, "description": POISON}, headers=headers
    ).json()
    model = script(
        tmp_path,
        {"tool_calls": [{"name": "get_quote", "arguments": {"quote_id": poisoned["id"]}}]},
        {"tool_calls": [{"name": "create_quote", "arguments": {**NEW_QUOTE, "title": "Desks"}}]},
        {"text": "I asked for the desks."},
    )
    server = web_app(serve_app, urls, kms, model=model)
    assert buyer.totp_secret is not None
    # The current code went to the setup's sign-in: the web sign-in uses the next one.
    home = sign_in_web(server, buyer, otp=next_code(buyer.totp_secret))
    assert home.status_code == 200, home.text
    return server, buyer, home, poisoned


def test_a_message_shows_each_action_with_its_status_and_provenance(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms, tmp_path: Path
) -> None:
    server, buyer, home, poisoned = poisoned_then_create(serve_app, urls, kms, tmp_path)
    sent = server.post(
        "/app/assistant",
        data={"message": f"What does quote {poisoned['id']} say?", "conversation_id": ""},
        headers={"x-csrf-token": page_csrf(home), "x-assistant-fragment": "1"},
    )
    assert sent.status_code == 200, sent.text
    fragment = sent.text
    assert "<html" not in fragment  # only the conversation
    actions = re.findall(r'<section class="action".*?</section>', fragment, re.S)
    assert len(actions) == 2
    # get_quote ran on the id the buyer typed: trusted.
    assert "<code>get_quote</code>" in actions[0]
    assert ">Done<" in actions[0]
    assert re.search(r"<code>quote_id</code></dt>\s*<dd>.*?>Trusted<", actions[0], re.S)
    # create_quote waits: its title came from the model after the vendor's text, untrusted.
    assert "<code>create_quote</code>" in actions[1]
    assert ">Waiting for approval<" in actions[1]
    assert 'href="/app/approvals"' in actions[1]
    assert re.search(r"<code>title</code></dt>\s*<dd>.*?>Untrusted<", actions[1], re.S)
    assert "I asked for the desks." in fragment
    # The vendor's text reaches the page escaped, never as markup.
    conversation = re.search(r'data-conversation-id="([0-9a-f-]{36})"', fragment)
    assert conversation
    assert quotes_of(urls, buyer.tenant_id) == [(poisoned["id"], "Office chairs")]

    # Without script: the form posts, goes back to its page, which shows the exchange.
    again = server.post(
        "/app/assistant",
        data={
            "message": "And now?",
            "conversation_id": conversation.group(1),
            "back": "/app",
            "csrf": page_csrf(home),
        },
    )
    assert again.status_code == 303
    assert again.headers["location"] == "/app"
    page = server.get("/app")
    assert "And now?" in panel(page)
    assert f'name="conversation_id" value="{conversation.group(1)}"' in panel(page)
    # Only our own paths: another site's address goes to the start page.
    away = server.post(
        "/app/assistant",
        data={"message": "hi", "back": "https://evil.example/", "csrf": page_csrf(home)},
    )
    assert away.headers["location"] == "/app"
    # No CSRF token, nothing sent.
    forged = server.post("/app/assistant", data={"message": "hi"})
    assert forged.status_code == 403


def test_a_held_call_is_approved_by_another_person_and_never_by_its_requester(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path: Path,
    other_browser: Callable[[httpx.Client], httpx.Client],
) -> None:
    server, buyer, home, poisoned = poisoned_then_create(serve_app, urls, kms, tmp_path)
    server.post(
        "/app/assistant",
        data={"message": f"What does quote {poisoned['id']} say?", "csrf": page_csrf(home)},
    )
    # The requester sees it waiting for another person, with nothing to press.
    own = server.get("/app/approvals")
    assert own.status_code == 200, own.text
    assert "Waiting for another person" in own.text
    assert "/approve" not in own.text
    approval = re.search(r'id="approval-([0-9a-f-]{36})"', own.text)
    assert approval
    refused = server.post(
        f"/app/approvals/{approval.group(1)}/approve", data={"csrf": page_csrf(own)}
    )
    assert refused.status_code == 403
    assert "four eyes" in refused.text

    colleague = provision(urls, kms, roles=(BUYER,), tenant=buyer.tenant)
    other = other_browser(server)
    sign_in_web(other, colleague)
    inbox = other.get("/app/approvals")
    assert inbox.status_code == 200, inbox.text
    assert "<code>create_quote</code>" in inbox.text
    assert buyer.username in inbox.text
    assert "By the assistant, in a conversation" in inbox.text
    row = re.search(
        r'<tr class="untrusted">\s*<th scope="row"><code>title</code>.*?</tr>', inbox.text, re.S
    )
    assert row
    assert "Untrusted: check it" in row.group(0)
    assert '<code>"Desks"</code>' in row.group(0)
    approved = other.post(
        f"/app/approvals/{approval.group(1)}/approve", data={"csrf": page_csrf(inbox)}
    )
    assert approved.status_code == 303, approved.text
    shown = other.get("/app/approvals")
    assert "Approved: it ran." in shown.text
    assert "Nothing waits for your approval" in shown.text
    assert "Approved: it ran." not in other.get("/app/approvals").text  # shown once
    assert [title for _, title in quotes_of(urls, buyer.tenant_id)] == ["Office chairs", "Desks"]


def test_deciding_without_a_recent_second_factor_asks_to_confirm_it_is_you(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    other_browser: Callable[[httpx.Client], httpx.Client],
) -> None:
    server, buyer, home, poisoned = poisoned_then_create(serve_app, urls, kms, tmp_path)
    server.post(
        "/app/assistant",
        data={"message": f"What does quote {poisoned['id']} say?", "csrf": page_csrf(home)},
    )
    colleague = provision(urls, kms, roles=(BUYER,), tenant=buyer.tenant)
    other = other_browser(server)
    inbox = sign_in_web(other, colleague, "/app/approvals")
    approval = re.search(r'id="approval-([0-9a-f-]{36})"', inbox.text)
    assert approval
    # The sign-in is older than allowed (the server runs in this process).
    monkeypatch.setattr(approvals_module, "RECENT_SIGN_IN", timedelta(0))
    stale = other.post(
        f"/app/approvals/{approval.group(1)}/approve", data={"csrf": page_csrf(inbox)}
    )
    assert stale.status_code == 403
    assert "second factor in the last 10 minutes" in stale.text
    assert 'href="/app/login?next=/app/approvals"' in stale.text
    assert "Confirm it is you" in stale.text
    assert [title for _, title in quotes_of(urls, buyer.tenant_id)] == ["Office chairs"]
