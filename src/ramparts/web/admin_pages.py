"""The tenant admin's pages: its users, its audit trail and the chain's verification, and its
assistant's kill-switch and data loss prevention rules.

Each page renders what the API answers as the signed-in user; whether they may see it is the
API's decision (Cedar), so a non-admin gets the API's 403 as an error page. The forms post
here (`Posted`: CSRF and origin checked) and call the API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from ramparts.ai.masking import MASKED_KINDS
from ramparts.db.engine import BIGINT_MAX
from ramparts.routes import Exempt, declares
from ramparts.web.page import Page, Posted, SignedIn

__all__ = ["router"]

router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE = declares(Exempt.PAGE)
AUDIT_PAGE_EVENTS = 50
#: The kinds of personal data a tenant may forbid outright (a fixed vocabulary, not data).
DLP_KINDS = tuple(sorted(kind.value for kind in MASKED_KINDS))


@router.get("/app/admin", response_class=HTMLResponse, openapi_extra=PAGE)
async def users_page(page: SignedIn) -> HTMLResponse:
    users = (await page.api.get("/api/admin/users")).json()["items"]
    return page.render("admin/users.html", users=users)


@router.get("/app/admin/audit", response_class=HTMLResponse, openapi_extra=PAGE)
async def audit_page(
    page: SignedIn, after: Annotated[int, Query(ge=0, le=BIGINT_MAX)] = 0
) -> HTMLResponse:
    events = (
        await page.api.get(
            "/api/audit/events", {"after": str(after), "limit": str(AUDIT_PAGE_EVENTS)}
        )
    ).json()
    verification = (await page.api.get("/api/audit/verification")).json()
    return page.render(
        "admin/audit.html",
        events=events["items"],
        next_after=events["next_after"],
        after=after,
        verification=verification,
    )


@router.get("/app/admin/assistant", response_class=HTMLResponse, openapi_extra=PAGE)
async def assistant_page(page: SignedIn) -> HTMLResponse:
    return await _assistant(page)


async def _assistant(page: Page, status: int = 200, **problems: str) -> HTMLResponse:
    """The kill-switch and DLP page; `problems` are a refused form's messages, by form."""
    switch = (await page.api.get("/api/assistant/killswitch")).json()
    dlp = (await page.api.get("/api/assistant/dlp")).json()
    return page.render(
        "admin/assistant.html",
        status=status,
        switch=switch,
        forbidden=set(dlp["forbidden"]),
        kinds=DLP_KINDS,
        problems=problems,
    )


@router.post("/app/admin/assistant/killswitch", openapi_extra=PAGE)
async def set_killswitch(page: Posted) -> Response:
    form = await page.request.form()
    engaged = form.get("engaged")
    if engaged not in {"on", "off"}:
        return await _assistant(page, 422, killswitch="Choose to switch it off or on.")
    body: dict[str, Any] = {
        "engaged": engaged == "off",  # switching the assistant *off* engages the switch
        "tool": str(form.get("tool") or "").strip(),
        "reason": str(form.get("reason") or "").strip(),
    }
    answer = await page.api.post("/api/assistant/killswitch", body)
    if answer.status == 422:
        return await _assistant(page, 422, killswitch=_invalid(answer.body))
    answer.json()
    return page.redirect("/app/admin/assistant")


@router.post("/app/admin/assistant/dlp", openapi_extra=PAGE)
async def set_dlp(page: Posted) -> Response:
    form = await page.request.form()
    chosen = [str(kind) for kind in form.getlist("forbidden")]
    answer = await page.api.call("PUT", "/api/assistant/dlp", json_body={"forbidden": chosen})
    if answer.status == 422:
        return await _assistant(page, 422, dlp=_invalid(answer.body))
    answer.json()
    return page.redirect("/app/admin/assistant")


def _invalid(body: Any) -> str:
    """The API's own words for a refused form (its 422 problem's detail or first error)."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            loc = errors[0].get("loc") or ()
            parts = [loc] if isinstance(loc, str) else [str(p) for p in loc if p != "body"]
            return f"{'.'.join(parts) or 'input'}: {errors[0].get('msg', 'invalid')}"
        if body.get("detail"):
            return str(body["detail"])
    return "Please check what you entered."
