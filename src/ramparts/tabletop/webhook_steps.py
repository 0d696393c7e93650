"""The runtime's own tabletop steps, which need no app: what reaches the PSP webhook
(`POST /webhooks/psp`) from someone other than the PSP, now.

A delivery forged with a wrong secret, one signed long ago (stale), a captured delivery
replayed after the signature's tolerance, and a signed body with one byte altered must each
be refused (400 `signature-refused`) and change nothing: no event stored, the payment it
names and its ledger entries as they were. A captured delivery replayed within the tolerance
is signed by the PSP, so it is accepted, but as a duplicate: the event was acted on once.

The forged events claim that a payment waiting to be paid has succeeded (the one a forgery
would most like to pay), naming its tenant as the PSP would; what changed is read in the
database, as its owner (`psp_rows`). The captured delivery is the newest event the PSP sent
and the instance processed: the apps' scenarios, played first, make one.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ramparts.payments.signatures import TOLERANCE_SECONDS
from ramparts.payments.tenancy import TENANT_METADATA_KEY
from ramparts.tabletop.harness import Step, StepFailed, Tabletop, problem_type
from ramparts.tabletop.psp_rows import Aim, Captured, MoneyState, aim, captured, money_state
from ramparts.tabletop.target import Target
from ramparts.tabletop.webhooks import altered_byte, deliver, event, signature

__all__ = ["SECTION", "play_webhooks"]

SECTION = "PSP webhooks: only the PSP's own signature, now, is taken, and once"
REFUSED = "signature-refused"
#: How long a replayed duplicate is given to (wrongly) be acted on again by the worker.
SETTLE_SECONDS = 2.0
#: How far back a "captured long ago" delivery is signed: past the tolerance, clearly.
LONG_AGO = 2 * TOLERANCE_SECONDS


@dataclass(frozen=True)
class Forged:
    """A forged event (`body`) and the payment it claims succeeded."""

    about: Aim
    body: bytes


def play_webhooks(tabletop: Tabletop) -> None:
    """WH-1..WH-5 (see the module docstring)."""
    target = tabletop.target
    tabletop.section(SECTION)
    refused = "400 problem signature-refused; no event stored, the payment and ledger unchanged"

    with tabletop.step("WH-1", "A delivery forged with a wrong secret", refused) as step:
        forged = _forged(_aim(target), step)
        _refused(step, target, forged, forged.body, secret="whsec_" + secrets.token_hex(16))

    with tabletop.step("WH-2", "A delivery signed too long ago (stale)", refused) as step:
        forged = _forged(_aim(target), step)
        _refused(step, target, forged, forged.body, timestamp=int(time.time()) - LONG_AGO)

    with tabletop.step("WH-3", "A signed delivery with one byte altered", refused) as step:
        forged = _forged(_aim(target), step)
        header = signature(target.webhook_secret, forged.body)
        _refused(step, target, forged, altered_byte(forged.body), header=header)

    with tabletop.step(
        "WH-4",
        "A captured delivery replayed after the signature's tolerance",
        f"400 problem signature-refused (more than {TOLERANCE_SECONDS} s old); the event, "
        "its payment and ledger unchanged",
    ) as step:
        event_from = _captured(target)
        age = time.time() - event_from.signed_at.timestamp()
        # The drill cannot wait out the tolerance: it signs the captured event as the PSP
        # does, at a moment past it (the PSP's own moment when that is long enough ago).
        when = (
            int(event_from.signed_at.timestamp()) if age > LONG_AGO else int(time.time()) - LONG_AGO
        )
        step.note(
            f"{event_from.event_id} ({event_from.event_type}) replayed with the PSP's "
            f"signature of {int(time.time()) - when} s ago"
        )
        _replayed(step, target, event_from, when, accepted=False)

    with tabletop.step(
        "WH-5",
        "A captured delivery replayed within the tolerance",
        "2xx `duplicate`: the event, its payment and ledger unchanged (acted on exactly once)",
    ) as step:
        event_from = _captured(target)
        step.note(f"{event_from.event_id} ({event_from.event_type}) signed again now")
        _replayed(step, target, event_from, int(time.time()), accepted=True)


def _aim(target: Target) -> Aim:
    """What the forgeries claim paid: a payment waiting to be paid, else a made-up intent of
    the first tenant (a forgery that took would still be stored)."""
    found = aim(target)
    if found is not None:
        return found
    tenant_id = str(target.tenant(target.tenants()[0])["id"]) if target.tenants() else ""
    return Aim(tenant_id, f"pi_drill_{secrets.token_hex(8)}", 1000, "usd", waiting=False)


def _captured(target: Target) -> Captured:
    found = captured(target)
    if found is None:
        raise StepFailed(
            "no delivery of the PSP was ever processed here to replay (no app's scenario "
            "moved money)"
        )
    return found


def _forged(about: Aim, step: Step) -> Forged:
    """A fresh `payment_intent.succeeded` event about `about`'s intent, naming its tenant as
    the runtime does on every object it makes at the PSP."""
    body = event(
        "payment_intent.succeeded",
        {
            "id": about.psp_id,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": about.amount,
            "amount_received": about.amount,
            "currency": about.currency,
            "metadata": {TENANT_METADATA_KEY: about.tenant_id},
        },
    )
    step.note(
        f"{body['id']} claims {about.psp_id} succeeded"
        + ("" if about.waiting else " (made up: no payment waits to be paid)")
    )
    return Forged(about, json.dumps(body).encode())


def _refused(step: Step, target: Target, forged: Forged, delivered: bytes, **signed: Any) -> None:
    """Deliver `delivered` (the `forged` event, or what became of it), signed as `signed`
    says (`deliver`'s options): refused, and nothing stored under either event id, the
    payment it names as it was."""
    about = forged.about
    ids = tuple(sorted({_event_id(forged.body), _event_id(delivered)} - {""}))
    before = money_state(target, about.tenant_id, about.psp_id, ids)
    answer = step.saw(deliver(target, delivered, **signed))
    kind = problem_type(answer)
    step.check(
        answer.status_code == 400 and kind == REFUSED,
        f"answered {answer.status_code} {kind or answer.text[:120]}",
    )
    after = money_state(target, about.tenant_id, about.psp_id, ids)
    _unchanged(step, before, after, stored_before=0)


def _event_id(body: bytes) -> str:
    """The event id a body carries ('' when it is not an event any more)."""
    try:
        return str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        return ""


def _replayed(step: Step, target: Target, replayed: Captured, when: int, *, accepted: bool) -> None:
    raw = replayed.payload.encode()
    ids = (replayed.event_id,)
    before = money_state(target, replayed.tenant_id, replayed.object_id, ids)
    header = signature(target.webhook_secret, raw, when)
    answer = step.saw(deliver(target, raw, header=header))
    kind = problem_type(answer)
    if accepted:
        outcome = _outcome(answer)
        step.check(
            answer.is_success and outcome == "duplicate",
            f"answered {answer.status_code} {outcome or kind or ''}".rstrip(),
        )
        time.sleep(SETTLE_SECONDS)  # a second processing, were there one, would show now
    else:
        step.check(
            answer.status_code == 400 and kind == REFUSED,
            f"answered {answer.status_code} {kind or answer.text[:120]}",
        )
    after = money_state(target, replayed.tenant_id, replayed.object_id, ids)
    _unchanged(step, before, after, stored_before=1)


def _outcome(answer: httpx.Response) -> str | None:
    try:
        return str(answer.json().get("status"))
    except (ValueError, AttributeError):
        return None


def _unchanged(step: Step, before: MoneyState, after: MoneyState, *, stored_before: int) -> None:
    """The rows the delivery could have changed are as they were."""
    step.check(
        after.events == before.events and len(after.events) == stored_before,
        f"event rows under the delivered id: {len(before.events)} before, {len(after.events)} "
        "after" + ("" if after.events == before.events else f" ({before.events} → {after.events})"),
    )
    step.check(
        after.payment == before.payment and after.ledger_entries == before.ledger_entries,
        f"the payment named: {_payment(before)} → {_payment(after)}, its ledger entries: "
        f"{before.ledger_entries} → {after.ledger_entries}",
    )


def _payment(state: MoneyState) -> str:
    return "none" if state.payment is None else state.payment[0]
