"""The signed-in user's own account: adding a passkey.

No `from __future__ import annotations`: FastAPI evaluates the route signatures.
"""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ramparts.audit.events import Action
from ramparts.identity.passkeys import PasskeyError
from ramparts.identity.views.dependencies import Caller, Identity, refused, user_of
from ramparts.problems import Problem, ProblemType
from ramparts.routes import Exempt, declares

__all__ = ["router"]

log = structlog.get_logger(__name__)
router = APIRouter(tags=["identity"])

PASSKEY_TICKET = "passkey-registration"
RECENT_SIGN_IN = timedelta(minutes=10)


class NewPasskey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ticket: str = Field(max_length=2000)
    credential: dict[str, Any]
    name: str = Field(default="passkey", min_length=1, max_length=100)


@router.post("/api/me/passkeys/options", openapi_extra=declares(Exempt.SELF))
async def add_passkey_options(identity: Identity, principal: Caller) -> dict[str, Any]:
    """Start registering one more passkey for the signed-in user."""
    user = await user_of(identity, principal)
    signed_in = principal.auth_time
    if signed_in is None or datetime.now(UTC) - signed_in > RECENT_SIGN_IN:
        raise await refused(
            identity,
            principal,
            Action.PASSKEY_REFUSED,
            Problem(
                403,
                ProblemType.REAUTHENTICATION_REQUIRED,
                "adding a passkey needs a sign-in from the last 10 minutes",
            ),
        )
    ceremony = await identity.passkeys.registration(principal.tenant_id, user, str(user))
    await identity.passkeys.remember_challenge(principal.tenant_id, user, ceremony.challenge)
    ticket = identity.flows.seal(
        {
            "tenant": str(principal.tenant_id),
            "user": str(user),
            "challenge": ceremony.challenge,
        },
        PASSKEY_TICKET,
    )
    return {"options": json.loads(ceremony.options_json), "ticket": ticket}


@router.post("/api/me/passkeys", status_code=201, openapi_extra=declares(Exempt.SELF))
async def add_passkey(body: NewPasskey, identity: Identity, principal: Caller) -> dict[str, str]:
    user = await user_of(identity, principal)
    ticket = identity.flows.open(body.ticket, PASSKEY_TICKET)
    reason = None
    if (
        ticket is None
        or ticket.get("tenant") != str(principal.tenant_id)
        or ticket.get("user") != str(user)
    ):
        reason = "invalid or expired ticket"
    elif not await identity.passkeys.take_challenge(
        principal.tenant_id, user, str(ticket["challenge"])
    ):
        reason = "ticket already used"
    else:
        try:
            await identity.passkeys.register(
                principal.tenant_id, user, str(ticket["challenge"]), body.credential, body.name
            )
        except PasskeyError as exc:
            log.warning("passkey_refused", reason=str(exc))
            reason = exc.detail
    if reason is not None:
        raise await refused(
            identity,
            principal,
            Action.PASSKEY_REFUSED,
            Problem(400, ProblemType.PASSKEY_REFUSED, reason),
        )
    return {"status": "registered"}
