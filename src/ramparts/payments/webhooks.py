"""`POST /webhooks/psp`: the PSP's deliveries, verified before anything reads them.

The route is public to the permission gate (the PSP holds no bearer token; its signature is
its credential) and meets every other request rule. In order: the edge caps the body's size
and checks its encoding and media type; the route verifies `Stripe-Signature` over the raw
bytes against every active secret (`ramparts.payments.signatures`); only then do the edge's
body rules (strict JSON) run and is the body parsed and stored (`ramparts.payments.psp_events`).
A refusal is a 400 problem naming the rule broken; an accepted delivery is a 200, whether it
was stored, a duplicate, or ignored, so the PSP does not send it again.

A newly stored event's job (`ramparts.payments.jobs`) is deferred in the transaction that
stores it, under a savepoint: a refused defer is logged and the delivery still succeeds (the
event is stored; the worker's sweep defers it within a minute or two).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import structlog
from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.payments.jobs import defer_psp_event
from ramparts.payments.psp_events import EventRefused, PspEvents, parse_event
from ramparts.payments.signatures import SignatureRefused, verify
from ramparts.payments.webhook_secrets import WebhookSecrets
from ramparts.problems import Problem, ProblemType
from ramparts.routes import SIGNED_BODY_RULES, Exempt, declares

__all__ = ["SIGNATURE_HEADER", "WEBHOOK_PATH", "build_router"]

WEBHOOK_PATH = "/webhooks/psp"
SIGNATURE_HEADER = "stripe-signature"

log = structlog.get_logger(__name__)


async def _defer(session: AsyncSession, tenant_id: uuid.UUID, event_id: str) -> None:
    """Defer the stored event's job; a refusal never fails the delivery."""
    try:
        await defer_psp_event(session, tenant_id, event_id)
    except Exception as exc:  # noqa: BLE001 - the event is stored: the sweep defers it
        log.warning("psp_event_not_deferred", event_id=event_id, error=type(exc).__name__)


def build_router(
    secrets: WebhookSecrets, events: PspEvents, *, clock: Callable[[], float] = time.time
) -> APIRouter:
    router = APIRouter(tags=["payments"])

    @router.post(
        WEBHOOK_PATH,
        openapi_extra=declares(Exempt.PUBLIC),
        responses={400: {"description": "signature refused, or not a PSP event"}},
    )
    async def psp_webhook(request: Request) -> dict[str, str]:
        """A PSP event (Stripe's JSON) signed in `Stripe-Signature`: `{"status": "stored" |
        "duplicate" | "ignored", "event_id"}`, with `reason` when ignored."""
        body = await request.body()
        try:
            signed = verify(
                body, request.headers.get(SIGNATURE_HEADER), secrets.active(), now=clock()
            )
        except SignatureRefused as refused:
            log.warning("psp_webhook_refused", reason=refused.refusal.name)
            raise Problem(400, ProblemType.SIGNATURE_REFUSED, str(refused)) from None
        rules = request.scope.pop(SIGNED_BODY_RULES, None)
        if rules is not None:
            rules()  # the edge's body rules, now that the PSP is known to have sent it
        # The edge's rules have refused what is not UTF-8 or not strict JSON, in words; what
        # they let through and is still not JSON here is a form (they accept one).
        try:
            document = json.loads(body.decode("utf-8")) if body else None
        except ValueError:
            raise Problem(400, ProblemType.MALFORMED_JSON, "the body is not JSON") from None
        try:
            event = parse_event(document)
        except EventRefused as refused:
            raise Problem(400, ProblemType.NOT_AN_EVENT, str(refused)) from None
        receipt = await events.store(
            event, signed_at=signed.timestamp, body=body.decode(), on_stored=_defer
        )
        answer = {"status": str(receipt.outcome), "event_id": receipt.event_id}
        if receipt.reason:
            answer["reason"] = receipt.reason
        return answer

    return router
