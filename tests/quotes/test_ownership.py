"""Ownership inside a tenant, over HTTP: two buyers and two sellers of one tenant, each acting
only on their own quotes by every route (read, update, delete, bulk delete, submit, accept,
list), through the assistant's tools too, with nothing changed and every refusal on record."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from tests.audit.trail import head, recorded
from tests.quotes.test_api import NEW_QUOTE, Person, b_state, create, person


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


def call(server: httpx.Client, who: Person, method: str, path: str, **kw: Any) -> httpx.Response:
    return server.request(method, path, headers=who.headers, **kw)


def listed(server: httpx.Client, who: Person, **params: str) -> list[str]:
    response = server.get("/api/quotes", params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return [q["id"] for q in response.json()["items"]]


def submit(server: httpx.Client, seller: Person, quote: str) -> httpx.Response:
    return call(server, seller, "POST", f"/api/quotes/{quote}/submit")


def test_a_buyer_acts_only_on_the_quotes_they_asked_for(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer = person(server, urls, kms, BUYER)
    tenant = buyer.account.tenant
    buyer2 = person(server, urls, kms, BUYER, tenant)
    seller = person(server, urls, kms, SELLER, tenant)
    draft, offered = create(server, buyer)["id"], create(server, buyer)["id"]
    assert submit(server, seller, offered).status_code == 200
    own = create(server, buyer2)["id"]

    def buyers_quotes() -> list[tuple[Any, ...]]:
        rows = b_state(urls, buyer.account.tenant_id)
        return [row for row in rows if str(row[0]) in {draft, offered}]

    before = buyers_quotes()
    assert len(before) == 2
    trail = head(urls, buyer.account.tenant_id)

    attempts = [
        ("GET", f"/api/quotes/{draft}", None),
        ("PATCH", f"/api/quotes/{draft}", {"title": "mine now"}),
        ("PATCH", f"/api/quotes/{draft}", {"description": "x"}),
        ("DELETE", f"/api/quotes/{draft}", None),
        ("POST", f"/api/quotes/{offered}/accept", None),
        ("GET", f"/api/quotes/{offered}", None),
        ("POST", f"/api/quotes/{draft}/submit", None),  # not a seller either
    ]
    for method, path, body in attempts:
        response = call(server, buyer2, method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    bulk = call(server, buyer2, "POST", "/api/quotes/bulk-delete", json={"ids": [draft, own]})
    assert bulk.json() == {"deleted": [own], "refused": [draft]}
    # Listings, with and without filters, hold only buyer2's own quotes.
    assert listed(server, buyer2) == []
    assert listed(server, buyer2, ids=f"{draft},{offered}") == []
    assert listed(server, buyer2, status="submitted") == []
    assert buyers_quotes() == before  # nothing of the buyer's changed

    denied = [
        d
        for d in recorded(urls, buyer.account.tenant_id, Action.AUTHORIZATION_DECIDED, after=trail)
        if d["decision"] == "deny"
    ]
    assert {(d["resource"]["id"], d["details"]["action"]) for d in denied} >= {
        (draft, "Quotes::quote.read"),
        (draft, "Quotes::quote.update"),
        (draft, "Quotes::quote.delete"),
        (offered, "Quotes::quote.accept"),
        (offered, "Quotes::quote.read"),
        ("*", "Quotes::quote.submit"),  # no buyer may submit any quote: refused before the lookup
    }
    assert all(d["actor"]["id"] == str(buyer2.account.user_id) for d in denied)

    # The buyer who asked still does everything.
    assert listed(server, buyer) == [draft, offered]
    assert call(server, buyer, "GET", f"/api/quotes/{draft}").status_code == 200
    changed = call(server, buyer, "PATCH", f"/api/quotes/{draft}", json={"title": "Desks"})
    assert changed.json()["title"] == "Desks"
    assert call(server, buyer, "POST", f"/api/quotes/{offered}/accept").status_code == 200
    assert call(server, buyer, "DELETE", f"/api/quotes/{draft}").status_code == 204


def test_sellers_answer_open_requests_and_their_own(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer = person(server, urls, kms, BUYER)
    tenant = buyer.account.tenant
    seller, seller2 = (person(server, urls, kms, SELLER, tenant) for _ in range(2))
    finance = person(server, urls, kms, FINANCE, tenant)
    open_ = create(server, buyer)["id"]
    for_seller2 = create(server, buyer, seller_id=str(seller2.account.user_id))
    assert for_seller2["seller_id"] == str(seller2.account.user_id)
    assigned = for_seller2["id"]

    # Open requests are every seller's; one assigned to another seller is not.
    assert listed(server, seller) == [open_]
    assert listed(server, seller2) == [open_, assigned]
    assert call(server, seller, "GET", f"/api/quotes/{assigned}").status_code == 403
    assert submit(server, seller, assigned).status_code == 403
    assert listed(server, seller, ids=assigned) == []
    # The first seller to answer an open request takes it.
    assert submit(server, seller, open_).json()["seller_id"] == str(seller.account.user_id)
    assert call(server, seller2, "GET", f"/api/quotes/{open_}").status_code == 403
    assert listed(server, seller2) == [assigned]
    assert submit(server, seller2, assigned).json()["status"] == "submitted"
    assert listed(server, seller) == [open_]
    # Sellers never edit, delete or accept, even what they answer.
    for method, path in [
        ("PATCH", f"/api/quotes/{open_}"),
        ("DELETE", f"/api/quotes/{open_}"),
        ("POST", f"/api/quotes/{open_}/accept"),
    ]:
        body = {"title": "x"} if method == "PATCH" else None
        response = call(server, seller, method, path, json=body)
        assert response.status_code == 403, (method, path)
    # Finance reads every quote of its tenant, as before.
    assert listed(server, finance) == [open_, assigned]


@pytest.mark.parametrize("who", ["buyer", "finance", "other-tenant-seller", "nobody"])
def test_a_quote_is_assigned_only_to_a_seller_of_the_tenant(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, who: str
) -> None:
    buyer = person(server, urls, kms, BUYER)
    roles = {"buyer": BUYER, "finance": FINANCE}
    if who in roles:
        seller_id = str(person(server, urls, kms, roles[who], buyer.account.tenant).account.user_id)
    elif who == "other-tenant-seller":
        seller_id = str(person(server, urls, kms, SELLER).account.user_id)
    else:
        seller_id = str(uuid.uuid4())
    response = server.post(
        "/api/quotes", json={**NEW_QUOTE, "seller_id": seller_id}, headers=buyer.headers
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "seller_id is not a seller of your organisation"
    assert listed(server, buyer) == []


def test_a_buyers_listing_is_full_of_their_own_quotes(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """Another buyer's many quotes never crowd out one's own (the listing's limit is 100)."""
    buyer = person(server, urls, kms, BUYER)
    buyer2 = person(server, urls, kms, BUYER, buyer.account.tenant)
    mine = create(server, buyer2)["id"]
    with psycopg.connect(libpq(urls.owner)) as owner:
        owner.execute(
            "INSERT INTO quotes (tenant_id, buyer_id, title, currency, created_at) "
            "SELECT %s, %s, 'Older request ' || n, 'EUR', now() - interval '1 day' "
            "FROM generate_series(1, 120) AS n",
            (buyer.account.tenant_id, buyer.account.user_id),
        )
    assert listed(server, buyer2) == [mine]
    assert len(listed(server, buyer)) == 100


def test_the_assistants_tools_keep_to_the_same_owners(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    """The offline model calls the tools; Cedar judges each call on the real quote."""
    buyer = person(server, urls, kms, BUYER)
    tenant = buyer.account.tenant
    buyer2, seller, seller2 = (
        person(server, urls, kms, role, tenant) for role in (BUYER, SELLER, SELLER)
    )
    theirs = create(server, buyer, title="Chairs for team one")["id"]
    assigned = create(server, buyer, title="Lamps", seller_id=str(seller.account.user_id))["id"]
    mine = create(server, buyer2, title="Desks for team two")["id"]

    def ask(who: Person, message: str) -> dict[str, Any]:
        answer = server.post("/api/assistant", json={"message": message}, headers=who.headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def outcome(who: Person, message: str) -> tuple[str, str]:
        [action] = ask(who, message)["actions"]
        return action["tool"], action["status"]

    assert "get_quote" in ask(buyer2, "which tools can you use?")["reply"]  # on their own
    assert ask(buyer2, "list my quotes")["reply"] == "Your quotes:\n- Desks for team two (draft)"
    assert outcome(buyer2, f"what does quote {mine} say?") == ("get_quote", "executed")
    assert outcome(buyer2, f"what does quote {theirs} say?") == ("get_quote", "refused")
    # Sellers: open requests are theirs to read and answer, another seller's are not.
    assert ask(seller2, "list my quotes")["reply"] == (
        "Your quotes:\n- Chairs for team one (draft)\n- Desks for team two (draft)"
    )
    assert outcome(seller2, f"what does quote {assigned} say?") == ("get_quote", "refused")
    drafted = f"please draft a proposal for quote {assigned}"
    assert outcome(seller2, drafted) == ("draft_proposal", "refused")
    assert outcome(seller, drafted) == ("draft_proposal", "executed")
    assert outcome(seller2, f"please draft a proposal for quote {theirs}") == (
        "draft_proposal",
        "executed",
    )
