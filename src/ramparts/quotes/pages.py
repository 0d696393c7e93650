"""The quote app's pages for buyers, sellers and Finance (`App.pages`).

- `/app/quotes`: the quotes the viewer may read, as `GET /api/quotes` lists them.
- `/app/quotes/new`: a buyer's request form (`request_form`), creating through the API.
- `/app/quotes/{id}`: one quote, its proposal and deposit, and the actions of its status: a
  seller drafts a proposal with the assistant and sends it, a buyer accepts it.

Every page acts through the API as its viewer (`ramparts.web.page`): the actions shown are
only a guide, the API decides, and a refusal is the error page in the API's own words.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from ramparts.apps import AppServices
from ramparts.quotes.models import QuoteStatus
from ramparts.quotes.request_form import CURRENCIES, RequestForm
from ramparts.quotes.roles import BUYER, FINANCE
from ramparts.quotes.views import MAX_PROPOSAL
from ramparts.routes import Exempt, declares
from ramparts.web.page import Page, Posted, SignedIn

__all__ = ["build_pages"]

PAGE = declares(Exempt.PAGE)

#: A quote's status in words, and its badge's colour class (the words carry the meaning).
STATUS = {
    QuoteStatus.DRAFT: ("Requested", "info"),
    QuoteStatus.SUBMITTED: ("Proposal sent", "warn"),
    QuoteStatus.ACCEPTED: ("Accepted", "ok"),
    QuoteStatus.REJECTED: ("Rejected", "bad"),
    QuoteStatus.CANCELLED: ("Cancelled", "bad"),
}
#: A deposit's PaymentIntent status in words.
PAYMENT_STATUS = {
    "requires_payment_method": ("Waiting for payment", "warn"),
    "requires_action": ("Waiting for bank confirmation (3-D Secure)", "warn"),
    "processing": ("Processing", "info"),
    "succeeded": ("Paid", "ok"),
    "canceled": ("Canceled", "bad"),
}
#: Statuses in which the payer still has to pay on the payment page.
PAYABLE = frozenset({"requires_payment_method", "requires_action"})
#: What a form's redirect says on the page it lands on (fixed sentences: nothing reflected).
NOTICES = {
    "created": "Your request was created. Sellers of your organisation can now answer it.",
    "sent": "Your proposal was sent to the buyer.",
    "accepted": "You accepted the proposal. Finance will ask for the deposit.",
}
ASSISTANT_DRAFT_TOOL = "draft_proposal"


def build_pages(_: AppServices) -> list[APIRouter]:
    router = APIRouter(tags=["pages"], include_in_schema=False)
    router.add_api_route("/app/quotes", quotes, methods=["GET"], openapi_extra=PAGE)
    router.add_api_route("/app/quotes/new", new_form, methods=["GET"], openapi_extra=PAGE)
    router.add_api_route("/app/quotes/new", create, methods=["POST"], openapi_extra=PAGE)
    router.add_api_route("/app/quotes/{quote_id}", quote, methods=["GET"], openapi_extra=PAGE)
    router.add_api_route(
        "/app/quotes/{quote_id}/draft", draft, methods=["POST"], openapi_extra=PAGE
    )
    router.add_api_route(
        "/app/quotes/{quote_id}/submit", submit, methods=["POST"], openapi_extra=PAGE
    )
    router.add_api_route(
        "/app/quotes/{quote_id}/accept", accept, methods=["POST"], openapi_extra=PAGE
    )
    return [router]


async def quotes(page: SignedIn, status: QuoteStatus | None = None) -> HTMLResponse:
    params = {"status": status.value} if status is not None else None
    listed = (await page.api.get("/api/quotes", params=params)).json()
    return page.render(
        "quotes/list.html",
        quotes=listed["items"],
        chosen=status,
        statuses=STATUS,
    )


async def new_form(page: SignedIn) -> HTMLResponse:
    return _form_page(page, RequestForm())


async def create(page: Posted) -> Response:
    form = RequestForm.read(await page.request.form())
    body = form.body()
    if body is None:
        return _form_page(page, form, status=422)
    answer = await page.api.post("/api/quotes", body)
    if answer.status == 422:  # the API's own check: shown on the form, the input kept
        form.errors["form"] = _api_errors(answer.body)
        return _form_page(page, form, status=422)
    created = answer.json()
    return page.redirect(f"/app/quotes/{created['id']}?notice=created")


async def quote(page: SignedIn, quote_id: uuid.UUID, notice: str | None = None) -> HTMLResponse:
    return await _quote_page(page, quote_id, notice=NOTICES.get(notice or ""))


async def draft(page: Posted, quote_id: uuid.UUID) -> HTMLResponse:
    """Ask the assistant for a draft; the seller edits it before sending. The assistant's
    tool call goes through the gateway like any other (Cedar, provenance, audit)."""
    asked = await page.api.post(
        "/api/assistant", {"message": f"draft proposal for quote {quote_id}"}
    )
    answer = asked.json()
    actions = answer.get("actions") or []
    drafted = any(
        a.get("tool") == ASSISTANT_DRAFT_TOOL and a.get("status") == "executed" for a in actions
    )
    return await _quote_page(
        page,
        quote_id,
        proposal=str(answer.get("reply") or "") if drafted else "",
        drafting={"reply": answer.get("reply"), "actions": actions, "drafted": drafted},
    )


async def submit(page: Posted, quote_id: uuid.UUID) -> Response:
    form = await page.request.form()
    typed = form.get("proposal")
    proposal = typed.replace("\r\n", "\n").strip() if isinstance(typed, str) else ""
    problem = None
    if not proposal:
        problem = "Write the proposal, or draft it with the assistant, before sending it."
    elif len(proposal) > MAX_PROPOSAL:
        problem = f"The proposal is {len(proposal):,} characters long; at most {MAX_PROPOSAL:,}."
    if problem is None:
        answer = await page.api.post(f"/api/quotes/{quote_id}/submit", {"proposal": proposal})
        if answer.status != 422:
            answer.json()  # any other refusal is the error page
            return page.redirect(f"/app/quotes/{quote_id}?notice=sent")
        problem = _api_errors(answer.body)
    return await _quote_page(page, quote_id, proposal=proposal, proposal_error=problem, status=422)


async def accept(page: Posted, quote_id: uuid.UUID) -> Response:
    (await page.api.post(f"/api/quotes/{quote_id}/accept")).json()
    return page.redirect(f"/app/quotes/{quote_id}?notice=accepted")


def _form_page(page: Page, form: RequestForm, status: int = 200) -> HTMLResponse:
    return page.render("quotes/new.html", status=status, form=form, currencies=CURRENCIES)


async def _quote_page(
    page: Page,
    quote_id: uuid.UUID,
    *,
    status: int = 200,
    notice: str | None = None,
    **context: Any,
) -> HTMLResponse:
    shown = (await page.api.get(f"/api/quotes/{quote_id}")).json()
    deposit = None
    # Only buyers and Finance read payments: asking for a seller would only put a refusal
    # in the audit trail on every view. The API still decides what each may read.
    if shown["status"] == QuoteStatus.ACCEPTED and page.has_role(BUYER, FINANCE):
        deposit = await _deposit(page, quote_id)
    return page.render(
        "quotes/quote.html",
        status=status,
        notice=notice,
        quote=shown,
        me=str(page.viewer.user_id),
        statuses=STATUS,
        deposit=deposit,
        payment_status=PAYMENT_STATUS,
        payable=PAYABLE,
        max_proposal=MAX_PROPOSAL,
        **context,
    )


async def _deposit(page: Page, quote_id: uuid.UUID) -> dict[str, Any]:
    """The quote's deposit as the viewer may see it: `shown` false when the API does not let
    them read payments, `payment` None when Finance has not charged it yet."""
    answer = await page.api.get("/api/payments", params={"quote_id": str(quote_id)})
    if answer.status == 403:
        return {"shown": False, "payment": None}
    body = answer.json()
    items = body["items"] if isinstance(body, dict) else body
    return {"shown": True, "payment": items[0] if items else None}  # newest first


def _api_errors(body: Any) -> str:
    """A 422 problem in one sentence: its detail and each field's message."""
    if not isinstance(body, dict):
        return "The request was refused."
    parts = [str(body.get("detail") or "The request was refused.")]
    for error in body.get("errors") or []:
        where = ".".join(str(p) for p in error.get("loc", []) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) + "."
