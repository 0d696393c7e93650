"""The assistant's conversations as stored: each one its user's own, its messages in order,
and, sealed (both hold personal data), the placeholders its masking made and what its
provenance lets back an argument: a value the user typed in one message backs a call in the
next, in this conversation only."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.dlp import forbidden_kinds
from ramparts.ai.masking import Masker
from ramparts.ai.models import ToolCall
from ramparts.ai.provenance import Provenance, Trust
from ramparts.ai.refusals import GatewayRefusedError
from ramparts.ai.tenant_reads import TenantRead
from ramparts.ai.tools import Risk
from ramparts.audit.services import Event
from ramparts.crypto.sealing import EncryptedColumn, SealedFields
from ramparts.identity.auth import Principal
from ramparts.problems import ProblemType

__all__ = [
    "CONVERSATION_PROVENANCE",
    "CONVERSATION_TOKENS",
    "Conversation",
    "Conversations",
    "people_names",
]

CONVERSATION_TOKENS = EncryptedColumn("ai_conversations", "sealed_tokens", row="id")
CONVERSATION_PROVENANCE = EncryptedColumn("ai_conversations", "sealed_provenance", row="id")
DIRECTORY_MAX_AGE = 60.0
SAVED_COLUMNS = ("seq", "role", "trust", "source", "content")
#: The source of a stored model turn that asked for tool calls (its content: the calls).
MODEL_CALLS = "model:tool_calls"
#: A model's own call id is kept when it looks like one (else the gateway names its calls).
CALL_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass
class Conversation:
    id: uuid.UUID
    masker: Masker
    provenance: Provenance
    messages: list[dict[str, Any]]
    next_seq: int
    # Written once a turn (one round trip each), not once a call: the hot path of a tool call
    # then touches the database only for what it must do at once.
    unsaved: list[dict[str, Any]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    calls: dict[Risk, int] = field(default_factory=dict)  # run or sent to approval, this message
    flushed: int = 0  # events already in this transaction

    def remember(
        self,
        *,
        role: str,
        trust: Trust,
        source: str,
        content: str,
        record_provenance: bool = True,
    ) -> None:
        if record_provenance and role != "assistant":  # the model's own words back nothing
            self.provenance.add(trust, source, content)
        self.messages.append({"role": role, "content": content})
        self.unsaved.append(
            {
                "seq": self.next_seq,
                "role": role,
                "trust": trust.value,
                "source": source[:200],
                "content": content,
            }
        )
        self.next_seq += 1

    def remember_calls(self, calls: Sequence[ToolCall]) -> list[str]:
        """The model's turn that asked for tool calls, as later model calls must see it (each
        result then answers its call by id, in the protocol's own tool-result role)."""
        ids = [call.id for call in calls]
        used = {c["id"] for m in self.messages for c in m.get("tool_calls", ())}
        fresh = len(set(ids)) == len(ids) and not used.intersection(ids)
        if not fresh or not all(i and CALL_ID.fullmatch(i) for i in ids):
            ids = [f"call_{self.next_seq}_{n}" for n in range(len(calls))]
        asked = [
            {"id": i, "name": call.name, "arguments": call.arguments}
            for i, call in zip(ids, calls, strict=True)
        ]
        self.remember(
            role="assistant",
            trust=Trust.UNTRUSTED,
            source=MODEL_CALLS,
            content=json.dumps(asked, ensure_ascii=False),
        )
        self.messages[-1]["tool_calls"] = asked
        return [call["id"] for call in asked]


class Conversations:
    """Conversations in the database: started, opened by their user (with the masking they
    had), their new messages and placeholders saved."""

    def __init__(self, fields: SealedFields) -> None:
        self._fields = fields
        # The tenant's people, whose names are masked: a new colleague's name within a minute.
        self._directory = TenantRead(people_names, DIRECTORY_MAX_AGE)

    async def open(
        self, session: AsyncSession, principal: Principal, conversation_id: uuid.UUID | None
    ) -> Conversation:
        """The user's conversation, locked for this transaction (a new one when None)."""
        tenant = principal.tenant_id
        forbidden = await forbidden_kinds(session)
        names = await self._directory.get(session, tenant)
        if conversation_id is None:
            conversation_id = uuid.uuid4()
            await session.execute(
                text(
                    "INSERT INTO ai_conversations (tenant_id, id, user_id) "
                    "VALUES (:tenant, :id, :user)"
                ),
                {"tenant": tenant, "id": conversation_id, "user": principal.user_id},
            )
            return Conversation(conversation_id, Masker(forbidden, names), Provenance(), [], 1)
        row = (
            await session.execute(
                text(
                    "SELECT sealed_tokens, sealed_provenance FROM ai_conversations "
                    "WHERE tenant_id = :tenant "
                    "AND id = :id AND user_id = :user FOR UPDATE"
                ),
                {"tenant": tenant, "id": conversation_id, "user": principal.user_id},
            )
        ).first()
        if row is None:  # another user's conversation looks like no conversation
            raise GatewayRefusedError(404, ProblemType.NOT_FOUND, "no such conversation")
        tokens = await self._opened(session, tenant, CONVERSATION_TOKENS, conversation_id, row[0])
        masker = Masker.restore(tokens, forbidden, names)
        backing = await self._opened(
            session, tenant, CONVERSATION_PROVENANCE, conversation_id, row[1]
        )
        conversation = Conversation(conversation_id, masker, Provenance.restore(backing), [], 1)
        rows = await session.execute(
            text(
                "SELECT seq, role, trust, source, content FROM ai_messages "
                "WHERE tenant_id = :tenant AND conversation_id = :id ORDER BY seq"
            ),
            {"tenant": tenant, "id": conversation_id},
        )
        answering: list[str] = []  # ids of the stored calls whose results come next
        for seq, role, trust, source, content in rows:
            # Earlier messages come back for the trail and the taint; what backs arguments
            # came back with the sealed provenance above.
            if role == "user" or trust == Trust.UNTRUSTED.value:
                conversation.provenance.add(Trust(trust), source, content)
            message: dict[str, Any] = {"role": role, "content": content}
            if role == "assistant" and source == MODEL_CALLS:
                message["tool_calls"] = json.loads(content)
                answering = [call["id"] for call in message["tool_calls"]]
            elif role == "tool" and answering:  # results follow their calls, in order
                message["tool_call_id"] = answering.pop(0)
            conversation.messages.append(message)
            conversation.next_seq = seq + 1
        return conversation

    async def tokens(
        self, session: AsyncSession, tenant: uuid.UUID, conversation_id: uuid.UUID
    ) -> dict[str, str]:
        """The conversation's placeholders and the values behind them."""
        sealed = await session.scalar(
            text("SELECT sealed_tokens FROM ai_conversations WHERE tenant_id = :t AND id = :id"),
            {"t": tenant, "id": conversation_id},
        )
        tokens: dict[str, str] = await self._opened(
            session, tenant, CONVERSATION_TOKENS, conversation_id, sealed
        )
        return tokens

    async def _opened(
        self,
        session: AsyncSession,
        tenant: uuid.UUID,
        column: EncryptedColumn,
        conversation_id: uuid.UUID,
        sealed: bytes | None,
    ) -> dict[str, Any]:
        if sealed is None:
            return {}
        opened: dict[str, Any] = json.loads(
            await self._fields.open(session, tenant, column, conversation_id, sealed)
        )
        return opened

    async def save(
        self, session: AsyncSession, tenant: uuid.UUID, conversation: Conversation
    ) -> None:
        """Store the request's new messages (one statement), the placeholders made and what
        backs arguments."""
        rows = conversation.unsaved
        if rows:
            await session.execute(
                text(
                    "INSERT INTO ai_messages (tenant_id, conversation_id, seq, role, trust, "
                    "source, content) SELECT current_setting('app.tenant_id')::uuid, :id, * "
                    "FROM unnest(CAST(:seq AS integer[]), CAST(:role AS text[]), "
                    "CAST(:trust AS text[]), CAST(:source AS text[]), CAST(:content AS text[]))"
                ),
                {"id": conversation.id}
                | {name: [row[name] for row in rows] for name in SAVED_COLUMNS},
            )
            conversation.unsaved = []
        for column, state in (
            (CONVERSATION_TOKENS, conversation.masker.state()),
            (CONVERSATION_PROVENANCE, conversation.provenance.state()),
        ):
            if not any(state.values()):
                continue
            sealed = await self._fields.seal(
                session, tenant, column, conversation.id, json.dumps(state).encode()
            )
            await session.execute(
                text(
                    f"UPDATE ai_conversations SET {column.column} = :sealed "  # noqa: S608  # nosec B608 # a declared column
                    "WHERE tenant_id = :tenant AND id = :id"
                ).bindparams(column.param("sealed")),
                {"sealed": sealed, "tenant": tenant, "id": conversation.id},
            )


async def people_names(session: AsyncSession) -> frozenset[str]:
    """The display names of the session's tenant's people, masked like any personal data."""
    rows = await session.scalars(
        text(
            "SELECT display_name FROM users "
            "WHERE tenant_id = current_setting('app.tenant_id')::uuid LIMIT 10000"
        )
    )
    return frozenset(name.strip() for name in rows if name and name.strip())
