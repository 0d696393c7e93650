"""The quote app's part of the payments rows (PAY-1, PAY-2, PAY-3, PAY-5): what only its own
money routes can show, played by its people on the running instance. The runtime's part of
each row (the edge, the stored records, the webhooks, the queue, the books) is in
`ramparts.tabletop.conformance.payments`; a row passes only when both do."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ramparts.identity.models import ADMIN_ROLE
from ramparts.quotes import money
from ramparts.quotes.drills import deals
from ramparts.tabletop.browser import signed_in_browser
from ramparts.tabletop.conformance.answers import problem_type, said
from ramparts.tabletop.conformance.checks import Outcome, fail, passed
from ramparts.tabletop.evidence import audit_events, cited, now
from ramparts.tabletop.target import ApiSession, Target
from ramparts.tabletop.webhooks import deliver

__all__ = ["card_entry", "idempotent_money", "paying_rules", "readable_books"]

#: Copies of one request racing each other.
RACERS = 8
#: Declined attempts with one card before the card's limit must have refused one.
MOST_ATTEMPTS = 12
PAID = {"succeeded"}


def _verdict(expected: str, problems: list[str], fine: str, evidence: list[str]) -> Outcome:
    return (fail if problems else passed)(
        expected, "; ".join(problems[:6]) if problems else fine, evidence
    )


# ---- PAY-1 ---------------------------------------------------------------------------------

PAY1 = (
    "a deposit's payment page loads the PSP's script from the origin the checkout names, "
    "with a publishable key only, and its pay route refuses a card number"
)


def card_entry(target: Target) -> Outcome:
    cast = deals.cast_of(target)
    quote = deals.deal(target, cast)
    payment = deals.charge(target.session(cast.finance), quote["id"]).json()
    payer = target.session(cast.buyer)
    checkout = deals.checkout(payer, payment["id"])
    path = f"/pay/{payment['id']}"
    browser = signed_in_browser(target, cast.buyer, next_path=path)
    try:
        page = browser.get(path)
    finally:
        browser.close()
    policy = page.headers.get("content-security-policy", "")
    frames: list[str] = next(
        (d.split()[1:] for d in policy.split(";") if d.split()[:1] == ["frame-src"]), []
    )
    raw = payer.money(f"/api/payments/{payment['id']}/confirm", {"payment_method": deals.VISA})
    after = payer.get(f"/api/payments/{payment['id']}").json()
    problems = []
    if page.status_code != 200 or frames != [checkout.psp_origin]:
        problems.append(f"the payment page ({page.status_code}) frames {frames or 'nothing'}")
    if not checkout.publishable_key.startswith("pk_"):
        problems.append("the checkout hands the page a key that is not a publishable one")
    if raw.status_code != 400 or problem_type(raw) != "card-number-refused":
        problems.append(f"a card number as the payment method: {said(raw)}")
    if after["status"] != "requires_payment_method":
        problems.append(f"the payment moved to {after['status']}")
    evidence = [
        f"deposit {payment['id']} of quote {quote['id']}: {payment['status']}",
        f"GET {path} as its payer → {page.status_code}; frame-src {' '.join(frames)}",
        f"GET /api/payments/{{id}}/checkout: stripe_js {checkout.stripe_js}, key "
        f"{checkout.publishable_key[:8]}…",
        said(raw, "POST /api/payments/{id}/confirm with a card number"),
        f"the payment after it: {after['status']}",
    ]
    return _verdict(
        PAY1, problems, "card entry happens in the PSP's fields, named by the checkout", evidence
    )


# ---- PAY-2 ---------------------------------------------------------------------------------

PAY2 = (
    "a card asking for 3-D Secure leaves the deposit `requires_action`, not paid; the velocity "
    "limits refuse the excess attempt per card and per payer with 429 velocity-limit"
)


def paying_rules(target: Target) -> Outcome:
    cast = deals.cast_of(target)
    finance = target.session(cast.finance)
    problems: list[str] = []
    evidence: list[str] = []
    # 3-D Secure: the PSP asks the cardholder; nobody answers.
    payer = target.session(cast.buyer)
    payment = deals.charge(finance, deals.deal(target, cast)["id"]).json()
    checkout = deals.checkout(payer, payment["id"])
    answer = checkout.pay(payer, deals.THREE_D_SECURE)
    confirmed = answer.json() if answer.is_success else {}
    time.sleep(1.0)  # what a worker would make of it, if anything
    later = deals.wait_for(finance, payment["id"], set(), seconds=0)
    entries = _entries_of(finance, payment["id"])
    evidence += [
        said(answer, "3-D Secure card: POST /api/payments/{id}/confirm")
        + f", status {confirmed.get('status')}, client_secret "
        + ("given" if confirmed.get("client_secret") else "none"),
        f"a second later: {later['status']}; ledger entries for it: {len(entries)}",
    ]
    if confirmed.get("status") != "requires_action" or not confirmed.get("client_secret"):
        problems.append(f"the 3-D Secure card answered {said(answer)} {confirmed.get('status')}")
    if later["status"] != "requires_action" or entries:
        problems.append(f"the unauthenticated payment became {later['status']}")
    # Per payer: one attempt above the daily amount, with a card that never takes money.
    big = [{"description": "Drill: a fleet", "quantity": 1, "unit_price_minor": 10**9}]
    quote = deals.deal(target, cast, items=big)
    payment = deals.charge(finance, quote["id"], {"amount": money.MAX_AMOUNT}).json()
    answer = deals.checkout(payer, payment["id"]).pay(payer, deals.THREE_D_SECURE_DECLINED)
    evidence.append(said(answer, f"{money.MAX_AMOUNT} minor units in one attempt") + _limit(answer))
    if answer.status_code != 429 or _limit_of(answer) != "payer_amount_per_day":
        problems.append(f"an attempt above the payer's daily amount: {said(answer)}")
    # Per card: declined attempts with one card until its limit refuses one.
    declined, refused = _until_refused(target, cast, finance)
    evidence.append(f"declined card: {declined} attempts reached the PSP (402), then:")
    evidence.append(said(refused) + _limit(refused) if refused is not None else "never refused")
    if refused is None or refused.status_code != 429 or "retry-after" not in refused.headers:
        problems.append(f"{declined} attempts with one card and no velocity refusal")
    return _verdict(
        PAY2,
        problems,
        "3-D Secure left the payment waiting for the cardholder; the excess attempts were "
        "refused per payer and per card",
        evidence,
    )


def _limit_of(answer: Any) -> str | None:
    try:
        found = answer.json().get("limit")
    except ValueError:
        return None
    return found if isinstance(found, str) else None


def _limit(answer: Any) -> str:
    limit = _limit_of(answer)
    after = answer.headers.get("retry-after")
    return f" (limit {limit}, Retry-After {after} s)" if limit else ""


def _until_refused(target: Target, cast: deals.Cast, finance: ApiSession) -> tuple[int, Any]:
    """The second Buyer pays new deposits with one declined card until an attempt is refused
    (its card's hourly limit, or the payer's daily one): how many reached the PSP first, and
    the refusal."""
    payer = target.session(cast.buyer2)
    for attempt in range(MOST_ATTEMPTS):
        quote = deals.deal(target, cast, buyer=cast.buyer2)
        payment = deals.charge(finance, quote["id"]).json()
        answer = deals.checkout(payer, payment["id"]).pay(payer, deals.DECLINED)
        if answer.status_code != 402:
            return attempt, answer
    return MOST_ATTEMPTS, None


def _entries_of(finance: ApiSession, payment_id: str) -> list[dict[str, Any]]:
    listed = finance.get("/api/ledger", params={"limit": 200}).json()["items"]
    return [e for e in listed if e.get("payment") == payment_id]


# ---- PAY-3 ---------------------------------------------------------------------------------

PAY3 = (
    "a deposit's Idempotency-Key replays the stored answer, refuses another request (422), and "
    "racing copies make one payment; a paid deposit's event delivered again moves nothing; a "
    "refund request replays too"
)


def idempotent_money(target: Target) -> Outcome:
    cast = deals.cast_of(target)
    finance = target.session(cast.finance)
    auditor = target.session(target.users_with(ADMIN_ROLE, cast.tenant)[0])
    since = now()
    problems: list[str] = []
    evidence: list[str] = []
    quote = deals.deal(target, cast)
    key = f"drill-{uuid.uuid4()}"
    first = deals.charge(finance, quote["id"], key=key)
    again = deals.charge(finance, quote["id"], key=key)
    other = deals.charge(finance, quote["id"], {"amount": 100}, key=key)
    second = deals.charge(finance, quote["id"])
    evidence += [
        said(first, "deposit, key K"),
        said(again, "the same again, key K")
        + (", same bytes" if again.content == first.content else ""),
        said(other, "another amount, key K"),
        said(second, "another key"),
    ]
    if (again.status_code, again.content) != (first.status_code, first.content):
        problems.append("a replayed deposit did not get the stored answer")
    if other.status_code not in {409, 422}:
        problems.append(f"a reused key for another request: {said(other)}")
    if second.status_code != 409 or problem_type(second) != "payment-exists":
        problems.append(f"a second deposit of the quote: {said(second)}")
    problems += _racing(target, cast, finance, evidence)
    payment = first.json()
    problems += _paid_once(target, cast, payment, evidence)
    problems += _refund_replayed(target, cast, payment, evidence)
    events = audit_events(auditor, since=since, action="policy:request:decided")
    charged = [
        e for e in events if (e.get("details") or {}).get("action", "").endswith("deposit.charge")
    ]
    evidence.append(f"Cedar decisions on deposit.charge in the audit trail: {len(charged)}")
    evidence += cited(charged[:3])
    return _verdict(
        PAY3,
        problems,
        "deposits and refunds are idempotent per key; racing copies made one payment; the "
        "paid deposit's event, delivered again, was a duplicate and posted nothing more",
        evidence,
    )


def _racing(
    target: Target, cast: deals.Cast, finance: ApiSession, evidence: list[str]
) -> list[str]:
    problems = []
    same = deals.deal(target, cast)["id"]
    key = f"drill-{uuid.uuid4()}"
    with ThreadPoolExecutor(RACERS) as pool:
        copies = list(pool.map(lambda _: deals.charge(finance, same, key=key), range(RACERS)))
    bodies = {(a.status_code, a.content) for a in copies}
    listed = finance.get("/api/payments", params={"quote_id": same}).json()["items"]
    evidence.append(
        f"{RACERS} copies of one deposit at once, one key: statuses "
        f"{sorted({a.status_code for a in copies})}, {len(bodies)} distinct answer(s), "
        f"{len(listed)} payment"
    )
    if len(bodies) != 1 or len(listed) != 1 or copies[0].status_code != 201:
        problems.append(
            f"racing copies of one deposit: {len(bodies)} answers, {len(listed)} payments"
        )
    other = deals.deal(target, cast)["id"]
    with ThreadPoolExecutor(RACERS) as pool:
        keyed = list(pool.map(lambda _: deals.charge(finance, other), range(RACERS)))
    created = [a for a in keyed if a.status_code == 201]
    exists = [a for a in keyed if problem_type(a) == "payment-exists"]
    listed = finance.get("/api/payments", params={"quote_id": other}).json()["items"]
    evidence.append(
        f"{RACERS} deposits of one quote at once, each its own key: {len(created)} created, "
        f"{len(exists)} payment-exists, {len(listed)} payment"
    )
    if len(created) != 1 or len(listed) != 1:
        problems.append(f"racing deposits of one quote made {len(listed)} payments")
    return problems


def _paid_once(
    target: Target, cast: deals.Cast, payment: dict[str, Any], evidence: list[str]
) -> list[str]:
    """The Buyer pays; once the worker has confirmed it from the PSP's event, that very event
    is delivered again: a duplicate, and still one deposit in the books."""
    payer, finance = target.session(cast.buyer), target.session(cast.finance)
    paid = deals.checkout(payer, payment["id"]).pay(payer, deals.VISA)
    settled = deals.wait_for(finance, payment["id"], PAID)
    with target.owner() as owner:
        row = owner.execute(
            "SELECT event_id, payload::text FROM psp_events WHERE object_id = %s "
            "AND event_type = 'payment_intent.succeeded'",
            (payment["psp_id"],),
        ).fetchone()
    if row is None:
        return [f"the paid deposit ({settled['status']}) has no stored PSP event"]
    event_id, payload = row
    redelivered = deliver(target, json.loads(payload))
    status = redelivered.json().get("status") if redelivered.is_success else None
    entries = _entries_of(finance, payment["id"])
    evidence += [
        said(paid, "the Buyer pays with a card (visa)") + f"; then {settled['status']}",
        f"the PSP's {event_id} delivered again → {redelivered.status_code} {status}",
        f"ledger entries of the payment: {[e['kind'] for e in entries]}",
    ]
    problems = []
    if settled["status"] != "succeeded":
        problems.append(f"the paid deposit stayed {settled['status']}")
    if status != "duplicate" or [e["kind"] for e in entries] != ["deposit"]:
        problems.append(f"the event again was {status}; entries {[e['kind'] for e in entries]}")
    return problems


def _refund_replayed(
    target: Target, cast: deals.Cast, payment: dict[str, Any], evidence: list[str]
) -> list[str]:
    """Finance asks a refund twice with one key, then with another amount; the second Finance
    user rejects it, so nothing moves."""
    finance = target.session(cast.finance)
    path = f"/api/payments/{payment['id']}/refunds"
    key = f"drill-{uuid.uuid4()}"
    first = finance.money(path, {"amount": 100}, key)
    again = finance.money(path, {"amount": 100}, key)
    other = finance.money(path, {"amount": 200}, key)
    problems = []
    if first.status_code != 202 or again.content != first.content:
        problems.append(f"a replayed refund request: {said(first)} then {said(again)}")
    if other.status_code not in {409, 422}:
        problems.append(f"a reused refund key for another amount: {said(other)}")
    decided = None
    if first.status_code == 202:
        approval = first.json()["approval_id"]
        decided = target.session(cast.finance2).post(f"/api/approvals/{approval}/reject")
    evidence += [
        said(first, "refund 100, key R")
        + f", again → {again.status_code}"
        + (" same bytes" if again.content == first.content else ""),
        said(other, "refund 200, key R"),
        said(decided, "the second Finance user rejects it") if decided else "nothing to reject",
    ]
    return problems


# ---- PAY-5 ---------------------------------------------------------------------------------

PAY5 = (
    "Finance reads the tenant's books: every entry balances; the reconciliation runs the "
    "tenant can see are clean for it"
)


def readable_books(target: Target) -> Outcome:
    cast = deals.cast_of(target)
    finance = target.session(cast.finance)
    entries = finance.get("/api/ledger", params={"limit": 200}).json()["items"]
    if not entries:  # a fresh instance: a paid deposit first
        payer = target.session(cast.buyer)
        payment = deals.charge(finance, deals.deal(target, cast)["id"]).json()
        deals.checkout(payer, payment["id"]).pay(payer, deals.VISA)
        deals.wait_for(finance, payment["id"], PAID)
        time.sleep(0.5)
        entries = finance.get("/api/ledger", params={"limit": 200}).json()["items"]
    unbalanced = [e["id"] for e in entries if not _balanced(e)]
    runs = finance.get("/api/reconciliation").json()["items"]
    drifted = [r["id"] for r in runs if r["status"] != "clean"]
    evidence = [
        f"GET /api/ledger as Finance: {len(entries)} entries, {len(unbalanced)} unbalanced",
        f"GET /api/reconciliation as Finance: {len(runs)} runs, "
        f"{len(drifted)} with drift for this tenant",
    ]
    problems = []
    if not entries or unbalanced:
        problems.append(f"{len(unbalanced)} of {len(entries)} entries do not balance")
    if drifted:
        problems.append(f"reconciliation runs with drift for the tenant: {drifted[:3]}")
    return _verdict(PAY5, problems, "every entry balances; no drift for the tenant", evidence)


def _balanced(entry: dict[str, Any]) -> bool:
    totals: dict[str, int] = {}
    for posting in entry.get("postings", []):
        sign = 1 if posting["side"] == "debit" else -1
        totals[posting["currency"]] = totals.get(posting["currency"], 0) + sign * posting["amount"]
    return len(entry.get("postings", [])) >= 2 and not any(totals.values())
