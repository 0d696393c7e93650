"""The app's page: the claims a person may read, and approving one. It calls the app's own
API as the signed-in person (`page.api`), so it can do nothing the API would refuse them."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse
from ramparts.routes import Exempt, declares
from ramparts.web.page import Posted, SignedIn

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
PAGE = declares(Exempt.PAGE)


@router.get("/app/expenses", response_class=HTMLResponse, openapi_extra=PAGE)
async def claims(page: SignedIn) -> HTMLResponse:
    listed = (await page.api.get("/api/expenses")).json()
    return page.render("expenses/claims.html", claims=listed["items"])


@router.post("/app/expenses/{expense_id}/approve", openapi_extra=PAGE)
async def approve(page: Posted, expense_id: uuid.UUID) -> RedirectResponse:
    (await page.api.post(f"/api/expenses/{expense_id}/approve")).json()  # a refusal: its page
    return page.redirect("/app/expenses")
