"""Approval requests made (AI-4): a tool call the gateway holds is stored with the arguments
the model sent, why it waits, the conversation's provenance and where each argument came
from, for a different person to decide within a day (see `approvals`).

A person may also ask for a registered tool's call directly (an app's route: a refund they
request, which a second person must approve): `request_direct_approval` stores it with the
exact arguments they sent, in no conversation (`origin` `api`), each argument typed by the
requester. Both kinds are decided by the one `Approvals` service, with the same rules."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.conversations import Conversation
from ramparts.ai.provenance import TYPED_BY_REQUESTER
from ramparts.ai.tools import Tool
from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import AuditLog, Event
from ramparts.identity.auth import Principal, actor_of

__all__ = [
    "APPROVAL_TTL",
    "TYPED_BY_REQUESTER",
    "pending_calls",
    "request_approval",
    "request_direct_approval",
]

APPROVAL_TTL = timedelta(hours=24)
_INSERT = text(
    "INSERT INTO ai_approvals (tenant_id, id, conversation_id, origin, tool, arguments, "
    "reason, provenance, origins, requested_by, requested_amr, expires_at) VALUES "
    "(:tenant, :id, :conversation, :origin, :tool, CAST(:arguments AS jsonb), :reason, "
    "CAST(:provenance AS jsonb), CAST(:origins AS jsonb), :user, :amr, :expires)"
)


async def request_approval(
    session: AsyncSession,
    principal: Principal,
    *,
    conversation: Conversation,
    tool: Tool,
    arguments: dict[str, Any],
    reason: str,
    origins: dict[str, list[dict[str, str]]],
) -> uuid.UUID:
    """Store the request for `principal`'s call of `tool` and add its event to the
    conversation's; its id. `origins`: where each argument came from."""
    approval = await _insert(
        session,
        principal,
        conversation_id=conversation.id,
        tool=tool,
        arguments=arguments,
        reason=reason,
        provenance=conversation.provenance.trail(),
        origins=origins,
    )
    conversation.events.append(
        Event(
            actor_of(principal),
            Action.APPROVAL_REQUESTED,
            Resource("approval", str(approval)),
            Decision.DENY,
            {"tool": tool.name, "reason": reason},
        )
    )
    return approval


async def request_direct_approval(
    session: AsyncSession,
    audit: AuditLog,
    principal: Principal,
    *,
    tool: Tool,
    arguments: dict[str, Any],
    reason: str,
) -> uuid.UUID:
    """Store `principal`'s own request for a call of `tool` with `arguments` (what they sent,
    checked against the tool's schema here too) for a different person to decide, and audit
    it, in `session`; its id. The caller has authorized the request (Cedar, on its channel)."""
    if principal.user_id is None:
        raise ValueError("approval requests are made by people")
    errors = tool.argument_errors(arguments)
    if errors:
        raise ValueError(f"{tool.name} arguments: {'; '.join(errors)}")
    typed = [{"source": TYPED_BY_REQUESTER}]
    approval = await _insert(
        session,
        principal,
        conversation_id=None,
        tool=tool,
        arguments=arguments,
        reason=reason,
        provenance=[],
        origins=dict.fromkeys(sorted(arguments), typed),
    )
    await audit.record(
        session,
        actor_of(principal),
        Action.APPROVAL_REQUESTED,
        Resource("approval", str(approval)),
        Decision.DENY,
        {"tool": tool.name, "reason": reason, "origin": "api"},
    )
    return approval


async def pending_calls(session: AsyncSession, tools: list[str]) -> list[tuple[str, Any]]:
    """The tool and arguments of every request of the session's tenant for one of `tools`
    that is still to be decided (pending, not expired), oldest first: what an app counts
    against what is left to ask for (the refunds asked for and not decided yet)."""
    rows = await session.execute(
        text(
            "SELECT tool, arguments FROM ai_approvals "
            "WHERE tenant_id = current_setting('app.tenant_id')::uuid AND status = 'pending' "
            "AND expires_at > now() AND tool = ANY(:tools) ORDER BY created_at, id"
        ),
        {"tools": tools},
    )
    return [(tool, arguments) for tool, arguments in rows]


async def _insert(
    session: AsyncSession,
    principal: Principal,
    *,
    conversation_id: uuid.UUID | None,
    tool: Tool,
    arguments: dict[str, Any],
    reason: str,
    provenance: list[dict[str, str]],
    origins: dict[str, list[dict[str, str]]],
) -> uuid.UUID:
    approval = uuid.uuid4()
    await session.execute(
        _INSERT,
        {
            "tenant": principal.tenant_id,
            "id": approval,
            "conversation": conversation_id,
            "origin": "assistant" if conversation_id is not None else "api",
            "tool": tool.name,
            "arguments": json.dumps(arguments),
            "reason": reason,
            "provenance": json.dumps(provenance),
            "origins": json.dumps(origins),
            "user": principal.user_id,
            "amr": list(principal.amr),  # the requester is judged again at decision time
            "expires": datetime.now(UTC) + APPROVAL_TTL,
        },
    )
    return approval
