"""Paying at the sandbox PSP as a payer's browser does: the card goes to the PSP's own API, as
its Stripe.js sends it (`POST /v1/tokens` with the publishable key), never to the instance,
which gets only the id of the card the PSP made (`card_…`). Only the sandbox (localstripe)
is paid this way: a real PSP's cards are typed into its own hosted fields by a person."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ramparts.payments.browser import SANDBOX_STRIPE_JS_PATH
from ramparts.payments.sandbox import TEST_CARDS
from ramparts.tabletop.target import DrillError

__all__ = ["sandbox_card"]

#: How long the PSP may take to answer.
PSP_TIMEOUT = 15.0


def sandbox_card(stripe_js: str, publishable_key: str, card: str = "visa") -> str:
    """A test card (`visa`, `declined`, `3ds`) tokenized at the sandbox whose Stripe.js the
    payer's page loads from `stripe_js`: the PSP's id of the card, to confirm a payment with.
    Raises `DrillError` when the page's PSP is not the sandbox or it refuses the card."""
    parts = urlsplit(stripe_js)
    if not parts.path.endswith(SANDBOX_STRIPE_JS_PATH) or parts.scheme not in {"http", "https"}:
        raise DrillError(
            f"the payment page loads {stripe_js}: not the sandbox PSP, whose cards a drill may type"
        )
    base = f"{parts.scheme}://{parts.netloc}{parts.path[: -len(SANDBOX_STRIPE_JS_PATH)]}"
    fields = {
        "card[number]": TEST_CARDS[card],
        "card[exp_month]": "12",
        "card[exp_year]": "2035",
        "card[cvc]": "123",
        "key": publishable_key,
        "payment_user_agent": "ramparts-tabletop",
    }
    try:
        answer = httpx.post(f"{base}/v1/tokens", data=fields, timeout=PSP_TIMEOUT)
    except httpx.TransportError as exc:
        raise DrillError(f"the sandbox PSP at {base} does not answer: {exc}") from None
    try:
        card_id = answer.json()["card"]["id"]
    except (ValueError, KeyError, TypeError):
        raise DrillError(f"the sandbox PSP refused the test card ({answer.status_code})") from None
    return str(card_id)
