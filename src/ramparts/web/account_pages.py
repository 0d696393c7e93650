"""The signed-in person's own account page: how they signed in, and adding a passkey.

The second factors shown are those of this session (its token's `amr`, RFC 8176). Adding a
passkey is the browser's WebAuthn ceremony, run by `static/account.js` against the
self-service API (`/api/me/passkeys/...`) through the app's door: this page only draws it.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from ramparts.routes import Exempt, declares
from ramparts.web.page import SignedIn

__all__ = ["router"]

router = APIRouter(tags=["pages"], include_in_schema=False)

#: What each RFC 8176 method reference means to the person who used it.
FACTORS = {
    "pwd": "Password",
    "otp": "Code from an authenticator app",
    "hwk": "Passkey or security key",
    "mfa": "More than one factor",
}


@router.get("/app/account", response_class=HTMLResponse, openapi_extra=declares(Exempt.PAGE))
async def account_page(page: SignedIn) -> HTMLResponse:
    factors = [FACTORS.get(method, method) for method in page.viewer.amr]
    return page.render(
        "account/account.html",
        factors=factors,
        second_factor="otp" in page.viewer.amr or "hwk" in page.viewer.amr,
    )
