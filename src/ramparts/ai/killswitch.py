"""The kill-switch: global, per tenant, or per tool, held by an operator (the CLI) or by a
tenant admin, each of whom lifts only their own. Read by every process at most a second ago,
set in one place (`set_switch`), which audits it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ramparts.ai.refusals import GatewayRefusedError
from ramparts.ai.tenant_reads import TenantRead
from ramparts.audit.events import Action, Actor, Decision, Resource
from ramparts.audit.services import AuditLog
from ramparts.problems import ProblemType

__all__ = ["KILLSWITCH_MAX_AGE", "KillSwitch", "OperatorScope", "set_switch", "switches"]

#: A kill-switch takes effect within a second: each process reads it at most this long ago.
KILLSWITCH_MAX_AGE = 0.5


async def _stopped_tools(session: AsyncSession) -> frozenset[str]:
    return frozenset(await session.scalar(text("SELECT ramparts_ai_stopped_tools()")) or ())


class KillSwitch:
    """The kill-switch as this process sees it: read from the database at most `max_age`
    seconds ago for each tenant, so a switch thrown anywhere stops every process within a
    second, without a query on every request."""

    def __init__(self, max_age: float = KILLSWITCH_MAX_AGE) -> None:
        self._stopped = TenantRead(_stopped_tools, max_age)

    async def stopped(self, session: AsyncSession, tenant: uuid.UUID) -> frozenset[str]:
        """The tools stopped for `tenant`; refuses when the whole assistant is off."""
        stopped = await self._stopped.get(session, tenant)
        if "" in stopped:
            raise GatewayRefusedError(503, ProblemType.AI_DISABLED, "the assistant is switched off")
        return stopped


async def switches(session: AsyncSession) -> dict[str, list[str]]:
    """The engaged switches covering the session's tenant ('' = the whole assistant), each
    with who holds it: `operator` (the CLI, not the tenant's to lift) and/or `tenant`."""
    rows = await session.execute(text("SELECT tool, origin FROM ramparts_ai_switches()"))
    held: dict[str, list[str]] = {}
    for tool, origin in rows:
        held.setdefault(tool, []).append(origin)
    return {tool: sorted(origins) for tool, origins in held.items()}


@dataclass(frozen=True)
class OperatorScope:
    """An operator's switch, over `tenant` (None: every tenant). Only the owner role may set
    one, and no tenant admin can lift it."""

    tenant: uuid.UUID | None


async def set_switch(
    session: AsyncSession,
    audit: AuditLog,
    actor: Actor,
    *,
    engaged: bool,
    tool: str = "",
    reason: str = "",
    operator: OperatorScope | None = None,
) -> None:
    """Engage or lift a switch over `tool` ('' = the whole assistant), set by `actor`, and
    audit it, in the session's transaction. Without `operator`: the session's tenant's own
    switch, through `ramparts_ai_switch` (the runtime role has no privilege on the table)."""
    reason = reason[:500]
    if operator is None:
        await session.execute(
            text("SELECT ramparts_ai_switch(:tool, :engaged, :reason, :actor)"),
            {"tool": tool, "engaged": engaged, "reason": reason, "actor": actor.id},
        )
    else:
        await session.execute(
            text(
                "INSERT INTO ai_killswitch "
                "(scope_tenant, tool, origin, engaged, reason, set_by) "
                "VALUES (:tenant, :tool, 'operator', :engaged, :reason, :actor) "
                "ON CONFLICT (COALESCE(scope_tenant, "
                "'00000000-0000-0000-0000-000000000000'::uuid), tool, origin) DO UPDATE SET "
                "engaged = excluded.engaged, reason = excluded.reason, "
                "set_by = excluded.set_by, set_at = now()"
            ),
            {
                "tenant": operator.tenant,
                "tool": tool,
                "engaged": engaged,
                "reason": reason,
                "actor": actor.id,
            },
        )
    await audit.record(
        session,
        actor,
        Action.KILLSWITCH_SET,
        Resource("assistant", tool or "*"),
        Decision.ALLOW,
        {"engaged": engaged, "reason": reason},
    )
