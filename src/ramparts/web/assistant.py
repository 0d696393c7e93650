"""The assistant panel on every signed-in page.

It renders only what the API answers the signed-in user: the tools on offer are
`GET /api/assistant/tools` (the gateway's own filter), a message is `POST /api/assistant`.
The last exchange outlives the redirect of a form sent without script in a sealed cookie
(`ramparts.web.kept`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi.responses import Response

from ramparts.routes import Exempt, declares
from ramparts.web.kept import Kept, fits
from ramparts.web.page import ApiAnswer, Page, Posted, local_path

__all__ = ["panel_context", "router"]

router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE = declares(Exempt.PAGE)
#: The header `assistant.js` sends: answer with the panel's conversation, not a redirect.
FRAGMENT_HEADER = "x-assistant-fragment"
REPLY_KEPT = 800
#: The panel's last exchange, kept across a form's redirect.
EXCHANGE = Kept("ramparts_assistant", 1800)


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
    if fits(exchange):
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
        if fits(cut):
            return cut
        if kept == 0:
            return {**cut, "actions": []}
        kept //= 2


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
        response = page.redirect(local_path(back))
    EXCHANGE.keep(page, response, stored)
    return response


@router.post("/app/assistant/new", openapi_extra=PAGE)
async def new_conversation(
    page: Posted, back: Annotated[str, Form(max_length=500)] = "/app"
) -> Response:
    """Start over: the next message opens a new conversation."""
    response = page.redirect(local_path(back))
    EXCHANGE.forget(page, response)
    return response
