"""The quote app's pages over HTTP, on a live server and real PostgreSQL: a buyer asks for a
quote through the form, a seller drafts the answer with the assistant and sends it, the buyer
accepts; refusals are the API's, shown as pages."""

from __future__ import annotations

import asyncio
import html
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ramparts.crypto.kms import Kms
from ramparts.db.engine import Database, DatabaseUrls
from ramparts.payments import records
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from tests.identity.helpers import Account, provision
from tests.web.sessions_helpers import page_csrf, sign_in_web, web_app

ROWS = {
    "item-1-description": "Ergonomic chair",
    "item-1-quantity": "4",
    "item-1-price": "12.50",
    "item-2-description": "Delivery",
    "item-2-quantity": "1",
    "item-2-price": "0.99",
}


Browser = Callable[[Account], tuple[httpx.Client, str]]


def api(client: httpx.Client, csrf: str, path: str) -> Any:
    """What the API answers the signed-in user (through the pages' door)."""
    answer = client.get(f"/app/api/{path}", headers={"x-csrf-token": csrf})
    assert answer.status_code == 200, answer.text
    return answer.json()


def request_quote(client: httpx.Client, csrf: str, title: str) -> str:
    """A buyer's request through the form; its id, from where the form leads."""
    sent = client.post(
        "/app/quotes/new",
        data={"csrf": csrf, "title": title, "currency": "EUR", **ROWS},
    )
    assert sent.status_code == 303, sent.text
    found = re.fullmatch(r"/app/quotes/([0-9a-f-]{36})\?notice=created", sent.headers["location"])
    assert found, sent.headers["location"]
    return found.group(1)


def textarea(page: httpx.Response, name: str) -> str:
    found = re.search(rf'<textarea[^>]*name="{name}"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert found, f"no {name} field"
    return html.unescape(found.group(1))


@pytest.fixture
def browser(
    serve_app: Callable[..., httpx.Client], urls: DatabaseUrls, kms: Kms
) -> Iterator[Browser]:
    """Browsers of their own on one live server, each signed in as an account, with its CSRF
    token."""
    server = web_app(serve_app, urls, kms)
    opened: list[httpx.Client] = []

    def signed_in(account: Account) -> tuple[httpx.Client, str]:
        client = httpx.Client(base_url=server.base_url, timeout=server.timeout)
        opened.append(client)
        home = sign_in_web(client, account)
        assert home.status_code == 200, home.text
        return client, page_csrf(home)

    yield signed_in
    for client in opened:
        client.close()


@pytest.mark.parametrize(
    ("price", "message"),
    [
        ("12,5", "write decimals with a dot, for example 12.50"),
        ("-1", "is negative"),
        ("1e3", "is not a price"),
        ("12.505", "is not a price"),
    ],
)
def test_a_bad_price_is_refused_with_its_message_and_nothing_is_created(
    browser: Browser, urls: DatabaseUrls, kms: Kms, price: str, message: str
) -> None:
    buyer, csrf = browser(provision(urls, kms, roles=(BUYER,)))
    refused = buyer.post(
        "/app/quotes/new",
        data={"csrf": csrf, "title": "Chairs", "currency": "EUR", **ROWS, "item-2-price": price},
    )
    assert refused.status_code == 422
    shown = html.unescape(refused.text)
    assert f"Item 2: “{price}”" in shown
    assert message in shown
    assert 'value="Chairs"' in refused.text  # what the person typed is kept
    assert f'value="{html.escape(price)}"' in refused.text
    assert 'aria-describedby="item-2-price-error"' in refused.text
    assert api(buyer, csrf, "quotes")["items"] == []  # nothing created


def test_a_buyer_requests_a_quote_through_the_form(
    browser: Browser, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer, csrf = browser(provision(urls, kms, roles=(BUYER,)))
    empty = buyer.get("/app/quotes")
    assert empty.status_code == 200
    assert "You have not asked for a quote yet" in empty.text
    assert 'href="/app/quotes/new"' in empty.text
    form = buyer.get("/app/quotes/new")
    assert form.status_code == 200
    for row in range(1, 6):
        assert f'<label class="visually-hidden" for="item-{row}-price">' in form.text
    nothing = buyer.post("/app/quotes/new", data={"csrf": csrf, "title": "", "currency": "EUR"})
    assert nothing.status_code == 422
    assert "Give the request a title." in nothing.text
    assert "Add at least one item." in nothing.text
    quote = request_quote(buyer, csrf, "Office chairs")
    created = api(buyer, csrf, f"quotes/{quote}")
    assert (created["title"], created["currency"], created["status"]) == (
        "Office chairs",
        "EUR",
        "draft",
    )
    assert created["items"] == [
        {"description": "Ergonomic chair", "quantity": 4, "unit_price_minor": 1250},
        {"description": "Delivery", "quantity": 1, "unit_price_minor": 99},
    ]
    page = buyer.get(f"/app/quotes/{quote}?notice=created")
    assert "Your request was created." in page.text
    assert "50.99 EUR" in page.text
    assert "Requested" in page.text
    listed = buyer.get("/app/quotes")
    assert f'href="/app/quotes/{quote}">Office chairs</a>' in listed.text
    assert "50.99 EUR" in listed.text
    assert "Office chairs" not in buyer.get("/app/quotes?status=accepted").text


def test_a_seller_drafts_with_the_assistant_sends_an_edited_proposal_and_the_buyer_accepts(
    browser: Browser, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer_account = provision(urls, kms, roles=(BUYER,))
    seller_account = provision(urls, kms, roles=(SELLER,), tenant=buyer_account.tenant)
    seller, seller_csrf = browser(seller_account)
    assert "No open requests" in seller.get("/app/quotes").text
    buyer, buyer_csrf = browser(buyer_account)
    quote = request_quote(buyer, buyer_csrf, "Office chairs")
    assert "Accept" not in buyer.get(f"/app/quotes/{quote}").text  # nothing to accept yet

    assert f'href="/app/quotes/{quote}"' in seller.get("/app/quotes").text
    assert "Draft with the assistant" in seller.get(f"/app/quotes/{quote}").text
    drafted = seller.post(f"/app/quotes/{quote}/draft", data={"csrf": seller_csrf})
    assert drafted.status_code == 200, drafted.text
    draft = textarea(drafted, "proposal")
    assert draft.startswith("Proposal for: Office chairs")
    assert "4 x Ergonomic chair at 12.50 EUR" in draft
    assert "<code>draft_proposal</code>" in drafted.text
    assert ">executed<" in drafted.text
    assert api(seller, seller_csrf, f"quotes/{quote}")["status"] == "draft"  # only drafted

    blank = seller.post(f"/app/quotes/{quote}/submit", data={"csrf": seller_csrf, "proposal": " "})
    assert blank.status_code == 422
    assert "Write the proposal" in blank.text
    edited = draft.replace("Valid for 30 days", "Valid for 14 days") + "\r\nKind regards"
    sent = seller.post(
        f"/app/quotes/{quote}/submit", data={"csrf": seller_csrf, "proposal": edited}
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"] == f"/app/quotes/{quote}?notice=sent"
    answered = api(seller, seller_csrf, f"quotes/{quote}")
    assert answered["status"] == "submitted"
    assert answered["seller_id"] == str(seller_account.user_id)
    assert answered["proposal"] == edited.replace("\r\n", "\n")
    assert "Valid for 14 days" in answered["proposal"]

    offered = buyer.get(f"/app/quotes/{quote}")
    assert "Valid for 14 days" in offered.text
    assert "Proposal sent" in offered.text
    assert f'action="/app/quotes/{quote}/accept"' in offered.text
    accepted = buyer.post(f"/app/quotes/{quote}/accept", data={"csrf": buyer_csrf})
    assert accepted.status_code == 303, accepted.text
    assert api(buyer, buyer_csrf, f"quotes/{quote}")["status"] == "accepted"
    after = buyer.get(accepted.headers["location"])
    assert "You accepted the proposal." in after.text
    assert "Finance has not asked for the deposit yet" in after.text
    assert (
        'id="deposit-title"' not in seller.get(f"/app/quotes/{quote}").text
    )  # payments are not the seller's to read

    payment = _deposit_asked(urls, buyer_account, quote)
    due = buyer.get(f"/app/quotes/{quote}")
    assert "Waiting for payment" in due.text
    assert "20.00 EUR" in due.text
    assert f'href="/pay/{payment}">Pay the deposit</a>' in due.text
    finance, _ = browser(provision(urls, kms, roles=(FINANCE,), tenant=buyer_account.tenant))
    seen = finance.get(f"/app/quotes/{quote}")
    assert "Waiting for payment" in seen.text
    assert "Pay the deposit" not in seen.text  # the payer's to do


def test_a_buyer_gets_the_403_page_for_an_action_that_is_not_theirs(
    browser: Browser, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer, csrf = browser(provision(urls, kms, roles=(BUYER,)))
    quote = request_quote(buyer, csrf, "Office chairs")
    refused = buyer.post(
        f"/app/quotes/{quote}/submit", data={"csrf": csrf, "proposal": "I answer myself"}
    )
    assert refused.status_code == 403
    assert "You do not have permission" in refused.text
    assert "This needs the permission Quotes::quote.submit, which you do not have." in refused.text
    assert api(buyer, csrf, f"quotes/{quote}")["proposal"] is None  # nothing changed
    early = buyer.post(f"/app/quotes/{quote}/accept", data={"csrf": csrf})
    assert early.status_code == 409  # the API's own refusal: not yet answered
    forged = buyer.post(f"/app/quotes/{quote}/accept", data={"csrf": "forged"})
    assert forged.status_code == 403
    assert "This form has expired" in forged.text


def test_another_tenants_quote_is_the_404_page(
    browser: Browser, urls: DatabaseUrls, kms: Kms
) -> None:
    owner, owner_csrf = browser(provision(urls, kms, roles=(BUYER,)))
    quote = request_quote(owner, owner_csrf, "Office chairs")
    stranger, csrf = browser(provision(urls, kms, roles=(BUYER,)))
    for answer in (
        stranger.get(f"/app/quotes/{quote}"),
        stranger.post(f"/app/quotes/{quote}/accept", data={"csrf": csrf}),
    ):
        assert answer.status_code == 404
        assert "There is nothing here, or it is not yours to see." in answer.text
        assert "Office chairs" not in answer.text
    assert stranger.get(f"/app/quotes/{uuid.uuid4()}").status_code == 404


def _deposit_asked(urls: DatabaseUrls, buyer: Account, quote: str) -> uuid.UUID:
    """A deposit Finance has asked for (the payment row the deposit route writes first),
    waiting for the buyer to pay."""

    async def run() -> uuid.UUID:
        database = Database(urls.app, pool_size=1)
        try:
            async with database.tenant_session(buyer.tenant_id) as session:
                payment = await records.create(
                    session,
                    app="quotes",
                    subject=quote,
                    payer_id=buyer.user_id,
                    requested_by=buyer.user_id,
                    amount=2_000,
                    currency="eur",
                )
                return payment.id
        finally:
            await database.dispose()

    return asyncio.run(run())
