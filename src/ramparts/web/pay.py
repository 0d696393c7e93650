"""The payer's payment page, `GET /pay/{payment_id}` (PAY-1, SAQ A).

A page of the web app with no data of its own: its script (`static/pay.js`) reads the payment
through the API as the signed-in payer (the app's door, `/app/api/…`), loads the PSP's
Stripe.js and mounts the PSP's card element. Card details go from that element to the PSP
only; the page sends Ramparts the PSP's payment method id. Its response is marked for the edge
(`PSP_PAGE_HEADER`), which gives this page alone a CSP that allows the PSP's origins, taken
from the settings.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from ramparts.headers import PSP_PAGE_HEADER
from ramparts.routes import Exempt, declares
from ramparts.web.page import SignedIn

__all__ = ["PAY_PATH", "router"]

PAY_PATH = "/pay/{payment_id}"
router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get(PAY_PATH, response_class=HTMLResponse, openapi_extra=declares(Exempt.PAGE))
async def pay_page(page: SignedIn, payment_id: uuid.UUID) -> HTMLResponse:
    response = page.render("pay.html", payment_id=str(payment_id))
    response.headers[PSP_PAGE_HEADER] = "1"
    return response
