"""The assistant panel on every signed-in page and the approvals inbox.

Both only render what the API answers the signed-in user: the panel's tools are
`GET /api/assistant/tools` (the gateway's own filter), a message is `POST /api/assistant`, the
inbox is `GET /api/approvals` and its decisions `POST /api/approvals/{id}/approve|reject`.

The last exchange of the panel (and a decision's result, shown once) outlives the redirect of
a form sent without script in a short-lived cookie, sealed under the server's key and bound to
the user and their session: it can hold their own personal data (an IBAN they typed), which no
other user of the browser, no script, and no later session may read.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form
from fastapi.responses import HTMLResponse, Response

from ramparts.identity.views.dependencies import IdentityHttp
from ramparts.routes import Exempt, declares
from ramparts.web.page import ApiAnswer, Page, PageProblem, Posted, SignedIn, _local

__all__ = ["panel_context", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE = declares(Exempt.PAGE)
#: The header `assistant.js` sends: answer with the panel's conversation, not a redirect.
FRAGMENT_HEADER = "x-assistant-fragment"
#: What a sealed cookie may hold before it is cut down (a browser keeps 4 KB per cookie).
COOKIE_CHARS = 2600
REPLY_KEPT = 800
STEP_UP = "reauthentication-required"


def _identity(page: Page) -> IdentityHttp:
    identity: IdentityHttp = page.request.app.state.identity
    return identity


@dataclass(frozen=True)
class Kept:
    """A value kept for the user in a sealed cookie: opened only for them, for a while."""

    cookie: str
    seconds: int

    def _context(self, page: Page) -> str:
        # Bound to the session too (its CSRF token is derived from the session's own secret):
        # the value dies with the session, so no copy of the cookie opens after sign-out.
        return f"web {self.cookie} {page.viewer.user_id} {page.session.csrf}"

    def opened(self, page: Page) -> dict[str, Any] | None:
        sealed = page.request.cookies.get(self.cookie)
        return _identity(page).flows.open(sealed, self._context(page)) if sealed else None

    def keep(self, page: Page, response: Response, value: dict[str, Any]) -> None:
        response.set_cookie(
            self.cookie,
            _identity(page).flows.seal(value, self._context(page)),
            max_age=self.seconds,
            path="/",
            secure=page.kit.cookie_secure,
            httponly=True,
            samesite="strict",
        )

    def forget(self, page: Page, response: Response) -> None:
        response.delete_cookie(
            self.cookie, path="/", secure=page.kit.cookie_secure, httponly=True, samesite="strict"
        )


EXCHANGE = Kept("ramparts_assistant", 1800)  # the panel's last exchange
DECISION = Kept("ramparts_decision", 120)  # a decision's result, shown once


# --- the panel ----------------------------------------------------------------------------


async def panel_context(page: Page) -> dict[str, Any]:
    """What the panel shows on a page: the tools on offer (or why there are none) and the
    last exchange of this user's conversation."""
    answer = await page.api.get("/api/assistant/tools")
    exchange = EXCHANGE.opened(page)
    return {
        "tools": answer.body if answer.ok else None,
        "tools_problem": None if answer.ok else _in_words(answer),
        "exchange": exchange,
        "conversation_id": (exchange or {}).get("conversation_id", ""),
    }


def _in_words(answer: ApiAnswer) -> str:
    """A refusal of the assistant, as the panel says it."""
    detail = answer.detail
    if answer.status == 429:
        wait = f" in {answer.retry_after} seconds" if answer.retry_after else " later"
        return f"Too many messages for now: try again{wait}."
    if answer.status == 503:
        return f"The assistant is not available right now ({detail})."
    if answer.status == 403:
        return f"You may not use the assistant (missing permission: {detail})."
    if answer.status == 422:
        return f"Please check your message: {detail}."
    return f"The assistant could not answer ({answer.status}: {detail})."


def _storable(exchange: dict[str, Any]) -> dict[str, Any]:
    """The exchange as the cookie keeps it: cut down (the texts shortened, the arguments'
    values left out: their provenance stays) until it fits. Measured, not counted: JSON
    writes a character outside ASCII as six (`\\u00e9`)."""
    if _fits(exchange):
        return exchange
    reply = exchange.get("reply") or ""
    actions = [
        {**action, "arguments": None, "arguments_left_out": True}
        for action in exchange.get("actions", [])[:8]
    ]
    kept = REPLY_KEPT
    while True:
        cut = {
            **exchange,
            "message": _shortened(exchange["message"], kept * 3 // 8),
            "reply": _shortened(reply, kept),
            "actions": actions,
        }
        if _fits(cut):
            return cut
        if kept == 0:
            return {**cut, "actions": []}
        kept //= 2


def _fits(value: dict[str, Any]) -> bool:
    return len(json.dumps(value)) <= COOKIE_CHARS


def _shortened(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + "…"


@router.post("/app/assistant", openapi_extra=PAGE)
async def ask(
    page: Posted,
    message: Annotated[str, Form(max_length=8_000)] = "",
    conversation_id: Annotated[str, Form(max_length=40)] = "",
    back: Annotated[str, Form(max_length=500)] = "/app",
) -> Response:
    """Send the panel's message; `assistant.js` gets the conversation as a fragment, a form
    without script goes back to its page, where the panel shows it."""
    body: dict[str, Any] = {"message": message}
    try:
        body["conversation_id"] = str(uuid.UUID(conversation_id)) if conversation_id else None
    except ValueError:
        body["conversation_id"] = None  # a broken field starts a new conversation
    answer = await page.api.post("/api/assistant", {k: v for k, v in body.items() if v})
    exchange: dict[str, Any] = {"message": message}
    if answer.ok:
        exchange |= {
            "conversation_id": answer.body["conversation_id"],
            "reply": answer.body["reply"],
            "actions": answer.body["actions"],
        }
    else:
        exchange |= {"problem": _in_words(answer), "conversation_id": body["conversation_id"]}
    stored = _storable(exchange)
    if page.request.headers.get(FRAGMENT_HEADER) == "1":
        response: Response = page.kit.templates.TemplateResponse(
            page.request,
            "assistant_conversation.html",
            {"exchange": exchange},
            status_code=200 if answer.ok else answer.status,
            headers={"cache-control": "no-store"},
        )
        if answer.retry_after:
            response.headers["retry-after"] = answer.retry_after
    else:
        response = page.redirect(_local(back))
    EXCHANGE.keep(page, response, stored)
    return response


@router.post("/app/assistant/new", openapi_extra=PAGE)
async def new_conversation(
    page: Posted, back: Annotated[str, Form(max_length=500)] = "/app"
) -> Response:
    """Start over: the next message opens a new conversation."""
    response = page.redirect(_local(back))
    EXCHANGE.forget(page, response)
    return response


# --- the approvals inbox ------------------------------------------------------------------


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
            if _fits(answer.body)
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
