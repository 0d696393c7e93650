"""A quote's deposit over real HTTP, with real PostgreSQL and the real localstripe process:
Finance charges it (idempotently), the buyer reads and pays it, nobody else can."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
import pytest
import stripe
from pydantic import SecretStr

from ramparts.crypto.kms import Kms
from ramparts.db.engine import DatabaseUrls, libpq
from ramparts.payments.psp import API_KEY_SECRET, TENANT_METADATA_KEY
from ramparts.payments.sandbox import SANDBOX_API_KEY, SANDBOX_PUBLISHABLE_KEY, Sandbox
from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from tests.conftest import cli_kms, free_port
from tests.payments.helpers import DECLINED, VISA, VISA_3DS, card_payment_method
from tests.quotes.test_api import Person, create, person
from tests.test_cli import owner_env, running

#: Shared rate limits for `serve --workers 2` (a database of its own on the local Redis).
REDIS = "redis://127.0.0.1:6379/11"

PAYMENT_KEYS = {
    "id",
    "quote_id",
    "status",
    "amount",
    "currency",
    "psp_id",
    "checkout_url",
    "created_at",
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as running:
        yield running


@pytest.fixture(scope="module")
def psp_server(
    serve_module_app: Callable[..., httpx.Client], kms: Kms, sandbox: Sandbox
) -> httpx.Client:
    """The app with the sandbox as its PSP (the KMS holds the sandbox's API key)."""
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    return serve_module_app(psp_api_base=sandbox.api_base)


@pytest.fixture(scope="module")
def payer_browser(sandbox: Sandbox) -> stripe.StripeClient:
    """What the buyer's browser does through Stripe.js: talk to the PSP directly."""
    return stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": sandbox.api_base})


@dataclass(frozen=True)
class Deal:
    """An accepted quote and the people of its tenant."""

    quote: dict[str, Any]
    buyer: Person
    seller: Person
    finance: Person

    @property
    def tenant_id(self) -> uuid.UUID:
        return self.buyer.account.tenant_id


def deal(server: httpx.Client, urls: DatabaseUrls, kms: Kms, *, accept: bool = True) -> Deal:
    buyer = person(server, urls, kms, BUYER)
    tenant = buyer.account.tenant
    seller = person(server, urls, kms, SELLER, tenant)
    finance = person(server, urls, kms, FINANCE, tenant)
    quote = create(server, buyer)  # 4 chairs at 125.00 EUR: 500.00
    assert server.post(f"/api/quotes/{quote['id']}/submit", headers=seller.headers).is_success
    if accept:
        accepted = server.post(f"/api/quotes/{quote['id']}/accept", headers=buyer.headers)
        quote = accepted.json()
        assert quote["status"] == "accepted"
    return Deal(quote, buyer, seller, finance)


def another_quote(server: httpx.Client, found: Deal) -> dict[str, Any]:
    """Another accepted quote of the same buyer and seller."""
    quote = create(server, found.buyer)
    server.post(f"/api/quotes/{quote['id']}/submit", headers=found.seller.headers)
    accepted = server.post(f"/api/quotes/{quote['id']}/accept", headers=found.buyer.headers)
    body: dict[str, Any] = accepted.json()
    return body


def charge(
    server: httpx.Client,
    who: Person,
    quote_id: str,
    body: Any = None,
    *,
    key: str | None = "",
) -> httpx.Response:
    headers = dict(who.headers)
    if key is not None:
        headers["Idempotency-Key"] = key or f"deposit-{uuid.uuid4()}"
    return server.post(f"/api/quotes/{quote_id}/deposit", json=body, headers=headers)


def intents_of(payer_browser: stripe.StripeClient, tenant: uuid.UUID) -> list[Any]:
    """Every PaymentIntent at the sandbox made for `tenant`."""
    listed = payer_browser.v1.payment_intents.list(params={"limit": 100})
    return [
        intent
        for intent in listed.auto_paging_iter()
        if (intent.metadata.to_dict() if intent.metadata else {}).get(TENANT_METADATA_KEY)
        == str(tenant)
    ]


def attempts_of(urls: DatabaseUrls, tenant: uuid.UUID) -> list[tuple[Any, ...]]:
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        return owner.execute(
            "SELECT outcome, decline_code FROM payment_attempts WHERE tenant_id = %s "
            "ORDER BY created_at",
            (tenant,),
        ).fetchall()


def test_finance_charges_the_deposit_once_whatever_the_repeats(
    psp_server: httpx.Client, urls: DatabaseUrls, kms: Kms, payer_browser: stripe.StripeClient
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    quote_id = found.quote["id"]

    charged = charge(server, found.finance, quote_id, key="deposit-1")

    assert charged.status_code == 201, charged.text
    payment = charged.json()
    assert set(payment) == PAYMENT_KEYS
    assert payment["quote_id"] == quote_id
    # The default: 30 % of the 500.00 EUR total, in minor units, in Stripe's lowercase.
    assert (payment["amount"], payment["currency"]) == (15_000, "eur")
    assert payment["status"] == "requires_payment_method"
    assert payment["checkout_url"] == f"{server.base_url}/pay/{payment['id']}"
    [intent] = intents_of(payer_browser, found.tenant_id)
    assert intent.id == payment["psp_id"]
    assert (intent.amount, intent.currency, intent.status) == (15_000, "eur", payment["status"])
    assert intent.metadata["ramparts_payment"] == payment["id"]

    # The same request again: the same status and bytes; nothing new at the PSP.
    replayed = charge(server, found.finance, quote_id, key="deposit-1")
    assert (replayed.status_code, replayed.content) == (201, charged.content)
    # The same key for another request: refused.
    reused = charge(server, found.finance, quote_id, {"amount": 100}, key="deposit-1")
    assert reused.status_code == 422
    assert reused.json()["type"] == "urn:ramparts:problem:idempotency-key-reused"
    missing = charge(server, found.finance, quote_id, key=None)
    assert missing.status_code == 400
    assert missing.json()["type"] == "urn:ramparts:problem:idempotency-key-required"
    # Another key: a second deposit while the first is live is refused, naming it.
    second = charge(server, found.finance, quote_id)
    assert second.status_code == 409
    assert second.json()["type"] == "urn:ramparts:problem:payment-exists"
    assert second.json()["payment_id"] == payment["id"]
    assert len(intents_of(payer_browser, found.tenant_id)) == 1

    # Read back: the same object.
    listed = server.get(
        "/api/payments", params={"quote_id": quote_id}, headers=found.finance.headers
    )
    assert listed.json() == {"items": [payment]}
    read = server.get(f"/api/payments/{payment['id']}", headers=found.finance.headers)
    assert read.json() == payment


def test_the_amount_is_the_deposit_or_a_valid_one(
    psp_server: httpx.Client, urls: DatabaseUrls, kms: Kms, payer_browser: stripe.StripeClient
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    quote_id = found.quote["id"]
    for body, kind in [
        ({"amount": 0}, "invalid-request"),
        ({"amount": 50_001}, "invalid-request"),  # more than the quote's total
        ({"amount": -5}, "invalid-request"),
        ({"amount": "100"}, None),  # validated at the edge: a 422 listing the field
        ({"amount": True}, None),
        ({"amount": 1.5}, None),
        ({"amount": 100, "currency": "usd"}, None),
    ]:
        refused = charge(server, found.finance, quote_id, body)
        assert refused.status_code == 422, (body, refused.text)
        if kind is not None:
            assert refused.json()["type"] == f"urn:ramparts:problem:{kind}"
            assert "50000" in refused.json()["detail"]
    assert intents_of(payer_browser, found.tenant_id) == []

    whole = charge(server, found.finance, quote_id, {"amount": 50_000})
    assert whole.status_code == 201, whole.text
    assert whole.json()["amount"] == 50_000
    other = another_quote(server, found)
    empty_body = charge(server, found.finance, other["id"], {})
    assert empty_body.json()["amount"] == 15_000


def test_only_finance_charges_an_accepted_quote_of_its_own_tenant(
    psp_server: httpx.Client, urls: DatabaseUrls, kms: Kms, payer_browser: stripe.StripeClient
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    quote_id = found.quote["id"]
    for who in (found.buyer, found.seller):
        refused = charge(server, who, quote_id)
        assert refused.status_code == 403, refused.text
    elsewhere = person(server, urls, kms, FINANCE)
    assert charge(server, elsewhere, quote_id).status_code == 404
    assert charge(server, found.finance, str(uuid.uuid4())).status_code == 404
    submitted = deal(server, urls, kms, accept=False)
    not_accepted = charge(server, submitted.finance, submitted.quote["id"])
    assert not_accepted.status_code == 409
    assert not_accepted.json()["type"] == "urn:ramparts:problem:wrong-status"
    draft = create(server, found.buyer)
    assert charge(server, found.finance, draft["id"]).status_code == 409
    assert intents_of(payer_browser, found.tenant_id) == []
    assert intents_of(payer_browser, submitted.tenant_id) == []


def test_a_payment_is_read_by_finance_and_its_payer_only(
    psp_server: httpx.Client, urls: DatabaseUrls, kms: Kms
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    payment = charge(server, found.finance, found.quote["id"]).json()
    path = f"/api/payments/{payment['id']}"

    assert server.get(path, headers=found.buyer.headers).json() == payment
    assert server.get("/api/payments", headers=found.buyer.headers).json() == {"items": [payment]}
    # Another buyer of the tenant, and every caller of another tenant: no such payment.
    other_buyer = person(server, urls, kms, BUYER, found.buyer.account.tenant)
    outsider = person(server, urls, kms, FINANCE)
    for who in (other_buyer, outsider):
        assert server.get(path, headers=who.headers).status_code == 404
        assert server.get("/api/payments", headers=who.headers).json() == {"items": []}
        listed = server.get(
            "/api/payments", params={"quote_id": found.quote["id"]}, headers=who.headers
        )
        assert listed.json() == {"items": []}
    assert (
        server.get(f"/api/payments/{uuid.uuid4()}", headers=found.finance.headers).status_code
        == 404
    )
    # A seller may never read payments: refused before anything is read.
    assert server.get(path, headers=found.seller.headers).status_code == 403
    assert server.get("/api/payments", headers=found.seller.headers).status_code == 403


def test_the_payer_pays_on_the_psps_card_fields(
    psp_server: httpx.Client,
    urls: DatabaseUrls,
    kms: Kms,
    payer_browser: stripe.StripeClient,
    sandbox: Sandbox,
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    payment = charge(server, found.finance, found.quote["id"]).json()
    base = f"/api/payments/{payment['id']}"

    page = server.get(f"{base}/checkout", headers=found.buyer.headers)
    assert page.status_code == 200, page.text
    # No key to the intent at the PSP before a velocity-checked confirmation asks for 3DS.
    assert page.json() == {
        "payment": payment,
        "client_secret": None,
        "publishable_key": SANDBOX_PUBLISHABLE_KEY,
        "stripe_js": f"{sandbox.api_base}/js.stripe.com/v3/",
    }
    # Only the payer: Finance may never pay, another buyer sees nothing.
    assert server.get(f"{base}/checkout", headers=found.finance.headers).status_code == 403
    other_buyer = person(server, urls, kms, BUYER, found.buyer.account.tenant)
    assert server.get(f"{base}/checkout", headers=other_buyer.headers).status_code == 404

    method = card_payment_method(payer_browser, VISA)
    body = {"payment_method": method}
    headers = {**found.buyer.headers, "Idempotency-Key": "pay-1"}
    assert (
        server.post(
            f"{base}/confirm", json=body, headers=other_buyer.headers | {"Idempotency-Key": "x"}
        )
    ).status_code == 404
    assert server.post(f"{base}/confirm", json=body, headers=found.buyer.headers).status_code == 400
    # A card number never reaches the route (PAY-1).
    pan = server.post(f"{base}/confirm", json={"payment_method": VISA}, headers=headers)
    assert pan.status_code == 400
    assert pan.json()["type"] == "urn:ramparts:problem:card-number-refused"

    paid = server.post(f"{base}/confirm", json=body, headers=headers)

    assert paid.status_code == 200, paid.text
    assert paid.json() == {**payment, "status": "processing", "client_secret": None}
    again = server.post(f"{base}/confirm", json=body, headers=headers)
    assert (again.status_code, again.content) == (200, paid.content)
    # The PSP has the money; the payment is paid only once the worker confirms it.
    assert payer_browser.v1.payment_intents.retrieve(payment["psp_id"]).status == "succeeded"
    shown = server.get(base, headers=found.finance.headers).json()
    assert shown["status"] == "processing"
    assert attempts_of(urls, found.tenant_id) == [("succeeded", None)]
    # Paying twice: the payment no longer waits for a card.
    twice = server.post(
        f"{base}/confirm",
        json={"payment_method": card_payment_method(payer_browser, VISA)},
        headers={**found.buyer.headers, "Idempotency-Key": "pay-2"},
    )
    assert twice.status_code == 409


def test_3ds_answers_requires_action_with_the_client_secret(
    psp_server: httpx.Client, urls: DatabaseUrls, kms: Kms, payer_browser: stripe.StripeClient
) -> None:
    server = psp_server
    found = deal(server, urls, kms)
    payment = charge(server, found.finance, found.quote["id"]).json()

    answer = server.post(
        f"/api/payments/{payment['id']}/confirm",
        json={"payment_method": card_payment_method(payer_browser, VISA_3DS)},
        headers={**found.buyer.headers, "Idempotency-Key": "pay-3ds"},
    )

    assert answer.status_code == 200, answer.text
    intent = payer_browser.v1.payment_intents.retrieve(payment["psp_id"])
    assert intent.status == "requires_action"
    assert answer.json() == {
        **payment,
        "status": "requires_action",
        "client_secret": intent.client_secret,
    }
    shown = server.get(f"/api/payments/{payment['id']}", headers=found.buyer.headers).json()
    assert shown["status"] == "requires_action"  # not paid


def test_declines_count_and_the_excess_waits(
    serve_app: Callable[..., httpx.Client],
    kms: Kms,
    sandbox: Sandbox,
    urls: DatabaseUrls,
    payer_browser: stripe.StripeClient,
) -> None:
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    server = serve_app(psp_api_base=sandbox.api_base, velocity_payer_attempts_per_day=2)
    found = deal(server, urls, kms)
    quotes = [found.quote, another_quote(server, found), another_quote(server, found)]
    payments = [charge(server, found.finance, q["id"]).json() for q in quotes]

    def attempt(payment: dict[str, Any], card: str) -> httpx.Response:
        return server.post(
            f"/api/payments/{payment['id']}/confirm",
            json={"payment_method": card_payment_method(payer_browser, card)},
            headers={**found.buyer.headers, "Idempotency-Key": f"pay-{uuid.uuid4()}"},
        )

    for payment in payments[:2]:
        declined = attempt(payment, DECLINED)
        assert declined.status_code == 402, declined.text
        assert declined.json()["type"] == "urn:ramparts:problem:card-declined"
        assert declined.json()["decline_code"] == "card_declined"
    refused = attempt(payments[2], VISA)

    assert refused.status_code == 429, refused.text
    assert refused.json()["type"] == "urn:ramparts:problem:velocity-limit"
    assert refused.json()["limit"] == "payer_attempts_per_day"
    assert 86_390 <= int(refused.headers["retry-after"]) <= 86_400
    # The declined attempts were kept though their requests failed; the refused one never
    # reached the PSP.
    assert attempts_of(urls, found.tenant_id) == [("declined", "card_declined")] * 2
    assert payer_browser.v1.payment_intents.retrieve(payments[2]["psp_id"]).status == (
        "requires_payment_method"
    )


def _workers(server: psutil.Process) -> list[psutil.Process]:
    return [
        child
        for child in server.children(recursive=True)
        if any("spawn_main" in part for part in child.cmdline())
    ]


def _connections(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for conn in worker.net_connections(kind="tcp")
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


def test_fifty_concurrent_repeats_in_two_server_processes_make_one_intent(
    tmp_path: Path,
    make_database: Callable[..., DatabaseUrls],
    sandbox: Sandbox,
    payer_browser: stripe.StripeClient,
) -> None:
    """`ramparts serve --workers 2`: 50 identical deposit requests at once, over connections
    held by both worker processes, give one PaymentIntent and 50 identical answers."""
    urls = make_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = owner_env(
        tmp_path,
        urls,
        RAMPARTS_PUBLIC_URL=base,
        RAMPARTS_REDIS_URL=REDIS,
        RAMPARTS_PSP_API_BASE=sandbox.api_base,
    )
    kms = cli_kms(tmp_path)  # the server's own KMS
    kms.write_secret(API_KEY_SECRET, SecretStr(SANDBOX_API_KEY))
    with running("serve", "--port", str(port), "--workers", "2", env=env, url=f"{base}/readyz") as (
        started
    ):
        workers = _workers(psutil.Process(started.process.pid))
        assert len(workers) == 2
        with httpx.Client(base_url=base, timeout=30) as server:
            found = deal(server, urls, kms)
        # One connection per request, opened first: both workers hold some of them.
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(50)]
        try:
            for each in clients:
                assert each.get("/readyz").status_code == 200
            assert all(_connections(worker, port) > 0 for worker in workers)
            headers = {**found.finance.headers, "Idempotency-Key": "deposit-once"}
            path = f"/api/quotes/{found.quote['id']}/deposit"
            with ThreadPoolExecutor(50) as pool:
                answers = list(
                    pool.map(
                        lambda c: c.post(path, json={"amount": 12_345}, headers=headers), clients
                    )
                )
        finally:
            for each in clients:
                each.close()
    assert [a.status_code for a in answers] == [201] * 50, answers[0].text
    assert len({a.content for a in answers}) == 1
    payment = answers[0].json()
    assert payment["amount"] == 12_345
    [intent] = intents_of(payer_browser, found.tenant_id)
    assert intent.id == payment["psp_id"]
    with psycopg.connect(libpq(urls.owner), autocommit=True) as owner:
        rows = owner.execute(
            "SELECT id FROM payments WHERE subject = %s", (found.quote["id"],)
        ).fetchall()
    assert [str(r[0]) for r in rows] == [payment["id"]]
