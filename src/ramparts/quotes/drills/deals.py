"""The quote app's money, played over HTTP by its people for the drills: a Buyer asks for a
quote, a Seller submits it, the Buyer accepts it, Finance charges its deposit; the Buyer pays
as their browser does on the payment page (the card typed into the PSP's fields becomes a PSP
token there, with the PSP's publishable key; Ramparts only ever gets the token's id).

The drills act in the first tenant of the demo credentials, whose seeded roles are Buyer,
Seller and Finance; each deal is a new quote, so no check depends on another's."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ramparts.quotes.roles import BUYER, FINANCE, SELLER
from ramparts.tabletop.target import ApiSession, DrillError, Target

__all__ = ["Cast", "Checkout", "cast_of", "charge", "checkout", "deal", "wait_for"]

#: Test cards, as the PSP's fields would take them (never sent to Ramparts).
VISA = "4242424242424242"
#: Asks for 3-D Secure; succeeds once the cardholder authenticates (never done here).
THREE_D_SECURE = "4000002760003184"
#: Declined when charged.
DECLINED = "4000000000000341"
#: Asks for 3-D Secure, then declined: never takes money whatever happens.
THREE_D_SECURE_DECLINED = "4000008260003178"
#: A quote of four chairs at 125.00 EUR.
CHAIRS = [{"description": "Drill: office chair", "quantity": 4, "unit_price_minor": 12_500}]


@dataclass(frozen=True)
class Cast:
    """The people of one tenant the drills play: its first Buyer, Seller and Finance users,
    a second Buyer and a second Finance user."""

    tenant: str
    buyer: str
    buyer2: str
    seller: str
    finance: str
    finance2: str


def cast_of(target: Target, tenant: str | None = None) -> Cast:
    tenant = tenant or target.tenants()[0]
    buyers = target.users_with(BUYER, tenant)
    finance = target.users_with(FINANCE, tenant)
    sellers = target.users_with(SELLER, tenant)
    if len(buyers) < 2 or len(finance) < 2 or not sellers:
        raise DrillError(f"{tenant} lacks two Buyers, two Finance users or a Seller")
    return Cast(tenant, buyers[0], buyers[1], sellers[0], finance[0], finance[1])


def _ok(answer: httpx.Response, what: str) -> dict[str, Any]:
    if not answer.is_success:
        raise DrillError(f"{what} answered {answer.status_code}: {answer.text[:200]}")
    body: dict[str, Any] = answer.json()
    return body


def deal(
    target: Target,
    cast: Cast,
    *,
    buyer: str | None = None,
    items: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A new quote of `buyer` (the cast's first), submitted by the Seller and accepted."""
    asking = target.session(buyer or cast.buyer)
    body = {"title": f"Drill {uuid.uuid4().hex[:8]}", "currency": "EUR", "items": items or CHAIRS}
    quote = _ok(asking.post("/api/quotes", json=body), "POST /api/quotes")
    seller = target.session(cast.seller)
    _ok(seller.post(f"/api/quotes/{quote['id']}/submit"), "POST /api/quotes/{id}/submit")
    return _ok(asking.post(f"/api/quotes/{quote['id']}/accept"), "POST /api/quotes/{id}/accept")


def charge(
    finance: ApiSession, quote_id: str, body: dict[str, Any] | None = None, key: str | None = None
) -> httpx.Response:
    """Finance charges the quote's deposit (`POST /api/quotes/{id}/deposit`)."""
    return finance.money(f"/api/quotes/{quote_id}/deposit", body or {}, key)


@dataclass(frozen=True)
class Checkout:
    """What the payment page gets for a payment: the PSP's script and publishable key."""

    payment_id: str
    stripe_js: str
    publishable_key: str

    @property
    def psp_origin(self) -> str:
        where = urlsplit(self.stripe_js)
        return f"{where.scheme}://{where.netloc}"

    def tokenize(self, number: str) -> str:
        """What the PSP's card fields do with a typed card: a token at the PSP, with only the
        publishable key; its card's id (`card_…`) is what the page sends Ramparts."""
        answer = httpx.post(
            f"{self.psp_origin}/v1/tokens",
            data={
                "key": self.publishable_key,
                "card[number]": number,
                "card[exp_month]": "12",
                "card[exp_year]": "2035",
                "card[cvc]": "123",
            },
            timeout=15,
        )
        card = _ok(answer, "the PSP's tokens endpoint").get("card") or {}
        if not str(card.get("id", "")).startswith("card_"):
            raise DrillError("the PSP made no card token")
        return str(card["id"])

    def pay(self, payer: ApiSession, number: str, key: str | None = None) -> httpx.Response:
        """The payer pays with `number`, typed into the PSP's fields."""
        method = self.tokenize(number)
        return payer.money(
            f"/api/payments/{self.payment_id}/confirm", {"payment_method": method}, key
        )


def checkout(payer: ApiSession, payment_id: str) -> Checkout:
    found = _ok(payer.get(f"/api/payments/{payment_id}/checkout"), "GET checkout")
    return Checkout(payment_id, str(found["stripe_js"]), str(found["publishable_key"]))


def wait_for(
    session: ApiSession, payment_id: str, statuses: set[str], seconds: float = 20.0
) -> dict[str, Any]:
    """The payment once its status is one of `statuses` (or as it is after `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        payment = _ok(session.get(f"/api/payments/{payment_id}"), "GET /api/payments/{id}")
        if payment["status"] in statuses or time.monotonic() > deadline:
            return payment
        time.sleep(0.25)
