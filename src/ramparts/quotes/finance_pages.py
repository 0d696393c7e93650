"""Finance's pages: payments (deposits to charge, refunds, disbursements), the ledger and the
reconciliation runs.

Like every page, these act only through the API as the signed-in user (`ramparts.web.page`):
the API's gate, Cedar and row-level security decide, and a refusal is shown in its words.
Every money form carries an `Idempotency-Key` made when the page was drawn, so a second submit
of the same form replays the first answer instead of moving money twice. Refunds and
disbursements are only requested here: a second Finance user approves them in Approvals.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse

from ramparts.apps.contract import NavLink

# The API's default deposit, shown before charging (a pure function: no data is read).
from ramparts.db.engine import BIGINT_MAX
from ramparts.quotes.money import MAX_AMOUNT, AmountError, deposit_of, typed_minor_units
from ramparts.quotes.roles import FINANCE
from ramparts.routes import Exempt, declares
from ramparts.web.page import Page, PageProblem, Posted, SignedIn

__all__ = ["NAV", "router"]

PAGE = declares(Exempt.PAGE)
HOME = "/app/finance"
NAV = (
    NavLink("Payments", HOME, (FINANCE,)),
    NavLink("Ledger", f"{HOME}/ledger", (FINANCE,)),
    NavLink("Reconciliation", f"{HOME}/reconciliation", (FINANCE,)),
)
router = APIRouter(tags=["pages"], include_in_schema=False)

#: A payment's status in words, and its badge (the words carry it, not the colour).
STATUSES = {
    "requires_payment_method": ("Waiting for the buyer to pay", "warn"),
    "requires_action": ("Waiting for the buyer's bank check", "warn"),
    "processing": ("Processing", "info"),
    "succeeded": ("Paid", "ok"),
    "canceled": ("Canceled", "bad"),
}
#: What a form did, shown once after its redirect (fixed words: the query names one).
NOTICES = {
    "deposit": "Deposit charged: the buyer pays it on their payment page.",
    "refund": (
        "Refund requested. It is pending approval: a second Finance user must approve it "
        "in Approvals before any money moves."
    ),
    "disbursement": (
        "Disbursement requested. It is pending approval: a second Finance user must approve "
        "it in Approvals before any money moves."
    ),
}
#: The API lists at most this many payments; a full list may leave out older ones.
PAYMENTS_LISTED = 200


def _status(status: str) -> tuple[str, str]:
    return STATUSES.get(status, (status.replace("_", " ").capitalize(), "info"))


def minor_units(typed: str, label: str) -> int:
    """`"120.5"` → 12050: an amount of money to move, more than 0; `label` names the field."""
    try:
        return typed_minor_units(typed, what=label.lower(), maximum=MAX_AMOUNT, at_least=1)
    except AmountError as refused:
        raise PageProblem(
            422, "Please check what you entered", f"{label}: {refused}. Nothing was sent."
        ) from None


async def _form(page: Page) -> dict[str, str]:
    form = await page.request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _key(fields: dict[str, str]) -> str:
    """The form's idempotency key: the uuid4 drawn with the form."""
    try:
        return str(uuid.UUID(fields.get("key", "")))
    except ValueError:
        raise PageProblem(
            400, "That request could not be used", "Reload the page and send it again."
        ) from None


def _items(body: Any) -> list[dict[str, Any]]:
    items = body.get("items", []) if isinstance(body, dict) else body
    return list(items or [])


@router.get(HOME, response_class=HTMLResponse, openapi_extra=PAGE)
async def payments(
    page: SignedIn, done: Annotated[str | None, Query(max_length=20)] = None
) -> HTMLResponse:
    """Deposits to charge, and every payment with what Finance may ask for next."""
    # The latest run first: Finance's own read, so anyone else meets the API's refusal.
    runs = _items((await page.api.get("/api/reconciliation", {"limit": "1"})).json())
    accepted = _items((await page.api.get("/api/quotes", {"status": "accepted"})).json())
    listed = _items((await page.api.get("/api/payments")).json())
    charged = {p["quote_id"] for p in listed if p["status"] != "canceled"}
    if len(listed) >= PAYMENTS_LISTED:  # older payments may be left out: ask per quote
        for quote in accepted:
            if quote["id"] not in charged:
                of_quote = _items(
                    (await page.api.get("/api/payments", {"quote_id": quote["id"]})).json()
                )
                if any(p["status"] != "canceled" for p in of_quote):
                    charged.add(quote["id"])
    titles = {q["id"]: q["title"] for q in accepted}
    due = [
        {**q, "deposit": deposit_of(q["total_minor"]), "key": str(uuid.uuid4())}
        for q in accepted
        if q["id"] not in charged
    ]
    shown = [
        {
            **p,
            "title": titles.get(p["quote_id"]),
            "words": _status(p["status"]),
            "refund_key": str(uuid.uuid4()),
            "disburse_key": str(uuid.uuid4()),
        }
        for p in listed
    ]
    return page.render(
        "quotes/finance/payments.html",
        due=due,
        payments=shown,
        last_run=runs[0] if runs else None,
        notice=NOTICES.get(done or ""),
    )


@router.post(f"{HOME}/quotes/{{quote_id}}/deposit", openapi_extra=PAGE)
async def charge_deposit(page: Posted, quote_id: uuid.UUID) -> RedirectResponse:
    fields = await _form(page)
    typed = fields.get("amount", "").strip()
    body = {"amount": minor_units(typed, "Deposit amount")} if typed else {}
    answer = await page.api.post(
        f"/api/quotes/{quote_id}/deposit", body, idempotency_key=_key(fields)
    )
    answer.json()
    return page.redirect(f"{HOME}?done=deposit")


@router.post(f"{HOME}/payments/{{payment_id}}/refund", openapi_extra=PAGE)
async def request_refund(page: Posted, payment_id: uuid.UUID) -> RedirectResponse:
    fields = await _form(page)
    amount = minor_units(fields.get("amount", ""), "Refund amount")
    answer = await page.api.post(
        f"/api/payments/{payment_id}/refunds", {"amount": amount}, idempotency_key=_key(fields)
    )
    answer.json()
    return page.redirect(f"{HOME}?done=refund")


@router.post(f"{HOME}/quotes/{{quote_id}}/disbursement", openapi_extra=PAGE)
async def request_disbursement(page: Posted, quote_id: uuid.UUID) -> RedirectResponse:
    fields = await _form(page)
    answer = await page.api.post(
        f"/api/quotes/{quote_id}/disbursements", {}, idempotency_key=_key(fields)
    )
    answer.json()
    return page.redirect(f"{HOME}?done=disbursement")


@router.get(f"{HOME}/ledger", response_class=HTMLResponse, openapi_extra=PAGE)
async def ledger(
    page: SignedIn, before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None
) -> HTMLResponse:
    """The tenant's ledger, newest first, a page at a time."""
    params = {"limit": "50"} | ({"before": str(before)} if before else {})
    book = (await page.api.get("/api/ledger", params)).json()
    return page.render(
        "quotes/finance/ledger.html", entries=book["items"], next=book["next"], paged=bool(before)
    )


@router.get(f"{HOME}/reconciliation", response_class=HTMLResponse, openapi_extra=PAGE)
async def reconciliation(page: SignedIn) -> HTMLResponse:
    """The reconciliation runs, with the drift items that concern this tenant."""
    runs = _items((await page.api.get("/api/reconciliation", {"limit": "30"})).json())
    return page.render("quotes/finance/reconciliation.html", runs=runs)
