"""What the buyer does at the PSP in tests."""

from __future__ import annotations

import stripe


def card_payment_method(buyer: stripe.StripeClient, number: str) -> str:
    """A PaymentMethod made at the PSP from a test card, as the PSP's hosted fields make one."""
    method = buyer.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2035, "cvc": "123"},
        }
    )
    return method.id
