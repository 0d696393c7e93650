"""The buyer pays a deposit on the PSP page in a real browser (Debian's Chromium), on a running
`ramparts demo` with its sandbox PSP: Finance charges the deposit over the API, the buyer signs
in on the page, types a test card into the PSP's own card element and pays; with a 3D Secure
card, the bank's challenge (the sandbox's Stripe.js) comes first.

What proves the payment: the PSP's intent is `succeeded` (asked of the PSP itself) and the
PSP's signed `payment_intent.succeeded` event reached the server and was stored verified, and
the demo's worker, having processed it, made the deposit *paid*; the page says "processing"
until then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
import stripe
from playwright.sync_api import Page

from ramparts.db.engine import libpq
from ramparts.payments.sandbox import SANDBOX_API_KEY
from tests.e2e.harness import Demo, User, Watched, enter_credentials, one_time_code, type_card
from tests.identity.helpers import (
    Account,
    bearer,
    code_from,
    exchange_code,
    log_in,
    pkce_pair,
)

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]

VISA = "4242424242424242"
THREE_D_SECURE = "4000002760003184"
DECLINED = "4000000000000341"  # declined when charged
#: The demo's velocity limit for one card, low enough to reach in a test: one attempt per card
#: an hour (the sandbox cannot retry an intent whose charge it declined: it answers 400 to the
#: next confirmation, where Stripe takes a new card).
CARD_ATTEMPTS_PER_HOUR = 1
#: buyer2's demo draft, which the declines test has answered and accepted.
CATERING = "Catering for the partner summit"


@pytest.fixture(scope="module")
def demo_env() -> dict[str, str]:
    return {"RAMPARTS_VELOCITY_CARD_ATTEMPTS_PER_HOUR": str(CARD_ATTEMPTS_PER_HOUR)}


def _tokens(demo: Demo, username: str) -> dict[str, str]:
    """Signed in through the first-party client as a person would (password, TOTP, PKCE)."""
    user = demo.user(username)
    client = demo.report["oidc_client"]
    verifier, challenge = pkce_pair()
    authorize = "/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": f"{demo.base}/app/callback",
            "scope": "openid",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    tenant = next(t for t in demo.report["tenants"] if t["slug"] == user.tenant)
    account = Account(
        tenant=user.tenant,
        tenant_id=uuid.UUID(tenant["id"]),
        username=username,
        password=user.password,
        totp_secret=user.totp_secret,
        user_id=uuid.uuid4(),
    )
    with httpx.Client(base_url=demo.base) as browser:
        final = log_in(browser, authorize, account, otp=one_time_code(user))
        answer = exchange_code(
            browser,
            code_from(final.headers["location"]),
            verifier,
            client_id=client["client_id"],
            redirect_uri=f"{demo.base}/app/callback",
        )
    assert answer.status_code == 200, answer.text
    tokens: dict[str, str] = answer.json()
    return tokens


def _api(demo: Demo, username: str) -> httpx.Client:
    headers = bearer(_tokens(demo, username)["access_token"])
    return httpx.Client(base_url=demo.base, headers=headers, timeout=30)


def _accepted_quote(demo: Demo, tenant: str, title: str) -> str:
    """The tenant's draft `title`, answered by its seller and accepted by its buyer (the
    quote's own buyer, whoever that is), over the API."""
    with _api(demo, f"seller@{tenant}.test") as seller:
        listed = seller.get("/api/quotes").json()
        quotes = listed["items"] if isinstance(listed, dict) else listed
        (quote,) = [q for q in quotes if q["title"] == title]
        assert seller.post(f"/api/quotes/{quote['id']}/submit").status_code == 200
    owner = next(
        u["username"]
        for u in demo.report["users"]
        if u["tenant"] == tenant and u["username"].startswith("buyer2@")
    )
    with _api(demo, owner) as buyer:
        accepted = buyer.post(f"/api/quotes/{quote['id']}/accept")
    assert accepted.status_code == 200, accepted.text
    return str(quote["id"])


def _charge_deposit(demo: Demo, tenant: str, quote_id: str | None = None) -> dict[str, Any]:
    """Finance charges the deposit of `quote_id`, or of the tenant's accepted demo quote."""
    with _api(demo, f"finance@{tenant}.test") as api:
        if quote_id is None:
            listed = api.get("/api/quotes")
            assert listed.status_code == 200, listed.text
            body = listed.json()
            quotes = body["items"] if isinstance(body, dict) else body
            (accepted,) = [q for q in quotes if q["status"] == "accepted"]
            quote_id = accepted["id"]
        charged = api.post(
            f"/api/quotes/{quote_id}/deposit",
            json={},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
    assert charged.status_code == 201, charged.text
    payment: dict[str, Any] = charged.json()
    assert payment["status"] == "requires_payment_method"
    assert payment["checkout_url"] == f"{demo.base}/pay/{payment['id']}"
    return payment


def _intent_at_the_psp(demo: Demo, psp_id: str, want: str, within: float = 20) -> str:
    client = stripe.StripeClient(SANDBOX_API_KEY, base_addresses={"api": demo.psp})
    deadline = time.monotonic() + within
    while True:
        status = str(client.v1.payment_intents.retrieve(psp_id).status)
        if status == want or time.monotonic() > deadline:
            return status
        time.sleep(0.3)


def _verified_events(demo: Demo, psp_id: str, within: float = 20) -> set[str]:
    deadline = time.monotonic() + within
    while True:
        with psycopg.connect(libpq(demo.urls.owner), autocommit=True) as conn:
            types = {
                row[0]
                for row in conn.execute(
                    "SELECT event_type FROM psp_events WHERE object_id = %s", (psp_id,)
                )
            }
        if "payment_intent.succeeded" in types or time.monotonic() > deadline:
            return types
        time.sleep(0.3)


def _refused(page: Page, card: str, words: str) -> None:
    """Pay with `card`, and see the page refuse in `words`, ready for another card."""
    type_card(page, card)
    page.get_by_role("button", name="Pay").click()
    problem = page.locator("#pay-problem")
    problem.wait_for(state="visible", timeout=20_000)
    assert words in (problem.text_content() or "")
    page.wait_for_selector("#pay-status[data-state=ready]", timeout=10_000)
    assert page.locator("#pay-form").is_visible()


def _pay(
    page: Page,
    shot: Shot,
    payment: dict[str, Any],
    payer: User,
    card: str | None,
    name: str,
    *,
    refusals: tuple[tuple[str, str], ...] = (),
) -> tuple[str, list[str]]:
    """Pay `payment` in the browser as `payer`: first the `refusals` (a card, and the words
    the page must say), then `card` (none: stop there). The page asks to sign in first: the
    payment page needs the payer's session. Returns the state the page ended in and the
    refusals the page's confirmations met ("402 <path>", "429 <path>")."""
    confirm = f"/app/api/payments/{payment['id']}/confirm"
    watched = Watched(page, allow=[f"402 {confirm}", f"429 {confirm}"] if refusals else [])
    page.goto(payment["checkout_url"])
    page.wait_for_load_state("networkidle")
    shot(page, f"{name}-1-sign-in")
    enter_credentials(page, payer)
    page.wait_for_url(payment["checkout_url"], timeout=15_000)
    page.wait_for_selector("#pay-status[data-state=ready]", timeout=20_000)
    assert page.locator("#pay-form").is_visible()
    for number, (refused, words) in enumerate(refusals, 1):
        _refused(page, refused, words)
        shot(page, f"{name}-2-refused-{number}")
    state = page.locator("#pay-status").get_attribute("data-state") or ""
    if card is not None:
        type_card(page, card)
        shot(page, f"{name}-2-card")
        page.get_by_role("button", name="Pay").click()
        if card == THREE_D_SECURE:
            # The bank's challenge, drawn by the PSP's Stripe.js.
            challenge = page.get_by_role("button", name="Complete authentication")
            challenge.wait_for(timeout=20_000)
            status = page.locator("#pay-status").get_attribute("data-state")
            assert status == "requires-action"
            shot(page, f"{name}-3-challenge")
            challenge.click()
        page.wait_for_selector(
            "#pay-status[data-state=processing], #pay-status[data-state=paid]",
            timeout=30_000,
        )
        state = page.locator("#pay-status").get_attribute("data-state") or ""
        text = page.locator("#pay-status").text_content() or ""
        assert page.locator("#pay-problem").is_hidden(), page.locator("#pay-problem").text_content()
        waiting = "Waiting for the payment provider's confirmation"
        assert waiting in text if state == "processing" else "Paid" in text
        # The demo's worker processes the PSP's verified event: the page, which follows
        # the payment, turns to paid.
        page.wait_for_selector("#pay-status[data-state=paid]", timeout=60_000)
        state = page.locator("#pay-status").get_attribute("data-state") or ""
        assert "Paid" in (page.locator("#pay-status").text_content() or "")
    shot(page, f"{name}-4-after")
    # No card number anywhere in the page outside the PSP's own element.
    outside = page.evaluate(
        "() => { const c = document.getElementById('pay-card').cloneNode(false);"
        " const b = document.body.cloneNode(true);"
        " b.querySelector('#pay-card').replaceWith(c); return b.outerHTML; }"
    )
    assert not any(number in outside for number in (VISA, THREE_D_SECURE, DECLINED))
    watched.check()
    return state, watched.allowed


def test_the_buyer_pays_a_deposit_on_the_psp_page(page: Page, demo: Demo, shot: Shot) -> None:
    payment = _charge_deposit(demo, "acme")
    state, refused = _pay(page, shot, payment, demo.user("buyer@acme.test"), VISA, "visa")
    assert state == "paid"
    assert refused == []
    assert _intent_at_the_psp(demo, payment["psp_id"], "succeeded") == "succeeded"
    assert "payment_intent.succeeded" in _verified_events(demo, payment["psp_id"])


def test_a_3ds_card_is_paid_after_the_banks_challenge(page: Page, demo: Demo, shot: Shot) -> None:
    payment = _charge_deposit(demo, "globex")
    buyer = demo.user("buyer@globex.test")
    state, _ = _pay(page, shot, payment, buyer, THREE_D_SECURE, "3ds")
    assert state == "paid"
    assert _intent_at_the_psp(demo, payment["psp_id"], "succeeded") == "succeeded"
    assert "payment_intent.succeeded" in _verified_events(demo, payment["psp_id"])


def test_declines_and_the_velocity_limit_are_said_in_words(
    page: Page, demo: Demo, shot: Shot
) -> None:
    """A declined card, as often as the limit allows (402), then once more: a 429 the page
    turns into the wait. Nothing was charged at the PSP."""
    payment = _charge_deposit(demo, "acme", _accepted_quote(demo, "acme", CATERING))
    declined = ((DECLINED, "Your card was declined: nothing was charged."),)
    limited = ((DECLINED, "Too many payment attempts: try again in about 60 minutes."),)
    state, refused = _pay(
        page,
        shot,
        payment,
        demo.user("buyer2@acme.test"),
        None,
        "declined",
        refusals=declined * CARD_ATTEMPTS_PER_HOUR + limited,
    )
    assert state == "ready"  # the form waits for another card
    confirm = f"/app/api/payments/{payment['id']}/confirm"
    assert refused == [f"402 {confirm}"] * CARD_ATTEMPTS_PER_HOUR + [f"429 {confirm}"]
    assert _intent_at_the_psp(demo, payment["psp_id"], "succeeded", within=0) != "succeeded"
