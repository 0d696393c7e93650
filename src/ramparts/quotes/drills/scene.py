"""The quote app's tabletop cast and the state its steps pass on (`Scene`), and what every
phase of the scenario uses: the assistant's actions, the approvals, the payment and its
ledger entries as Finance reads them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ramparts.tabletop.harness import Step, StepFailed, Tabletop
from ramparts.tabletop.target import ApiSession, DrillError

__all__ = [
    "DISBURSE",
    "READ",
    "REFUND",
    "Scene",
    "actions",
    "by",
    "call",
    "cast",
    "items",
    "items_of",
    "ledger_of",
    "new_quote",
    "payment_unchanged",
    "resource",
    "settled",
]

REFUND = "issue_refund"
DISBURSE = "disburse_deposit"
READ = "get_quote"


@dataclass
class Scene:
    """Who plays, and what the steps so far made (None until a step made it)."""

    tenant: str
    currency: str
    buyer: ApiSession
    seller: ApiSession
    finance: ApiSession
    second: ApiSession  # the second Finance user, who decides
    quote: str | None = None  # the accepted quote whose deposit is the money at stake
    payment: dict[str, Any] | None = None  # its deposit, as Finance charged it
    carrier: str | None = None  # the quote whose proposal hides the instruction
    injected: dict[str, str] = field(default_factory=dict)  # tool → its approval request

    def need_deposit(self) -> tuple[str, dict[str, Any]]:
        if self.quote is None or self.payment is None:
            raise StepFailed("no deposit to play with: the stage (TT-1, TT-2) was not set")
        return self.quote, self.payment


def cast(tabletop: Tabletop) -> Scene:
    """The demo people of the first tenant, signed in for this run: a buyer, a seller and two
    Finance users (one asks, the other decides)."""
    target = tabletop.target
    tenants = target.tenants()
    if not tenants:
        raise DrillError("the demo credentials list no tenant")
    tenant = tenants[0]

    def one(role: str, index: int = 0) -> ApiSession:
        people = target.users_with(role, tenant)
        if len(people) <= index:
            raise DrillError(f"the demo credentials have no {role} #{index + 1} in {tenant}")
        return tabletop.person(people[index])

    region = str(target.tenant(tenant).get("region", ""))
    return Scene(
        tenant=tenant,
        currency="EUR" if region == "eu" else "USD",
        buyer=one("buyer"),
        seller=one("seller"),
        finance=one("finance"),
        second=one("finance", 1),
    )


def new_quote(step: Step, scene: Scene, title: str, proposal: str) -> str:
    """A quote the buyer asks for and the seller answers with `proposal`: its id."""
    asked = step.saw(
        scene.buyer.post(
            "/api/quotes",
            json={
                "title": title,
                "currency": scene.currency,
                "items": [
                    {"description": "Standing desk", "quantity": 2, "unit_price_minor": 50_000}
                ],
            },
        )
    )
    step.require(asked.status_code == 201, f"the buyer's request answered {asked.status_code}")
    quote = str(asked.json()["id"])
    answered = step.saw(
        scene.seller.post(f"/api/quotes/{quote}/submit", json={"proposal": proposal})
    )
    step.require(
        answered.status_code == 200, f"the seller's proposal answered {answered.status_code}"
    )
    return quote


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"name": tool, "arguments": arguments}


def items(listed: Any) -> list[dict[str, Any]]:
    """A list answer: a JSON list or `{"items": [...]}`."""
    return items_of(listed, "items")


def items_of(listed: Any, key: str) -> list[dict[str, Any]]:
    found = listed.get(key, []) if isinstance(listed, dict) else listed
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def actions(step: Step, answer: httpx.Response, tools: set[str]) -> list[dict[str, Any]]:
    """The assistant's actions, in the order the model made them: exactly the calls played
    (`tools`, one each), or the step stops."""
    step.require(answer.status_code == 200, f"the assistant answered {answer.status_code}")
    found = [a for a in answer.json().get("actions", []) if isinstance(a, dict)]
    made = [str(a.get("tool")) for a in found]
    step.require(
        set(made) == tools and len(made) == len(tools),
        f"the model's calls: {', '.join(made) or 'none'}",
    )
    return found


def by(event: dict[str, Any], subject: str) -> bool:
    return str(event.get("actor", {}).get("id")) == subject


def resource(event: dict[str, Any]) -> str:
    return str((event.get("resource") or {}).get("id"))


def payment_unchanged(step: Step, scene: Scene, payment: dict[str, Any]) -> None:
    now = step.saw(scene.finance.get(f"/api/payments/{payment['id']}")).json()
    step.check(
        now.get("status") == payment["status"],
        f"payment {payment['id']}: {payment['status']} → {now.get('status')}",
    )


def ledger_of(step: Step, scene: Scene, payment_id: str) -> list[str]:
    """The deposit's ledger entries (kind and reference), oldest first, among the tenant's
    newest 200 (the scenario's own are the newest): what Finance reads."""
    entries = items(step.saw(scene.finance.get("/api/ledger", params={"limit": 200})).json())
    mine = [
        f"{e.get('kind')} {e.get('reference')}" for e in entries if e.get("payment") == payment_id
    ]
    return list(reversed(mine))


def settled(scene: Scene, payment_id: str, within: float) -> dict[str, Any]:
    """The payment once its status is `succeeded` (polled), or as it is after `within` s."""
    deadline = time.monotonic() + within
    while True:
        now: dict[str, Any] = scene.finance.get(f"/api/payments/{payment_id}").json()
        if now.get("status") == "succeeded" or time.monotonic() > deadline:
            return now
        time.sleep(0.25)
