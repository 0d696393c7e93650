"""Approval requests made (AI-4): a tool call the gateway holds is stored with the arguments
the model sent, why it waits, the conversation's provenance and where each sensitive argument
came from, for a different person to decide within a day (see `approvals`)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.conversations import Conversation
from ramparts.ai.tools import Tool
from ramparts.audit.events import Action, Decision, Resource
from ramparts.audit.services import Event
from ramparts.identity.auth import Principal, actor_of

__all__ = ["APPROVAL_TTL", "request_approval"]

APPROVAL_TTL = timedelta(hours=24)


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
    conversation's; its id. `origins`: where each sensitive argument came from."""
    approval = uuid.uuid4()
    await session.execute(
        text(
            "INSERT INTO ai_approvals (tenant_id, id, conversation_id, tool, arguments, "
            "reason, provenance, origins, requested_by, requested_amr, expires_at) VALUES "
            "(:tenant, :id, :conversation, :tool, CAST(:arguments AS jsonb), :reason, "
            "CAST(:provenance AS jsonb), CAST(:origins AS jsonb), :user, :amr, :expires)"
        ),
        {
            "tenant": principal.tenant_id,
            "id": approval,
            "conversation": conversation.id,
            "tool": tool.name,
            "arguments": json.dumps(arguments),
            "reason": reason,
            "provenance": json.dumps(conversation.provenance.trail()),
            "origins": json.dumps(origins),
            "user": principal.user_id,
            "amr": list(principal.amr),  # the requester is judged again at decision time
            "expires": datetime.now(UTC) + APPROVAL_TTL,
        },
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
