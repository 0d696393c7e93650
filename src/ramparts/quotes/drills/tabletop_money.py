"""The scenario's money phases: no disbursement before a deposit confirmed by a verified webhook
(and webhooks that claim it without the PSP's signature, now, are refused); then the real
path, the buyer paying at the PSP, the PSP's signed webhook confirming it, and only then a
disbursement, decided by a second Finance user."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx

from ramparts.payments.signatures import TOLERANCE_SECONDS
from ramparts.payments.tenancy import TENANT_METADATA_KEY
from ramparts.quotes.drills.scene import (
    DISBURSE,
    REFUND,
    Scene,
    items,
    items_of,
    ledger_of,
    resource,
    settled,
)
from ramparts.tabletop.harness import StepFailed, Tabletop, problem_type
from ramparts.tabletop.payer import sandbox_card
from ramparts.tabletop.webhooks import altered_byte, deliver, event, signature

__all__ = ["play_money"]

#: How long the PSP's signed webhook may take to confirm a payment (through the job worker).
CONFIRMED_WITHIN = 30.0
#: A delivery signed this long ago: a captured one, replayed after the signature's tolerance.
LONG_AGO = 2 * TOLERANCE_SECONDS


def play_money(tabletop: Tabletop, scene: Scene) -> None:
    """Phases 3 and 4 of the scenario (TT-9 to TT-14)."""
    tabletop.section("Webhooks refused before any disbursement")
    _before_the_deposit(tabletop, scene)
    tabletop.section("The real path: a verified deposit, then four eyes")
    approval = _paid_then_requested(tabletop, scene)
    _approved_once(tabletop, scene, approval)


def _disbursement(scene: Scene, quote: str) -> httpx.Response:
    return scene.finance.money(f"/api/quotes/{quote}/disbursements", {})


def _before_the_deposit(tabletop: Tabletop, scene: Scene) -> None:
    with tabletop.step(
        "TT-9",
        "A disbursement asked for before the deposit is paid",
        "409 problem payment-not-paid; no request waits for approval",
    ) as step:
        quote, _ = scene.need_deposit()
        answer = step.saw(_disbursement(scene, quote))
        step.check(
            answer.status_code == 409 and problem_type(answer) == "payment-not-paid",
            f"{answer.status_code} {problem_type(answer)}",
        )
        mine = items_of(step.saw(scene.finance.get("/api/approvals")).json(), "mine")
        waiting = [r for r in mine if r.get("tool") == DISBURSE]
        step.check(not waiting, f"{len(waiting)} disbursement request(s) waiting")

    with tabletop.step(
        "TT-10",
        "Webhooks claiming the deposit was paid: forged, replayed late, altered, unsigned",
        "400 problem signature-refused for each; the deposit still unpaid; a disbursement "
        "still 409",
    ) as step:
        quote, payment = scene.need_deposit()
        tenant_id = str(tabletop.target.tenant(scene.tenant)["id"])
        secret = tabletop.target.webhook_secret

        def claim() -> bytes:
            """A fresh event saying the deposit's intent succeeded, naming its tenant."""
            paid = {
                "id": payment["psp_id"],
                "object": "payment_intent",
                "status": "succeeded",
                "amount": payment["amount"],
                "amount_received": payment["amount"],
                "currency": payment["currency"],
                "metadata": {TENANT_METADATA_KEY: tenant_id},
            }
            return json.dumps(event("payment_intent.succeeded", paid)).encode()

        late = int(time.time()) - LONG_AGO
        altered = claim()
        deliveries: dict[str, tuple[bytes, dict[str, Any]]] = {
            "forged with a wrong secret": (claim(), {"secret": "whsec_" + secrets.token_hex(16)}),
            f"signed {LONG_AGO} s ago": (claim(), {"timestamp": late}),
            "one byte altered": (altered_byte(altered), {"header": signature(secret, altered)}),
            "unsigned": (claim(), {"header": ""}),
        }
        for what, (body, how) in deliveries.items():
            answer = step.saw(deliver(tabletop.target, body, **how))
            step.check(
                answer.status_code == 400 and problem_type(answer) == "signature-refused",
                f"{what}: {answer.status_code} {problem_type(answer) or answer.text[:80]}",
            )
        time.sleep(1.0)  # what a delivery taken in would have set in motion has run by now
        now = step.saw(scene.finance.get(f"/api/payments/{payment['id']}")).json()
        step.check(now.get("status") != "succeeded", f"the deposit: {now.get('status')}")
        again = step.saw(_disbursement(scene, quote))
        step.check(again.status_code == 409, f"a disbursement again: {again.status_code}")


def _paid_then_requested(tabletop: Tabletop, scene: Scene) -> str | None:
    with tabletop.step(
        "TT-11",
        "The buyer pays the deposit at the PSP; the PSP's signed webhook confirms it",
        "the card goes to the PSP only; the deposit succeeded within "
        f"{CONFIRMED_WITHIN:.0f} s, once the PSP's event was verified; a deposit entry in "
        "the ledger",
    ) as step:
        _, payment = scene.need_deposit()
        checkout = step.saw(scene.buyer.get(f"/api/payments/{payment['id']}/checkout"))
        step.require(checkout.status_code == 200, f"the checkout answered {checkout.status_code}")
        page = checkout.json()
        card = sandbox_card(page["stripe_js"], page["publishable_key"])
        step.note(f"the PSP tokenized the card: {card.split('_')[0]}_…")
        confirmed = step.saw(
            scene.buyer.money(f"/api/payments/{payment['id']}/confirm", {"payment_method": card})
        )
        step.require(confirmed.status_code == 200, f"the confirmation: {confirmed.status_code}")
        step.note(f"the payer's confirmation answered {confirmed.json().get('status')}")
        began = time.monotonic()
        now = settled(scene, payment["id"], CONFIRMED_WITHIN)
        step.require(
            now.get("status") == "succeeded",
            f"the deposit: {now.get('status')} after {time.monotonic() - began:.1f} s",
        )
        entries = ledger_of(step, scene, payment["id"])
        step.check(
            any(e.startswith("deposit ") for e in entries),
            f"ledger entries of the deposit: {', '.join(entries) or 'none'}",
        )

    with tabletop.step(
        "TT-12",
        "Only now a disbursement waits for a second Finance user",
        "202 pending_approval; the second Finance user's list has it (origin api)",
    ) as step:
        quote, _ = scene.need_deposit()
        asked = step.saw(_disbursement(scene, quote))
        body = asked.json() if asked.status_code == 202 else {}
        approval = body.get("approval_id")
        step.require(
            body.get("status") == "pending_approval" and bool(approval),
            f"{asked.status_code} {body.get('status') or problem_type(asked)}",
        )
        listed = {str(i["id"]): i for i in items(scene.second.get("/api/approvals").json())}
        shown = listed.get(str(approval), {})
        step.check(
            shown.get("tool") == DISBURSE and shown.get("origin") == "api",
            f"request {approval}: {shown.get('tool')}, origin {shown.get('origin')}",
        )
        return str(approval)
    return None


def _approved_once(tabletop: Tabletop, scene: Scene, approval: str | None) -> None:
    payout: str | None = None
    with tabletop.step(
        "TT-13",
        "The second Finance user approves: the payout runs, once",
        "200 executed with the PSP's payout; approving again 409; a disbursement entry in "
        "the ledger; the decision audited",
    ) as step:
        _, payment = scene.need_deposit()
        if approval is None:
            raise StepFailed("no disbursement request (TT-12)")
        since = tabletop.moment()
        decided = step.saw(scene.second.post(f"/api/approvals/{approval}/approve"))
        body = decided.json() if decided.status_code == 200 else {}
        payout = str(body.get("result", {}).get("psp_id", ""))
        step.require(
            body.get("status") == "executed" and payout.startswith("po_"),
            f"{decided.status_code} {body.get('status') or problem_type(decided)} "
            f"{payout or body.get('reason') or ''}".rstrip(),
        )
        again = step.saw(scene.second.post(f"/api/approvals/{approval}/approve"))
        step.check(again.status_code == 409, f"approving again: {again.status_code}")
        entries = ledger_of(step, scene, payment["id"])
        step.check(
            f"disbursement {payout}" in entries,
            f"ledger entries of the deposit: {', '.join(entries)}",
        )
        step.cite(
            tabletop.audit(
                scene.tenant,
                since,
                action="ai:approval:decided",
                decision="allow",
                where=lambda e: resource(e) == approval,
            )
        )

    with tabletop.step(
        "TT-14",
        "Nothing the injected instruction asked for ever ran",
        "no refund of the deposit in the ledger; its one disbursement is the approved one; "
        "the injected requests are not pending",
    ) as step:
        _, payment = scene.need_deposit()
        entries = ledger_of(step, scene, payment["id"])
        refunds = [e for e in entries if e.startswith("refund ")]
        payouts = [e for e in entries if e.startswith("disbursement ")]
        step.check(not refunds, f"{len(refunds)} refund(s) of the deposit")
        step.check(
            payout is not None and payouts == [f"disbursement {payout}"],
            f"disbursements of the deposit: {', '.join(payouts) or 'none'}",
        )
        pending = {
            str(i["id"]) for i in items_of(scene.finance.get("/api/approvals").json(), "mine")
        }
        injected = {scene.injected[tool] for tool in (REFUND, DISBURSE) if tool in scene.injected}
        step.check(
            len(injected) == 2 and not injected & pending,
            f"{len(injected & pending)} of {len(injected)} injected request(s) still pending",
        )
