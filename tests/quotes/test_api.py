"""The quotes API as logged-in users of two tenants: roles are enforced by Cedar, and tenant A
can do nothing to tenant B's quotes by any route (IDOR, guessed ids, filters, bulk), with
nothing changed in B and every attempt in A's audit trail."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import psycopg
import pytest

from ramparts.audit.events import Action
from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from tests.audit.trail import head, recorded
from tests.identity.helpers import Account, bearer, obtain_tokens, provision

NEW_QUOTE = {
    "title": "Office chairs",
    "currency": "EUR",
    "items": [{"description": "Chair", "quantity": 4, "unit_price_minor": 12_500}],
}


@dataclass(frozen=True)
class Person:
    account: Account
    headers: dict[str, str]


@pytest.fixture(scope="module")
def server(serve_module_app: Callable[..., httpx.Client]) -> httpx.Client:
    return serve_module_app()


def person(
    server: httpx.Client,
    urls: DatabaseUrls,
    kms: Kms,
    role: str,
    tenant: str | None = None,
) -> Person:
    account = provision(urls, kms, roles=(role,), tenant=tenant)
    return Person(account, bearer(obtain_tokens(server, account)["access_token"]))


def create(server: httpx.Client, buyer: Person, **change: Any) -> dict[str, Any]:
    response = server.post("/api/quotes", json={**NEW_QUOTE, **change}, headers=buyer.headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_quote_flow_follows_the_roles(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer = person(server, urls, kms, BUYER)
    seller = person(server, urls, kms, SELLER, buyer.account.tenant)
    finance = person(server, urls, kms, FINANCE, buyer.account.tenant)

    quote = create(server, buyer)
    assert quote["total_minor"] == 50_000
    assert server.post("/api/quotes", json=NEW_QUOTE, headers=seller.headers).status_code == 403
    assert (
        server.post(f"/api/quotes/{quote['id']}/submit", headers=buyer.headers).status_code == 403
    )
    submitted = server.post(f"/api/quotes/{quote['id']}/submit", headers=seller.headers)
    assert submitted.json()["status"] == "submitted"
    assert submitted.json()["seller_id"] == str(seller.account.user_id)
    assert (
        server.post(f"/api/quotes/{quote['id']}/accept", headers=seller.headers).status_code == 403
    )
    assert (
        server.post(f"/api/quotes/{quote['id']}/accept", headers=finance.headers).status_code == 403
    )
    accepted = server.post(f"/api/quotes/{quote['id']}/accept", headers=buyer.headers)
    assert accepted.json()["status"] == "accepted"
    # Finance reads but does not edit; an accepted quote is no longer a draft.
    assert server.get(f"/api/quotes/{quote['id']}", headers=finance.headers).status_code == 200
    assert (
        server.patch(
            f"/api/quotes/{quote['id']}", json={"title": "x"}, headers=finance.headers
        ).status_code
        == 403
    )
    conflict = server.patch(
        f"/api/quotes/{quote['id']}", json={"title": "x"}, headers=buyer.headers
    )
    assert conflict.status_code == 409

    decisions = recorded(urls, buyer.account.tenant_id, Action.AUTHORIZATION_DECIDED)
    refused = [d for d in decisions if d["decision"] == "deny"]
    assert {d["details"]["action"] for d in refused} >= {
        "Quotes::quote.create",
        "Quotes::quote.submit",
        "Quotes::quote.accept",
        "Quotes::quote.update",
    }


def test_the_seller_sends_a_proposal_with_the_answer_or_none(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer = person(server, urls, kms, BUYER)
    seller = person(server, urls, kms, SELLER, buyer.account.tenant)
    quote, bare = create(server, buyer), create(server, buyer)
    assert quote["proposal"] is None
    submit = f"/api/quotes/{quote['id']}/submit"
    for body, problem in [
        ({"proposal": "x" * 10_001}, "at most 10000"),
        ({"proposal": ""}, "at least 1"),
        ({"proposal": 12}, "string"),
        ({"proposal": "ok", "price": 1}, "not an accepted field"),
    ]:
        refused = server.post(submit, json=body, headers=seller.headers)
        assert refused.status_code == 422, refused.text
        assert problem in refused.text.lower()
    assert server.get(f"/api/quotes/{quote['id']}", headers=buyer.headers).json()["status"] == (
        "draft"
    )  # nothing was sent
    text = "We offer 4 chairs.\nDelivery included." + "!" * 9_950
    sent = server.post(submit, json={"proposal": text}, headers=seller.headers)
    assert sent.status_code == 200, sent.text
    assert (sent.json()["status"], sent.json()["proposal"]) == ("submitted", text)
    shown = server.get(f"/api/quotes/{quote['id']}", headers=buyer.headers).json()
    assert shown["proposal"] == text
    # Without a body, as before: answered, with no proposal text.
    plain = server.post(f"/api/quotes/{bare['id']}/submit", headers=seller.headers)
    assert plain.status_code == 200, plain.text
    assert (plain.json()["status"], plain.json()["proposal"]) == ("submitted", None)


def test_restricted_quotes_need_webauthn(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    buyer = person(server, urls, kms, BUYER)
    # Creating restricted data needs WebAuthn as much as reading it.
    refused_create = server.post(
        "/api/quotes", json={**NEW_QUOTE, "sensitivity": "restricted"}, headers=buyer.headers
    )
    assert refused_create.status_code == 403
    secret, plain = create(server, buyer), create(server, buyer)
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        owner.execute("UPDATE quotes SET sensitivity = 'restricted' WHERE id = %s", (secret["id"],))
    # This buyer signed in with a password and TOTP: not enough for restricted data.
    refused = server.get(f"/api/quotes/{secret['id']}", headers=buyer.headers)
    assert refused.status_code == 403
    listed = server.get("/api/quotes", headers=buyer.headers).json()["items"]
    assert [q["id"] for q in listed] == [plain["id"]]
    [withheld] = [
        d
        for d in recorded(urls, buyer.account.tenant_id, Action.AUTHORIZATION_DECIDED)
        if d["details"].get("withheld")
    ]
    assert withheld["details"]["withheld"] == [secret["id"]]


def test_tenant_a_can_do_nothing_to_tenant_bs_quotes(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    b_buyer = person(server, urls, kms, BUYER)
    theirs = [create(server, b_buyer)["id"] for _ in range(3)]
    a_buyer = person(server, urls, kms, BUYER)
    a_seller = person(server, urls, kms, SELLER, a_buyer.account.tenant)
    mine = create(server, a_buyer)["id"]
    before = b_state(urls, b_buyer.account.tenant_id)
    a_trail = head(urls, a_buyer.account.tenant_id)

    guessed = str(uuid.uuid4())
    attempts = 0
    for target in [*theirs, guessed]:
        for method, path, who, body in [
            ("GET", f"/api/quotes/{target}", a_buyer, None),
            ("PATCH", f"/api/quotes/{target}", a_buyer, {"title": "mine now"}),
            ("DELETE", f"/api/quotes/{target}", a_buyer, None),
            ("POST", f"/api/quotes/{target}/accept", a_buyer, None),
            ("POST", f"/api/quotes/{target}/submit", a_seller, None),
        ]:
            response = server.request(method, path, json=body, headers=who.headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            attempts += 1
    # Query filters only ever search the caller's own tenant.
    filtered = server.get(
        "/api/quotes", params={"ids": ",".join([*theirs, mine])}, headers=a_buyer.headers
    )
    assert [q["id"] for q in filtered.json()["items"]] == [mine]
    assert all(
        q["id"] == mine
        for q in server.get(
            "/api/quotes", params={"status": "draft"}, headers=a_buyer.headers
        ).json()["items"]
    )
    # Bulk endpoints decide id by id.
    bulk = server.post("/api/quotes/bulk-delete", json={"ids": theirs}, headers=a_buyer.headers)
    assert bulk.json() == {"deleted": [], "refused": theirs}
    attempts += len(theirs)

    assert b_state(urls, b_buyer.account.tenant_id) == before  # nothing changed in B
    denials = [
        d
        for d in recorded(
            urls, a_buyer.account.tenant_id, Action.AUTHORIZATION_DECIDED, after=a_trail
        )
        if d["decision"] == "deny"
    ]
    assert len(denials) == attempts
    assert all(p.startswith("tenant-boundary") for d in denials for p in d["policy_ids"])
    assert all(d["policy_ids"] for d in denials)
    # B's trail says nothing of A's attempts: evidence stays with the attacker's tenant.
    assert not [
        d
        for d in recorded(urls, b_buyer.account.tenant_id, Action.AUTHORIZATION_DECIDED)
        if d["actor"]["tenant"] == str(a_buyer.account.tenant_id)
    ]


def b_state(urls: DatabaseUrls, tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(urls.owner)) as owner:
        return owner.execute(
            "SELECT id, title, status, updated_at, (SELECT count(*) FROM quote_items i "
            "WHERE i.tenant_id = q.tenant_id AND i.quote_id = q.id) FROM quotes q "
            "WHERE tenant_id = %s ORDER BY id",
            (tenant,),
        ).fetchall()


@pytest.mark.parametrize(
    "body",
    [
        {**NEW_QUOTE, "currency": "euro"},
        {**NEW_QUOTE, "items": []},
        {**NEW_QUOTE, "owner": "someone"},
        {**NEW_QUOTE, "sensitivity": "secret"},
        {**NEW_QUOTE, "items": [{"description": "x", "quantity": "4", "unit_price_minor": 1}]},
    ],
)
def test_bad_quotes_are_precise_problems(
    server: httpx.Client, urls: DatabaseUrls, kms: Kms, body: dict[str, Any]
) -> None:
    buyer = person(server, urls, kms, BUYER)
    response = server.post("/api/quotes", json=body, headers=buyer.headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_rls_still_holds_when_the_policies_fail_open(
    serve_app: Callable[..., httpx.Client],
    urls: DatabaseUrls,
    kms: Kms,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second wall: with a policy set that permits everything (a broken policy change),
    PostgreSQL row-level security alone still keeps tenant B's quotes from tenant A."""
    from ramparts.apps import policy_fragments  # noqa: PLC0415
    from ramparts.policy.compose import composition  # noqa: PLC0415
    from ramparts.quotes.app import QUOTES  # noqa: PLC0415
    from ramparts.web import app as web_app  # noqa: PLC0415

    honest = serve_app()
    b_buyer = person(honest, urls, kms, BUYER)
    theirs = create(honest, b_buyer)["id"]
    before = b_state(urls, b_buyer.account.tenant_id)

    composed = composition(policy_fragments([QUOTES]))
    everything = '@id("everything")\npermit (principal, action, resource);\n'
    open_door = replace(composed, policies=everything).engine()
    monkeypatch.setattr(web_app, "policy_engine", lambda apps: open_door)
    broken = serve_app()
    a_buyer = person(broken, urls, kms, BUYER)
    for method, path in [
        ("GET", f"/api/quotes/{theirs}"),
        ("DELETE", f"/api/quotes/{theirs}"),
        ("POST", f"/api/quotes/{theirs}/accept"),
    ]:
        assert broken.request(method, path, headers=a_buyer.headers).status_code == 404
    listed = broken.get("/api/quotes", params={"ids": theirs}, headers=a_buyer.headers)
    assert listed.json()["items"] == []
    bulk = broken.post("/api/quotes/bulk-delete", json={"ids": [theirs]}, headers=a_buyer.headers)
    assert bulk.json()["deleted"] == []
    assert b_state(urls, b_buyer.account.tenant_id) == before
