"""How the PSP adapter classifies a failed call: a refusal is definitive (nothing happened at
the PSP); anything else may have moved money."""

from __future__ import annotations

import pytest
import stripe

from ramparts.payments.psp import _error


@pytest.mark.parametrize(
    ("error", "definitive"),
    [
        (stripe.CardError("declined", None, "card_declined", http_status=402), True),
        (stripe.InvalidRequestError("no such object", None, http_status=404), True),
        (stripe.InvalidRequestError("bad amount", "amount", http_status=400), True),
        (stripe.IdempotencyError("in use", http_status=409), False),
        (stripe.RateLimitError("slow down", http_status=429), False),
        (stripe.APIError("oops", http_status=500), False),
        (stripe.APIConnectionError("no answer"), False),
    ],
)
def test_a_refusal_is_definitive_and_no_answer_is_not(
    error: stripe.StripeError, definitive: bool
) -> None:
    """Only a refusal says nothing happened at the PSP; no answer, a conflict, a rate limit
    or a server error may have moved money, so the caller must repeat the same call."""
    assert _error("create refund", error).definitive is definitive
