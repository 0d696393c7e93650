"""The payer's payment page, `GET /pay/{payment_id}` (PAY-1, SAQ A).

A public HTML page with no data of its own: its script (`static/pay.js`) signs the payer in
(the first-party client, PKCE), reads the payment through the API with the payer's token,
loads the PSP's Stripe.js and mounts the PSP's card element. Card details go from that element
to the PSP only; the page sends Ramparts the PSP's payment method id. Its response is marked
for the edge (`PSP_PAGE_HEADER`), which gives this page alone a CSP that allows the PSP's
origins, taken from the settings.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ramparts.headers import PSP_PAGE_HEADER
from ramparts.routes import Exempt, declares
from ramparts.web.pages import WEB_CLIENT_ID, templates, web_client_redirect_uri

__all__ = ["PAY_PATH", "router"]

PAY_PATH = "/pay/{payment_id}"
router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get(PAY_PATH, response_class=HTMLResponse, openapi_extra=declares(Exempt.PUBLIC))
async def pay_page(request: Request, payment_id: uuid.UUID) -> HTMLResponse:
    public_url = request.app.state.identity.issuer
    response = templates.TemplateResponse(
        request,
        "pay.html",
        {
            "client_id": WEB_CLIENT_ID,
            "redirect_uri": web_client_redirect_uri(public_url),
            "payment_id": str(payment_id),
        },
    )
    response.headers[PSP_PAGE_HEADER] = "1"
    return response
