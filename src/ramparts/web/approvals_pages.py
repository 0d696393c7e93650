"""The approvals inbox, `/app/approvals`: the requests the signed-in person may decide, with
each argument's provenance, and their own requests waiting for someone else. It renders
`GET /api/approvals` and decides through `POST /api/approvals/{id}/approve|reject`: the API
decides who may.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ramparts.routes import Exempt, declares
from ramparts.web.kept import Kept, fits
from ramparts.web.page import ApiAnswer, Page, PageProblem, Posted, SignedIn

__all__ = ["router"]

router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE = declares(Exempt.PAGE)
#: The problem type's ending when approving needs a fresh second factor.
STEP_UP = "reauthentication-required"
#: A decision's result, shown once after the redirect.
DECISION = Kept("ramparts_decision", 120)


@router.get("/app/approvals", response_class=HTMLResponse, openapi_extra=PAGE)
async def approvals(page: SignedIn) -> Response:
    decided = DECISION.opened(page)
    response = await _inbox(page, decided=decided)
    if decided is not None:  # shown once
        DECISION.forget(page, response)
    return response


async def _inbox(
    page: Page,
    *,
    decided: dict[str, Any] | None = None,
    refusal: str | None = None,
    step_up: bool = False,
    status: int = 200,
) -> Response:
    listing = (await page.api.get("/api/approvals")).json()
    return page.render(
        "approvals.html",
        status=status,
        items=listing.get("items", []),
        mine=listing.get("mine", []),
        decided=decided,
        refusal=refusal,
        step_up=step_up,
    )


@router.post("/app/approvals/{approval_id}/{decision}", openapi_extra=PAGE)
async def decide(
    page: Posted, approval_id: uuid.UUID, decision: Literal["approve", "reject"]
) -> Response:
    """Approve or reject as the signed-in person; the API decides whether they may."""
    answer = await page.api.post(f"/api/approvals/{approval_id}/{decision}")
    if answer.ok:
        response = page.redirect("/app/approvals")
        kept = (
            answer.body
            if fits(answer.body)
            else {key: answer.body[key] for key in ("id", "status", "reason") if key in answer.body}
        )
        DECISION.keep(page, response, kept)
        return response
    kind = str((answer.body or {}).get("type", "")) if isinstance(answer.body, dict) else ""
    if answer.status == 403 and kind.endswith(STEP_UP):
        return await _inbox(page, step_up=True, status=403)
    if answer.status == 404:
        raise PageProblem(404, "Not found", "There is no such request, or it is not yours to see.")
    return await _inbox(page, refusal=_refusal(answer), status=answer.status)


def _refusal(answer: ApiAnswer) -> str:
    detail = answer.detail or "it was refused"
    if answer.status == 409:
        return f"This request can no longer be decided: {detail}."
    if answer.status == 403:
        return f"You may not decide this request: {detail}."
    return f"The decision did not go through ({answer.status}): {detail}."
